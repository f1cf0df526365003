"""The table of known EDVR checkpoints.

Two families of official weights exist:

* **mmediting / mmagic** (``layout="mmedit"``): four REDS x4 SR models hosted on
  ``download.openmmlab.com``; :func:`vsedvr.zoo.fetch` downloads them.
* **BasicSR** (``layout="basicsr"``): the EDVR authors' own models, converted by
  BasicSR and published on Google Drive only. They are never downloaded
  automatically: get them with BasicSR's ``python scripts/download_pretrained_models.py EDVR``
  or from the Drive links in :attr:`ModelSpec.source`, then put the file into
  :func:`vsedvr.zoo.cache_dir` under its original name (the hash in the name is checked).

A spec with ``bundled=True`` names a file shipped inside the installed package
(``vsedvr/models/<filename>``, resolved with :mod:`importlib.resources`). One such file exists:
``edvr_demo``, a small EDVR the project trains itself (``tools/train_demo_model.py``) so that the demo
and the tests restore for real without a download. It is not an official model.

REDS4 figures are the official tables' PSNR/SSIM (RGB channels, no border crop):
mmediting ``configs/edvr/README.md`` / ``metafile.yml`` for the mmedit files,
BasicSR ``docs/ModelZoo.md`` (EDVR section) for the BasicSR files. ``None`` where no
official table gives a REDS4 figure for that file.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "BUNDLED_PACKAGE",
    "DEFAULT_MODEL",
    "MMEDIT_BASE_URL",
    "MODELS",
    "ModelSpec",
    "did_you_mean",
    "hash_prefix_from_filename",
]

#: Base URL of mmediting's released checkpoints (``$VSEDVR_BASE_URL`` replaces it at fetch time).
MMEDIT_BASE_URL = "https://download.openmmlab.com/mmediting/"

#: Package whose folder holds checkpoints shipped with vsedvr (``bundled=True``).
BUNDLED_PACKAGE = "vsedvr.models"

#: BasicSR's Google Drive folder of official pre-trained models (``docs/ModelZoo.md``).
BASICSR_DRIVE_FOLDER = "https://drive.google.com/drive/folders/15DgDtfaLASQ3iAPJEVHQF49g9msexECG"

TASKS = ("sr", "deblur")
LAYOUTS = ("mmedit", "basicsr")
PADDINGS = ("reflection_circle", "replicate", "reflection", "circle")

# torch.hub's rule: first "-<hex>." in the file name (docs/edvr-reference.md#checkpoint-files).
_HASH_RE = re.compile(r"-([a-f0-9]*)\.")


def hash_prefix_from_filename(filename: str) -> str | None:
    """Return the SHA-256 prefix embedded in *filename* (torch.hub rule), or ``None``."""
    m = _HASH_RE.search(filename)
    return m.group(1) if m and m.group(1) else None


@dataclass(frozen=True)
class ModelSpec:
    """One known checkpoint.

    :param name: zoo name (``MODELS`` key).
    :param task: ``"sr"`` or ``"deblur"``.
    :param scale: output size / input size (4, or 1 for the deblur models).
    :param num_frames: temporal window T; the restored frame is ``num_frames // 2``.
    :param arch: keyword arguments for ``vsedvr.nets.EDVR`` (read-only mapping).
    :param filename: file name on disk (and in the URL); carries the SHA-256 prefix.
    :param url: full download URL, or ``None`` when the file must be placed by hand.
    :param layout: state-dict layout of the file, ``"mmedit"`` or ``"basicsr"``.
    :param source: where the file comes from / how to get it (used in error messages).
    :param description: one line for listings.
    :param reds4_psnr: official REDS4 PSNR (dB, RGB), if published.
    :param reds4_ssim: official REDS4 SSIM (RGB), if published.
    :param padding: temporal padding at clip edges used by the reference test config.
    :param bundled: the file ships inside the ``vsedvr.models`` package instead of the cache.
    :param sha256: expected SHA-256 (prefix); derived from *filename* when empty.
    """

    name: str
    task: str
    scale: int
    num_frames: int
    arch: Mapping[str, Any] = field(hash=False)
    filename: str
    url: str | None = None
    layout: str = "basicsr"
    source: str = ""
    description: str = ""
    reds4_psnr: float | None = None
    reds4_ssim: float | None = None
    padding: str = "reflection_circle"
    bundled: bool = False
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ModelSpec {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"ModelSpec {self.name!r}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"ModelSpec {self.name!r}: padding must be one of {PADDINGS}, got {self.padding!r}")
        if "/" in self.filename or "\\" in self.filename or self.filename in ("", ".", ".."):
            raise ValueError(f"ModelSpec {self.name!r}: filename must be a plain file name, got {self.filename!r}")
        sha = (self.sha256 or hash_prefix_from_filename(self.filename) or "").lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", sha):
            raise ValueError(
                f"ModelSpec {self.name!r}: no SHA-256 prefix (>= 8 hex digits) given and none in "
                f"file name {self.filename!r} (expected '<name>-<sha256 prefix>.pth')"
            )
        object.__setattr__(self, "sha256", sha)
        object.__setattr__(self, "arch", MappingProxyType(dict(self.arch)))
        if self.arch.get("num_frame", self.num_frames) != self.num_frames:
            raise ValueError(f"ModelSpec {self.name!r}: arch num_frame != num_frames")
        if bool(self.arch.get("hr_in", False)) != (self.scale == 1):
            raise ValueError(f"ModelSpec {self.name!r}: scale {self.scale} does not match hr_in")

    @property
    def center(self) -> int:
        """Index of the restored frame inside the window."""
        c = self.arch.get("center_frame_idx")
        return self.num_frames // 2 if c is None else int(c)

    def arch_kwargs(self) -> dict[str, Any]:
        """A fresh ``dict`` of EDVR constructor kwargs."""
        return dict(self.arch)


def _arch(
    num_feat: int,
    num_frame: int,
    num_reconstruct_block: int,
    *,
    with_tsa: bool = True,
    with_predeblur: bool = False,
    hr_in: bool = False,
) -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": num_feat,
        "num_frame": num_frame,
        "deformable_groups": 8,
        "num_extract_block": 5,
        "num_reconstruct_block": num_reconstruct_block,
        "center_frame_idx": num_frame // 2,
        "hr_in": hr_in,
        "with_predeblur": with_predeblur,
        "with_tsa": with_tsa,
    }


_M = _arch(64, 5, 10)
_M_WOTSA = _arch(64, 5, 10, with_tsa=False)
_L = _arch(128, 5, 40)
_L_WOTSA = _arch(128, 5, 40, with_tsa=False)
_L_VIMEO = _arch(128, 7, 40)
_L_SRBLUR = _arch(128, 5, 40, with_predeblur=True)
_L_DEBLUR = _arch(128, 5, 40, with_predeblur=True, hr_in=True)
#: edvr_demo: 32 channels, 2 extraction + 5 reconstruction blocks (tools/train_demo_model.py ARCH).
_DEMO = _arch(32, 5, 5) | {"num_extract_block": 2}


def _mmedit(name: str, file: str, arch: dict[str, Any], psnr: float, ssim: float, desc: str) -> ModelSpec:
    url = f"{MMEDIT_BASE_URL}restorers/edvr/{file}"
    return ModelSpec(
        name=name,
        task="sr",
        scale=4,
        num_frames=arch["num_frame"],
        arch=arch,
        filename=file,
        url=url,
        layout="mmedit",
        source=f"mmediting (mmagic) model zoo, configs/edvr: {url}",
        description=desc,
        reds4_psnr=psnr,
        reds4_ssim=ssim,
        padding="reflection_circle",
    )


def _basicsr(
    name: str,
    file: str,
    drive_id: str,
    arch: dict[str, Any],
    desc: str,
    *,
    psnr: float | None = None,
    ssim: float | None = None,
    padding: str = "reflection_circle",
) -> ModelSpec:
    deblur = arch["hr_in"]
    return ModelSpec(
        name=name,
        task="deblur" if deblur else "sr",
        scale=1 if deblur else 4,
        num_frames=arch["num_frame"],
        arch=arch,
        filename=file,
        url=None,
        layout="basicsr",
        source=(
            "BasicSR official EDVR model, published on Google Drive only (no direct URL): "
            f"https://drive.google.com/file/d/{drive_id}/view (folder {BASICSR_DRIVE_FOLDER}); "
            "BasicSR's `python scripts/download_pretrained_models.py EDVR` downloads all EDVR "
            "files into experiments/pretrained_models/EDVR/"
        ),
        description=desc,
        reds4_psnr=psnr,
        reds4_ssim=ssim,
        padding=padding,
    )


_ENTRIES = (
    _mmedit("edvrm_wotsa", "edvrm_wotsa_x4_8x4_600k_reds_20200522-0570e567.pth", _M_WOTSA,
            30.3430, 0.8664, "EDVR-M without TSA, x4 SR, REDS (mmediting)"),
    _mmedit("edvrm", "edvrm_x4_8x4_600k_reds_20210625-e29b71b5.pth", _M,
            30.4194, 0.8684, "EDVR-M, x4 SR, REDS (mmediting)"),
    _mmedit("edvrl_wotsa", "edvrl_wotsa_c128b40_8x8_lr2e-4_600k_reds4_20211228-d895a769.pth", _L_WOTSA,
            31.0010, 0.8784, "EDVR-L without TSA, x4 SR, REDS (mmediting)"),
    _mmedit("edvrl", "edvrl_c128b40_8x8_lr2e-4_600k_reds4_20220104-4509865f.pth", _L,
            31.0467, 0.8793, "EDVR-L, x4 SR, REDS (mmediting)"),
    _basicsr("basicsr_edvrm", "EDVR_M_x4_SR_REDS_official-32075921.pth",
             "1dd6aFj-5w2v08VJTq5mS9OFsD-wALYD6", _M,
             "EDVR-M, x4 SR, REDS (official, BasicSR)", psnr=30.53, ssim=0.8699),
    _basicsr("basicsr_edvrm_wotsa", "EDVR_M_woTSA_x4_SR_REDS_official-1edf645c.pth",
             "1C_WdN-NyNj-P7SOB5xIVuHl4EBOwd-Ny", _M_WOTSA,
             "EDVR-M without TSA, x4 SR, REDS (official, BasicSR)"),
    _basicsr("basicsr_edvrl", "EDVR_L_x4_SR_REDS_official-9f5f5039.pth",
             "127KXEjlCwfoPC1aXyDkluNwr9elwyHNb", _L,
             "EDVR-L, x4 SR, REDS (official, BasicSR)", psnr=31.09, ssim=0.8800),
    _basicsr("basicsr_edvrl_vimeo", "EDVR_L_x4_SR_Vimeo90K_official-162b54e4.pth",
             "1aVR3lkX6ItCphNLcT7F5bbbC484h4Qqy", _L_VIMEO,
             "EDVR-L, 7 frames, x4 SR, Vimeo-90K (official, BasicSR)"),
    _basicsr("basicsr_edvrl_srblur", "EDVR_L_x4_SRblur_REDS_official-983d7b8e.pth",
             "1GZz_87ybR8eAAY3X2HWwI3L6ny7-5Yvl", _L_SRBLUR,
             "EDVR-L with pre-deblur, x4 SR of blurred input, REDS (official, BasicSR)",
             psnr=28.88, ssim=0.8361, padding="replicate"),
    _basicsr("basicsr_edvrl_deblur", "EDVR_L_deblur_REDS_official-ca46bd8c.pth",
             "1_ma2tgHscZtkIY2tEJkVdU-UP8bnqBRE", _L_DEBLUR,
             "EDVR-L, deblurring (x1), REDS (official, BasicSR)",
             psnr=34.80, ssim=0.9487, padding="replicate"),
    _basicsr("basicsr_edvrl_deblurcomp", "EDVR_L_deblurcomp_REDS_official-0e988e5c.pth",
             "1fEoSeLFnHSBbIs95Au2W197p8e4ws4DW", _L_DEBLUR,
             "EDVR-L, deblurring of compressed video (x1), REDS (official, BasicSR)",
             psnr=30.24, ssim=0.8567, padding="replicate"),
    ModelSpec(
        name="edvr_demo",
        task="sr",
        scale=4,
        num_frames=5,
        arch=_DEMO,
        filename="edvr_demo-b7ed1f9d.pth",
        url=None,
        layout="mmedit",
        source="bundled with vsedvr (models/), trained by the project's tools/train_demo_model.py",
        description="small demo EDVR (32 channels, TSA), x4 SR, trained by tools/train_demo_model.py on "
                    "synthetic moving scenes (bundled pictures, shapes, gratings, text, noise); "
                    "NOT comparable to the official models",
        padding="reflection_circle",
        bundled=True,
    ),
)

#: Known checkpoints by name.
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _ENTRIES}


#: The model ``Restore(clip)`` uses when no ``model`` is given.
DEFAULT_MODEL = "edvrm"
assert DEFAULT_MODEL in MODELS


def did_you_mean(name: str) -> str:
    """`` Did you mean "edvr_demo"?`` for a misspelt zoo name (case, ``-`` for ``_``, typos), else ""."""
    by_key = {key.lower(): key for key in MODELS}
    typed = name.strip().lower().replace("-", "_")
    close = difflib.get_close_matches(typed, by_key, n=2, cutoff=0.75)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f'"{by_key[c]}"' for c in close) + "?"
