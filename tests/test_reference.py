"""Equality with the reference implementations: BasicSR 1.4.2 and mmedit 0.16.1.

Only the reference network files are fetched (``pip download --no-deps``, cached
under the pytest cache) and loaded; the framework modules they import are replaced
by small stand-ins. The tests skip, saying why, when the packages cannot be
downloaded.

BasicSR runs its own code throughout, its DCN included (its torchvision branch).
mmedit's DCN calls mmcv's compiled kernel, which is replaced here by
torchvision's ``deform_conv2d`` (the same offset/mask layout,
docs/edvr-reference.md#deformable-convolution), and mmcv's ``ConvModule`` by
conv + LeakyReLU: the mmedit comparison therefore checks mmedit's wiring and its
key names (through the mmedit -> BasicSR key rule), not mmcv's kernel.
"""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import tarfile
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from seeded import seed_weights
from vsedvr.nets import EDVR

BASICSR_FILES = ("basicsr/archs/arch_util.py", "basicsr/archs/edvr_arch.py")
MMEDIT_FILES = (
    "mmedit/models/common/sr_backbone_utils.py",
    "mmedit/models/common/upsample.py",
    "mmedit/models/backbones/sr_backbones/edvr_net.py",
)

_L = dict(num_feat=128, num_reconstruct_block=40)
# Our constructor arguments (BasicSR's names) and the input (N, T, C, H, W) per variant.
VARIANTS: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "edvrm": ({}, (1, 5, 3, 16, 16)),
    "edvrm_wotsa": (dict(with_tsa=False), (1, 5, 3, 16, 16)),
    "edvrl": (_L, (1, 5, 3, 16, 16)),
    "edvrl_wotsa": (dict(_L, with_tsa=False), (1, 5, 3, 16, 16)),
    "vimeo7": (dict(_L, num_frame=7, center_frame_idx=3), (1, 7, 3, 16, 16)),
    "srblur": (dict(_L, with_predeblur=True), (1, 5, 3, 16, 16)),
    "deblur": (dict(_L, with_predeblur=True, hr_in=True), (1, 5, 3, 32, 32)),
}
MMEDIT_VARIANTS = ("edvrm", "edvrm_wotsa", "edvrl", "edvrl_wotsa", "vimeo7")
TOLERANCE = 1e-5

pytestmark = [pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


# --------------------------------------------------------------------------- fetching

def _cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("vsedvr-reference-sources"))
    return tmp_path_factory.mktemp("vsedvr-reference-sources")


def _download(requirement: str, dest: Path, pattern: str) -> Path:
    """Return the cached distribution file for ``requirement``, downloading it if needed."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(dest), requirement]
    # pip prepares an sdist's metadata; without build isolation that takes a second
    # instead of a minute, but needs setuptools in this environment: retry with it.
    for extra in (["--no-build-isolation"], []):
        if sorted(dest.glob(pattern)):
            break
        result = subprocess.run(command + extra, capture_output=True, text=True, timeout=300,
                                check=False)
    found = sorted(dest.glob(pattern))
    if not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"cannot download {requirement} for the reference comparison: {tail[0]}")
    return found[0]


def _extract(archive: Path, members: tuple[str, ...], dest: Path) -> Path:
    """Extract ``members`` (paths inside the package) below ``dest``; return ``dest``."""
    for member in members:
        target = dest / member
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as whl:
                data = whl.read(member)
        else:  # sdist: members live under "<name>-<version>/"
            with tarfile.open(archive) as sdist:
                root = sdist.getnames()[0].split("/")[0]
                fileobj = sdist.extractfile(f"{root}/{member}")
                assert fileobj is not None
                data = fileobj.read()
        target.write_bytes(data)
    return dest


# --------------------------------------------------------------------------- stand-ins

def _package(name: str, path: Path | None = None, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path else []
    module.__dict__.update(attrs)
    return module


def _load_source(patch: pytest.MonkeyPatch, name: str, path: Path) -> types.ModuleType:
    """Import the file at ``path`` as module ``name``; ``patch`` undoes the registration."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    patch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


class _Registry:
    """Stand-in for BasicSR's / mmcv's registries: the decorators return the class."""

    def register(self) -> Any:
        return lambda cls: cls

    def register_module(self) -> Any:
        return lambda cls: cls


def _root_logger(*args: Any, **kwargs: Any) -> logging.Logger:
    return logging.getLogger("reference")


class _DeformConvWeights(nn.Module):
    """Parameters and attributes of BasicSR's ModulatedDeformConv / mmcv's ModulatedDeformConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, deformable_groups: int = 1,
                 bias: bool = True, deform_groups: int | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.deformable_groups = self.deform_groups = deform_groups or deformable_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.uniform_(self.weight, -0.1, 0.1)


class _BasicSRModulatedDeformConvPack(_DeformConvWeights):
    """Stand-in for basicsr.ops.dcn.ModulatedDeformConvPack (DCNv2Pack's base class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conv_offset = nn.Conv2d(self.in_channels, self.deformable_groups * 3 * 9, 3,
                                     self.stride, self.padding)


def _basicsr_compiled_dcn(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("BasicSR took its compiled-DCN branch instead of torchvision's")


def _mmcv_modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                                  weight: torch.Tensor, bias: torch.Tensor, stride: int,
                                  padding: int, dilation: int, groups: int,
                                  deform_groups: int) -> torch.Tensor:
    """Stand-in for mmcv's compiled op: torchvision's, which uses the same layout."""
    assert groups == 1 and offset.shape[1] == 2 * deform_groups * weight[0, 0].numel()
    return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)


class _ConvModule(nn.Module):
    """Stand-in for mmcv.cnn.ConvModule without norm: conv (with bias), then activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, act_cfg: dict | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.activate = None
        if act_cfg is not None:
            assert act_cfg["type"] == "LeakyReLU"
            self.activate = nn.LeakyReLU(act_cfg["negative_slope"], inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.activate is None else self.activate(x)


def _kaiming_init(module: nn.Module, a: float = 0, mode: str = "fan_out",
                  nonlinearity: str = "relu", bias: float = 0, **_: Any) -> None:
    nn.init.kaiming_normal_(module.weight, a=a, mode=mode, nonlinearity=nonlinearity)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def _constant_init(module: nn.Module, val: float, bias: float = 0) -> None:
    nn.init.constant_(module.weight, val)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


class _LooseVersion:
    """Numeric-only stand-in for distutils' LooseVersion (used for torchvision >= 0.9.0)."""

    def __init__(self, text: str) -> None:
        self.key = tuple(int(p) for p in text.split("+")[0].split(".") if p.isdigit())

    def __ge__(self, other: _LooseVersion) -> bool:
        return self.key >= other.key


def _basicsr_stand_ins(root: Path) -> dict[str, types.ModuleType]:
    modules = {
        "basicsr": _package("basicsr", root / "basicsr"),
        "basicsr.archs": _package("basicsr.archs", root / "basicsr" / "archs"),
        "basicsr.utils": _package("basicsr.utils", get_root_logger=_root_logger),
        "basicsr.utils.registry": _package("basicsr.utils.registry", ARCH_REGISTRY=_Registry()),
        "basicsr.ops": _package("basicsr.ops"),
        "basicsr.ops.dcn": _package(
            "basicsr.ops.dcn",
            ModulatedDeformConvPack=_BasicSRModulatedDeformConvPack,
            modulated_deform_conv=_basicsr_compiled_dcn,
        ),
    }
    try:
        import distutils.version  # noqa: F401  (arch_util needs LooseVersion)
    except ImportError:  # Python >= 3.12 without setuptools' shim
        modules["distutils"] = _package("distutils")
        modules["distutils.version"] = _package("distutils.version", LooseVersion=_LooseVersion)
    return modules


def _mmedit_stand_ins(root: Path) -> dict[str, types.ModuleType]:
    mmcv_deform = dict(ModulatedDeformConv2d=_DeformConvWeights,
                       modulated_deform_conv2d=_mmcv_modulated_deform_conv2d)
    return {
        "mmcv": _package("mmcv"),
        "mmcv.cnn": _package("mmcv.cnn", ConvModule=_ConvModule, constant_init=_constant_init,
                             kaiming_init=_kaiming_init),
        "mmcv.ops": _package("mmcv.ops", **mmcv_deform),
        "mmcv.runner": _package("mmcv.runner", load_checkpoint=None),
        "mmcv.utils": _package("mmcv.utils"),
        "mmcv.utils.parrots_wrapper": _package("mmcv.utils.parrots_wrapper",
                                               _BatchNorm=nn.modules.batchnorm._BatchNorm),
        "mmedit": _package("mmedit", root / "mmedit"),
        "mmedit.models": _package("mmedit.models", root / "mmedit" / "models"),
        "mmedit.models.common": _package("mmedit.models.common",
                                         root / "mmedit" / "models" / "common"),
        "mmedit.models.registry": _package("mmedit.models.registry", BACKBONES=_Registry()),
        "mmedit.utils": _package("mmedit.utils", get_root_logger=_root_logger),
    }


@pytest.fixture(scope="module")
def references(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """Load BasicSR's edvr_arch and (if possible) mmedit's edvr_net; restore sys.modules after."""
    cache = _cache_dir(request, tmp_path_factory)
    basicsr_root = _extract(_download("basicsr==1.4.2", cache, "basicsr-1.4.2*"), BASICSR_FILES,
                            cache / "basicsr-src")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in sys.modules if n.split(".")[0] in ("basicsr", "mmcv", "mmedit")]:
            patch.delitem(sys.modules, name)
        for name, module in _basicsr_stand_ins(basicsr_root).items():
            patch.setitem(sys.modules, name, module)
        arch_util = _load_source(patch, "basicsr.archs.arch_util", basicsr_root / BASICSR_FILES[0])
        edvr_arch = _load_source(patch, "basicsr.archs.edvr_arch", basicsr_root / BASICSR_FILES[1])

        edvr_net = None
        mmedit_skip = ""
        try:
            mmedit_root = _extract(_download("mmedit==0.16.1", cache, "mmedit-0.16.1*"),
                                   MMEDIT_FILES, cache / "mmedit-src")
        except pytest.skip.Exception as skipped:
            mmedit_skip = str(skipped)
        else:
            for name, module in _mmedit_stand_ins(mmedit_root).items():
                patch.setitem(sys.modules, name, module)
            common = sys.modules["mmedit.models.common"]
            for member in MMEDIT_FILES:
                name = member.removesuffix(".py").replace("/", ".")
                module = _load_source(patch, name, mmedit_root / member)
                if name.startswith("mmedit.models.common."):  # re-exported by the package
                    common.__dict__.update(
                        {k: v for k, v in vars(module).items() if not k.startswith("_")})
            edvr_net = module  # the last file loaded
        yield types.SimpleNamespace(arch_util=arch_util, edvr_arch=edvr_arch,
                                    edvr_net=edvr_net, mmedit_skip=mmedit_skip)


# --------------------------------------------------------------------------- helpers

def _basicsr_network(edvr_arch: types.ModuleType, kwargs: dict[str, Any]) -> nn.Module:
    """BasicSR EDVR with seeded random weights that keep activations and outputs O(1)
    (BasicSR's own init makes the output almost the bilinear base and zeroes the DCN offsets):
    a residual of ~0.3-1.5 and offsets of ~1.2 px with varied masks, so every path matters."""
    return seed_weights(edvr_arch.EDVR(**kwargs))


def _mmedit_to_basicsr_key(key: str) -> str:
    """Drop every ``conv`` path component, then rename a few modules (docs/edvr-reference.md#state-dict-keys)."""
    key = ".".join(part for part in key.split(".") if part != "conv")
    renames = {"feat_l2_conv1": "conv_l2_1", "feat_l2_conv2": "conv_l2_2",
               "feat_l3_conv1": "conv_l3_1", "feat_l3_conv2": "conv_l3_2",
               "pcd_alignment": "pcd_align", "upsample1.upsample_conv": "upconv1",
               "upsample2.upsample_conv": "upconv2"}
    for old, new in renames.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key


def _input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- tests

def test_basicsr_dcn_takes_torchvision_branch(references: types.SimpleNamespace,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = torchvision.ops.deform_conv2d
    monkeypatch.setattr(torchvision.ops, "deform_conv2d",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    pack = references.arch_util.DCNv2Pack(8, 8, 3, padding=1, deformable_groups=2)
    pack(torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4))
    assert calls == [1]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_basicsr(references: types.SimpleNamespace, variant: str) -> None:
    kwargs, shape = VARIANTS[variant]
    reference = _basicsr_network(references.edvr_arch, kwargs)
    ours = EDVR(**kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = _input(shape)
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
    scale = 1 if kwargs.get("hr_in") else 4
    assert got.shape == (1, 3, scale * shape[-2], scale * shape[-1])
    # The network's own contribution must be substantial for the comparison to mean much.
    base = x[:, ours.center] if scale == 1 else torch.nn.functional.interpolate(
        x[:, ours.center], scale_factor=4, mode="bilinear", align_corners=False)
    assert (expected - base).abs().mean() > 0.2
    # float32 rounding relative to the outputs' size (these strong test weights reach ~1.5, not 1)
    assert (got - expected).abs().max().item() <= TOLERANCE * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("variant", MMEDIT_VARIANTS)
def test_matches_mmedit(references: types.SimpleNamespace, variant: str) -> None:
    if references.edvr_net is None:
        pytest.skip(references.mmedit_skip)
    kwargs, shape = VARIANTS[variant]
    weights = _basicsr_network(references.edvr_arch, kwargs).state_dict()
    mmedit = references.edvr_net.EDVRNet(
        3, 3,
        mid_channels=kwargs.get("num_feat", 64),
        num_frames=kwargs.get("num_frame", 5),
        num_blocks_reconstruction=kwargs.get("num_reconstruct_block", 10),
        center_frame_idx=kwargs.get("center_frame_idx", 2),
        with_tsa=kwargs.get("with_tsa", True),
    ).eval()
    ours = EDVR(**kwargs).eval()
    ours.load_state_dict(weights, strict=True)
    mmedit_keys = list(mmedit.state_dict())
    assert [_mmedit_to_basicsr_key(k) for k in mmedit_keys] == list(weights)
    mmedit.load_state_dict({k: weights[_mmedit_to_basicsr_key(k)] for k in mmedit_keys},
                           strict=True)
    x = _input(shape)
    with torch.no_grad():
        expected = mmedit(x)
        got = ours(x)
    # float32 rounding relative to the outputs' size (these strong test weights reach ~1.5, not 1)
    assert (got - expected).abs().max().item() <= TOLERANCE * max(1.0, expected.abs().max().item())
