"""Reading EDVR checkpoints (mmediting/mmagic or BasicSR) into BasicSR's key layout.

Accepted files (``torch.load(..., weights_only=True)``; legacy and zip formats):

* mmediting: ``{'meta': ..., 'state_dict': {'generator.<key>': tensor}}``. Keys are
  remapped to BasicSR names (docs/edvr-reference.md#state-dict-keys): ``generator.``
  stripped, every path component equal to ``conv`` (mmcv ConvModule) dropped, then
  ``feat_lN_convM -> conv_lN_M``, ``pcd_alignment -> pcd_align``,
  ``upsampleN.upsample_conv -> upconvN``.
* BasicSR: ``{'params': ..., ['params_ema': ...]}``. Like BasicSR's own test configs
  (no ``param_key_g``, so ``load_network(param_key='params')``), ``params`` is used;
  ``params_ema`` only when ``params`` is absent, or when asked for with ``param_key``.
* A bare state dict in either layout.

A leading ``module.`` (DataParallel) is stripped from every key.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import ModelError, ProgressCallback, fetch
from .registry import MODELS, ModelSpec, did_you_mean

if TYPE_CHECKING:
    from vsedvr.nets import EDVR
    import torch

__all__ = ["convert_mmedit_key", "infer_arch", "load_model", "read_state_dict"]

logger = logging.getLogger("vsedvr")

_EXPECTED = "an EDVR checkpoint (.pth) from mmediting/mmagic or BasicSR"

_MMEDIT_RENAMES = (
    ("feat_l2_conv1", "conv_l2_1"),
    ("feat_l2_conv2", "conv_l2_2"),
    ("feat_l3_conv1", "conv_l3_1"),
    ("feat_l3_conv2", "conv_l3_2"),
    ("pcd_alignment", "pcd_align"),
    ("upsample1.upsample_conv", "upconv1"),
    ("upsample2.upsample_conv", "upconv2"),
)
_MMEDIT_MARKERS = ("pcd_alignment.", "feat_l2_conv1.", "upsample1.upsample_conv.")


def convert_mmedit_key(key: str) -> str:
    """Map one mmediting EDVRNet key (with or without ``generator.``) to BasicSR's name."""
    if key.startswith("generator."):
        key = key[len("generator."):]
    key = ".".join(part for part in key.split(".") if part != "conv")
    for old, new in _MMEDIT_RENAMES:
        if key == old or key.startswith(old + "."):
            key = new + key[len(old):]
    return key


def _short(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > n else shown


def read_state_dict(
    path: str | os.PathLike[str], *, param_key: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a checkpoint file and return its tensors keyed by BasicSR's EDVR names.

    :param path: checkpoint file.
    :param param_key: for BasicSR files, which entry to read (default ``params``, falling
        back to ``params_ema``).
    :raises ModelError: the file is missing, is not a PyTorch checkpoint, or holds no state dict.
    """
    import torch  # here, not at module level: the CLI lists and fetches models without torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        # torch.load's own error for e.g. a text file is an IndexError from deep inside pickle
        raise ModelError(f"{path}: not a readable PyTorch checkpoint (neither the zip nor the legacy pickle "
                         f"format: the file starts with {head!r}); expected {_EXPECTED}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {detail[:300]}); "
            f"expected {_EXPECTED}"
        ) from e

    if not isinstance(obj, Mapping):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a dict; expected {_EXPECTED}")

    sd: Any
    if param_key is not None:
        if param_key not in obj:
            raise ModelError(f"{path}: no {param_key!r} entry (top-level keys: {_short([str(k) for k in obj])})")
        sd = obj[param_key]
    elif isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]  # mmediting / mmcv
    elif isinstance(obj.get("params"), Mapping):
        sd = obj["params"]  # BasicSR
    elif isinstance(obj.get("params_ema"), Mapping):
        sd = obj["params_ema"]
    else:
        sd = obj  # bare state dict

    if not isinstance(sd, Mapping) or not sd:
        raise ModelError(f"{path}: contains no state dict; expected {_EXPECTED}")
    bad = [str(k) for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ModelError(
            f"{path}: not a state dict (entries that are not tensors: {_short(bad)}); expected {_EXPECTED}"
        )

    out: dict[str, torch.Tensor] = {}
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd]
    tensors = list(sd.values())
    if any(k.startswith("generator.") for k in keys):
        dropped = [k for k in keys if not k.startswith("generator.")]
        if dropped:
            logger.debug("%s: ignoring non-generator entries %s", path, _short(dropped))
        pairs = [(convert_mmedit_key(k), t) for k, t in zip(keys, tensors) if k.startswith("generator.")]
    elif any(k.startswith(m) for k in keys for m in _MMEDIT_MARKERS):
        pairs = [(convert_mmedit_key(k), t) for k, t in zip(keys, tensors)]
    else:
        pairs = list(zip(keys, tensors))
    for k, t in pairs:
        if k in out:
            raise ModelError(f"{path}: duplicate key {k!r} after converting to BasicSR names")
        out[k] = t
    return out


_EXTRACT_RE = re.compile(r"^feature_extraction\.(\d+)\.")
_RECON_RE = re.compile(r"^reconstruction\.(\d+)\.")


def _count_blocks(keys: list[str], pattern: re.Pattern[str], what: str, where: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if idx != set(range(len(idx))):
        raise ModelError(f"{where}{what} block indices are not 0..n-1: {sorted(idx)}")
    return len(idx)


def infer_arch(state_dict: Mapping[str, torch.Tensor], *, source: str | None = None) -> dict[str, Any]:
    """Read EDVR constructor kwargs from the tensors of a BasicSR-layout state dict.

    The weights do not encode the restored frame's index; ``center_frame_idx`` is returned
    as ``num_frame // 2`` (what every official EDVR model uses).

    :param state_dict: output of :func:`read_state_dict`.
    :param source: name for error messages (e.g. the file path).
    :raises ModelError: the tensors do not describe an EDVR network.
    """
    where = f"{source}: " if source else ""

    def need(key: str) -> torch.Tensor:
        t = state_dict.get(key)
        if t is None:
            sample = _short(sorted(state_dict), 3)
            raise ModelError(
                f"{where}does not look like an EDVR network: no {key!r} tensor (has e.g. {sample}); "
                f"expected {_EXPECTED}"
            )
        return t

    with_predeblur = "predeblur.conv_first.weight" in state_dict
    first = need("predeblur.conv_first.weight" if with_predeblur else "conv_first.weight")
    if first.dim() != 4:
        raise ModelError(f"{where}first conv weight has shape {tuple(first.shape)}, expected 4-D")
    num_feat, num_in_ch = int(first.shape[0]), int(first.shape[1])
    num_out_ch = int(need("conv_last.weight").shape[0])
    with_tsa = "fusion.temporal_attn1.weight" in state_dict
    fusion = need("fusion.feat_fusion.weight" if with_tsa else "fusion.weight")
    if fusion.dim() != 4 or fusion.shape[1] % num_feat:
        raise ModelError(
            f"{where}fusion weight shape {tuple(fusion.shape)} is not (C, T*C, 1, 1) for C={num_feat}"
        )
    num_frame = int(fusion.shape[1]) // num_feat
    offset = need("pcd_align.dcn_pack.l1.conv_offset.weight")
    if offset.shape[0] % 27:
        raise ModelError(
            f"{where}deformable offset conv has {offset.shape[0]} outputs, not a multiple of 27 (3*3*3)"
        )
    need("pcd_align.cas_dcnpack.weight")
    keys = list(state_dict)
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_frame": num_frame,
        "deformable_groups": int(offset.shape[0]) // 27,
        "num_extract_block": _count_blocks(keys, _EXTRACT_RE, "feature_extraction", where),
        "num_reconstruct_block": _count_blocks(keys, _RECON_RE, "reconstruction", where),
        "center_frame_idx": num_frame // 2,
        "hr_in": "predeblur.stride_conv_hr1.weight" in state_dict,
        "with_predeblur": with_predeblur,
        "with_tsa": with_tsa,
    }


def _check_keys(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if mis_shaped:
        problems.append(f"mis-shaped keys (file vs model): {_short(mis_shaped)}")
    if problems:
        raise ModelError(f"{source}: weights do not fit the inferred EDVR network; " + "; ".join(problems))


def load_model(
    model: str | os.PathLike[str] | ModelSpec,
    device: str | torch.device = "cpu",
    *,
    progress: bool | ProgressCallback = True,
) -> EDVR:
    """Build an EDVR network with loaded weights, in eval mode, without gradients.

    :param model: a zoo name (see ``MODELS``; fetched / downloaded as needed), a
        :class:`ModelSpec`, or a path to a checkpoint file.
    :param device: where to put the network.
    :param progress: download progress: ``True`` (stderr), ``False`` or a callable, see :func:`fetch`.
    :raises ModelError: unknown name, unreadable or non-EDVR file, or weights that do not
        fit (the message lists the offending keys).
    """
    import torch

    from vsedvr.nets import EDVR

    spec: ModelSpec | None = None
    if isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, str) and model in MODELS:
        spec = MODELS[model]
    if spec is not None:
        path = fetch(spec, progress=progress)
    else:
        try:
            path = Path(model).expanduser()
            found = path.is_file()
            state = "is not a file" if path.exists() else "does not exist"
        except (OSError, RuntimeError, ValueError) as e:  # name too long, unknown "~user", ...
            raise ModelError(
                f"unknown model {os.fspath(model)!r}: not a zoo name and not a usable path "
                f"({type(e).__name__}: {e}). Zoo names: {', '.join(MODELS)}"
            ) from None
        if not found:
            raise ModelError(
                f"unknown model {os.fspath(model)!r}: not a zoo name and {path} {state}."
                f"{did_you_mean(os.fspath(model))} Zoo names: {', '.join(MODELS)}"
            )

    source = str(path)
    state_dict = read_state_dict(path)
    arch = infer_arch(state_dict, source=source)
    if spec is not None:
        diff = {k: (arch.get(k), v) for k, v in spec.arch.items()
                if k != "center_frame_idx" and arch.get(k) != v}
        if diff:
            raise ModelError(f"{source}: architecture read from the file differs from model {spec.name!r}: "
                             f"{diff} (file, expected)")
        arch["center_frame_idx"] = spec.center  # not visible in the weights
    device = torch.device(device)
    try:
        with device:  # build directly on the target device (skips a CPU init + copy)
            net = EDVR(**arch)
    except ValueError as e:
        raise ModelError(f"{source}: unsupported EDVR configuration {arch}: {e}") from e
    _check_keys(net, state_dict, source)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{source}: cannot load weights: {e}") from e
    net.eval()
    net.requires_grad_(False)
    return net
