"""The Triton deformable convolution (vsedvr.nets.deform_triton) and the CUDA dispatch of
vsedvr.nets.deform.

On the CPU the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1``) in one child
process for all cases: the variable must be set before Triton is imported, and must not reach
this process, where other tests import Triton through torch.compile. The inputs are drawn here,
the child only runs the kernel into outputs poisoned with NaN, and the outputs are compared here
with torchvision's float64 result on the same (half-precision) inputs.

Tolerances, for outputs of order 1: the kernel rounds each sampled value once to the input type
before the product (relative 2^-12 in float16, 2^-9 in bfloat16) and the output once; the
relative error over a tensor is ~1e-4 in float16 and ~4e-3 in bfloat16 (limits 1e-3 and 1e-2),
one element's at most a few output rounding steps (limits 4e-3 and 3e-2). Positions computed in
half precision miss by up to 0.5 px beyond x = 1024 (errors of order 0.3 there), which the
"far" cases catch.

On a GPU (skipped without CUDA): the kernel against torchvision in float32 on the upcast inputs
(what vsedvr ran before) at EDVR-M's 540x960 shapes, the dispatch, and the order of torchvision's
kernel with the caller's stream.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.ops import deform_conv2d

from vsedvr.nets import deform
from vsedvr.nets.deform import deform_conv3x3, use_triton_path

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
REL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
ABS = {torch.float16: 4e-3, torch.bfloat16: 3e-2}

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="Triton is not installed (it comes with PyTorch's Linux wheels)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_tensor_cores = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                                        reason="needs an NVIDIA GPU of compute capability 8.0 or later")


def _inputs(n: int, c: int, h: int, w: int, groups: int, *, dtype: torch.dtype, scale: float, seed: int,
            c_out: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Random x, offsets of ~``scale`` px, mask in (0, 1), weights giving O(1) outputs, in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    c_out = c if c_out is None else c_out
    return dict(
        x=torch.randn(n, c, h, w, generator=g).to(device, dtype),
        offset=(torch.randn(n, 18 * groups, h, w, generator=g) * scale).to(device, dtype),
        mask=torch.rand(n, 9 * groups, h, w, generator=g).to(device, dtype),
        weight=(torch.randn(c_out, c, 3, 3, generator=g) / (c * 9) ** 0.5).to(device, dtype),
        bias=torch.randn(c_out, generator=g).to(device, dtype),
        deformable_groups=groups,
    )


def _border_offsets(a: dict[str, Any], seed: int) -> torch.Tensor:
    """Offsets that put every sample exactly at -1, 0, H - 1, H (and W), a half pixel around them,
    or beyond (tests/test_deform.py's border cases, at positions half precision holds exactly)."""
    n, _, h, w = a["x"].shape
    groups = a["deformable_groups"]

    def specials(size: int) -> list[float]:
        edges = [-1.0, 0.0, size - 1.0, float(size)]
        return sorted({e + d for e in edges for d in (-0.5, -0.25, 0.0, 0.25, 0.5)} | {-1.5, size + 0.5})

    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.tensor(specials(h)), torch.tensor(specials(w))
    target_y = ys[torch.randint(len(ys), (n, groups, 9, h, w), generator=g)]
    target_x = xs[torch.randint(len(xs), (n, groups, 9, h, w), generator=g)]
    tap = torch.arange(9)
    base_y = (torch.arange(h).view(h, 1) - 1 + (tap // 3).view(9, 1, 1)).float()
    base_x = (torch.arange(w).view(1, w) - 1 + (tap % 3).view(9, 1, 1)).float()
    offset = torch.stack([target_y - base_y, target_x - base_x], dim=3).reshape(n, 18 * groups, h, w)
    return offset.to(a["x"].dtype)


#: Block sizes of most cases: few programs and steps, as the interpreter's cost is per operation.
QUICK = dict(block_p=128, k_step=64)


def _cases() -> dict[str, dict[str, Any]]:
    """name: kernel arguments, and the block sizes under "tuning" (the defaults where absent)."""
    cases: dict[str, dict[str, Any]] = {}
    for tag, dtype in HALF.items():
        for i, (shape, scale) in enumerate([
            ((2, 4, 1, 1, 2), 0.5),  # one pixel, two channels per group
            ((2, 6, 3, 5, 3), 3.0),
            ((3, 8, 7, 13, 4), 3.0),
            ((1, 16, 7, 13, 1), 3.0),  # one group of 16 channels
            ((1, 12, 6, 9, 2), 2.0),  # 6 channels per group: padded to 8
            ((1, 64, 9, 11, 8), 3.0),  # EDVR-M's channels and groups
            ((1, 8, 6, 7, 2), 40.0),  # mostly outside the frame
        ]):
            case = _inputs(*shape, dtype=dtype, scale=scale, seed=10 * i + len(tag))
            if shape[1] != 64:  # EDVR-M's shape with the default block sizes
                case["tuning"] = QUICK
            cases[f"{tag}-{'x'.join(map(str, shape))}-{scale:g}px"] = case
        # sample positions beyond 1024, wide and tall: fractions that half precision cannot hold
        cases[f"{tag}-far-x"] = _inputs(1, 4, 2, 1040, 1, dtype=dtype, scale=1.5, seed=100)
        cases[f"{tag}-far-y"] = _inputs(1, 4, 1040, 2, 1, dtype=dtype, scale=1.5, seed=101)
        for axis in "xy":
            cases[f"{tag}-far-{axis}"]["tuning"] = dict(block_p=1024, k_step=64)
        border = _inputs(1, 4, 5, 6, 2, dtype=dtype, scale=0, seed=102)
        border["offset"] = _border_offsets(border, seed=103)
        cases[f"{tag}-border"] = border
        cases[f"{tag}-cout5"] = _inputs(2, 8, 6, 7, 2, dtype=dtype, scale=2.0, seed=104, c_out=5)
        cases[f"{tag}-cout130"] = _inputs(1, 8, 3, 4, 2, dtype=dtype, scale=2.0, seed=105, c_out=130)
        bare = _inputs(2, 6, 7, 9, 3, dtype=dtype, scale=2.0, seed=106)
        bare["mask"] = bare["bias"] = None
        cases[f"{tag}-no-mask-no-bias"] = bare
        # as the network passes them: channels-last x, offsets a channel slice of a larger tensor
        net = _inputs(1, 16, 9, 10, 2, dtype=dtype, scale=2.0, seed=107)
        net["x"] = net["x"].contiguous(memory_format=torch.channels_last)
        both = torch.cat([net["offset"], net["mask"]], dim=1)
        net["offset"], net["mask"] = both[:, :36], both[:, 36:]
        cases[f"{tag}-channels-last-sliced"] = net
        for name in (f"{tag}-border", f"{tag}-cout5", f"{tag}-cout130", f"{tag}-no-mask-no-bias"):
            cases[name]["tuning"] = QUICK
        # the input gathered as it is (NCHW) instead of converted to channels-last first
        nchw = _inputs(1, 64, 9, 11, 8, dtype=dtype, scale=3.0, seed=110)
        nchw["tuning"] = dict(QUICK, gather_channels_last=False)
        cases[f"{tag}-nchw-gather"] = nchw
        odd = _inputs(1, 12, 6, 9, 2, dtype=dtype, scale=40.0, seed=111)
        odd["tuning"] = dict(QUICK, gather_channels_last=False)
        cases[f"{tag}-nchw-gather-padded-outside"] = odd
    special = _inputs(1, 4, 5, 6, 2, dtype=torch.float16, scale=1.0, seed=108)
    special["offset"][0, 0, 1, 1] = float("inf")
    special["offset"][0, 3, 2, 2] = -float("inf")
    special["offset"][0, 5, 3, 3] = 6e4
    special["offset"][0, 20, 4, 4] = -6e4
    cases["fp16-inf-huge"] = special
    # offsets and mask in float32 with bfloat16 features (the direction of computing the offsets in
    # float32 under bf16): each tensor is read in its own type
    mixed = _inputs(1, 16, 7, 9, 2, dtype=torch.bfloat16, scale=2.5, seed=112)
    wide = _inputs(1, 16, 7, 9, 2, dtype=torch.float32, scale=2.5, seed=113)
    mixed["offset"], mixed["mask"], mixed["tuning"] = wide["offset"], wide["mask"], QUICK
    cases["bf16-fp32-offsets"] = mixed
    nan = _inputs(1, 4, 5, 6, 2, dtype=torch.float16, scale=1.0, seed=109)
    nan["offset"][0, 7, 0, 0] = float("nan")
    cases["fp16-nan"] = nan
    return cases


_RUNNER = """
import sys
import torch
from vsedvr.nets.deform_triton import deform_conv3x3_triton
assert "torchvision" not in sys.modules  # imported only where its kernel runs: 1.6 s of CPU saved
cases = torch.load(sys.argv[1])
outs = {}
for name, a in cases.items():
    x = a["x"]
    out = torch.full((x.shape[0], a["weight"].shape[0], *x.shape[2:]), float("nan"), dtype=x.dtype)
    if not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    outs[name] = deform_conv3x3_triton(a["x"], a["offset"], a["mask"], a["weight"], a["bias"],
                                       a["deformable_groups"], out=out, **a.get("tuning", {}))
    assert outs[name] is out
torch.save(outs, sys.argv[2])
"""

CASES = _cases()
#: bfloat16 runs the same code as float16 but for the type: the fast tier keeps EDVR-M's shape,
#: the far positions and the border in bfloat16, the full suite the rest.
SLOW = {name for name in CASES if name.startswith("bf16-") and not name.startswith(("bf16-1x64", "bf16-far-x",
                                                                                     "bf16-border", "bf16-nchw-gather-",
                                                                                     "bf16-fp32-offsets"))}
_slow = pytest.mark.slow(reason="bfloat16 variants of cases the fast tier runs in float16: "
                                "a second interpreter process, several seconds")


def _interpret(names: list[str], folder: Path) -> dict[str, torch.Tensor]:
    """The kernel's outputs for the cases ``names``, run by Triton's interpreter in a child process."""
    torch.save({name: CASES[name] for name in names}, folder / "cases.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(folder / "cases.pt"), str(folder / "outs.pt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(folder / "outs.pt")


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return _interpret([name for name in CASES if name not in SLOW], tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="module")
def interpreted_slow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return _interpret(sorted(SLOW), tmp_path_factory.mktemp("triton-slow"))


def _output(request: pytest.FixtureRequest, name: str) -> torch.Tensor:
    return request.getfixturevalue("interpreted_slow" if name in SLOW else "interpreted")[name]


def _reference(a: dict[str, Any]) -> torch.Tensor:
    """torchvision's float64 result on the same half-precision inputs."""
    wide = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items() if k != "tuning"}
    return deform_conv2d(wide["x"], wide["offset"], wide["weight"], wide["bias"], padding=1, mask=wide["mask"])


def _assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.dtype == dtype and got.shape == expected.shape
    finite = expected.isfinite()
    assert torch.equal(got.isfinite(), finite), "NaN or inf where the reference has none (or the reverse)"
    diff = (got.double() - expected)[finite]
    rel = (diff.norm() / expected[finite].norm()).item()
    assert rel < REL[dtype], f"relative error {rel:.2e}"
    assert diff.abs().max().item() < ABS[dtype] * max(1.0, expected[finite].abs().max().item() / 4)


@needs_triton
@pytest.mark.parametrize("name", [pytest.param(name, marks=[_slow] if name in SLOW else [])
                                  for name in CASES if name != "fp16-nan"])
def test_interpreted_kernel_matches_the_float64_reference(request: pytest.FixtureRequest, name: str) -> None:
    a = CASES[name]
    expected = _reference(a)
    got = _output(request, name)
    if name.endswith("channels-last-sliced"):
        assert got.is_contiguous(memory_format=torch.channels_last)
    _assert_close(got, expected, a["x"].dtype)
    if "border" not in name and "inf" not in name and expected.numel() > 16:
        assert 0.3 < expected.abs().max() < 30  # outputs of order 1: the tolerances are meaningful


@needs_triton
@pytest.mark.parametrize("case", ["fp16-far-x", "fp16-far-y", "bf16-far-x",
                                  pytest.param("bf16-far-y", marks=_slow)])
def test_positions_beyond_1024_keep_their_fraction(request: pytest.FixtureRequest, case: str) -> None:
    """Where half-precision positions would miss by up to 0.5 px, the output is as close as elsewhere."""
    a = CASES[case]
    far = (..., slice(1024, None)) if case.endswith("x") else (..., slice(1024, None), slice(None))
    expected = _reference(a)[far]
    assert expected.numel() >= 4 * 16 and expected.abs().max() > 0.3
    _assert_close(_output(request, case)[far], expected, a["x"].dtype)


@needs_triton
def test_nan_offsets_give_nan_at_their_pixel_only(interpreted: dict[str, torch.Tensor]) -> None:
    """As the CPU path: NaN in, NaN out at that pixel (torchvision's kernels index memory with the
    NaN converted to an integer, which crashes here: no reference)."""
    out = interpreted["fp16-nan"]
    assert out[0, :, 0, 0].isnan().all() and not out[0, :, 1:].isnan().any() and not out[0, :, 0, 1:].isnan().any()


# --------------------------------------------------------------------------- dispatch (any machine)

def test_no_triton_path_off_cuda() -> None:
    with torch.inference_mode():
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            assert not use_triton_path(torch.zeros(1, 4, 3, 3, dtype=dtype))
            assert not use_triton_path(torch.zeros(1, 4, 3, 3, dtype=dtype, device="meta"))


@needs_triton
@pytest.mark.parametrize("c, groups", [(6, 3), (12, 2)], ids=["cg2", "cg6-padded"])
def test_weight_packing_layout_and_cache(c: int, groups: int) -> None:
    from vsedvr.nets.deform_triton import pack_weight
    weight = torch.randn(5, c, 3, 3)
    packed = pack_weight(weight, groups, torch.float16)
    cg = c // groups
    cg_pad = 1 << (cg - 1).bit_length()
    rows = packed.view(-1, cg_pad, packed.shape[1])  # (sample 9 g + k, channel of the group, C_out)
    assert rows.shape[0] >= 9 * groups and packed.shape[1] >= 16 and packed.dtype == torch.float16
    expected = torch.zeros_like(rows)
    for g in range(groups):
        for k in range(9):
            expected[9 * g + k, :cg, :5] = weight[:, g * cg:(g + 1) * cg, k // 3, k % 3].t().half()
    assert torch.equal(rows, expected)
    assert pack_weight(weight, groups, torch.float16) is packed  # cached
    assert pack_weight(weight.clone(), groups, torch.float16) is not packed
    with torch.no_grad():
        weight[0, 0, 0, 0] = 100.0  # a new version: packed again
    assert pack_weight(weight, groups, torch.float16).max() == 100.0


@needs_triton
@pytest.mark.parametrize("error, raised", [(RuntimeError("PassManager::run failed"), False),
                                           (ValueError("bad shape"), True)], ids=["compile-error", "value-error"])
def test_dispatch_falls_back_to_torchvision_when_the_kernel_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                                                      error: Exception, raised: bool) -> None:
    """Where the Triton path applies (made to apply here on the CPU) and the kernel fails to
    compile: one warning naming the error, then the float32 path's result; a ValueError (bad
    arguments) is raised as it is."""
    from vsedvr.nets import deform_triton

    def broken(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise error

    monkeypatch.setattr(deform, "use_triton_path", lambda x: x.dtype == torch.float16)
    monkeypatch.setattr(deform_triton, "deform_conv3x3_triton", broken)
    monkeypatch.setattr(deform, "_triton_support", {})
    a = _inputs(1, 8, 5, 6, 2, dtype=torch.float16, scale=2.0, seed=12)
    with torch.inference_mode():
        if raised:
            with pytest.raises(ValueError, match="bad shape"):
                deform_conv3x3(**a)
            return
        with pytest.warns(RuntimeWarning, match="Triton deformable convolution does not run.*PassManager"):
            got = deform_conv3x3(**a)
        expected = deform_conv3x3(**{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in a.items()})
    assert torch.equal(got, expected.half())
    assert deform._triton_support == {(None, torch.float16): False}


@needs_triton
def test_dispatch_hands_the_kernel_half_precision_tensors_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """No float32 copies on the Triton path: the kernel gets the caller's tensors themselves."""
    from vsedvr.nets import deform_triton

    received: list[tuple[Any, ...]] = []

    def recorder(*args: Any, **kwargs: Any) -> torch.Tensor:
        received.append(args)
        return args[0].new_zeros(args[0].shape)

    monkeypatch.setattr(deform, "use_triton_path", lambda x: x.dtype == torch.bfloat16)
    monkeypatch.setattr(deform_triton, "deform_conv3x3_triton", recorder)
    a = _inputs(1, 8, 5, 6, 2, dtype=torch.bfloat16, scale=2.0, seed=13)
    with torch.inference_mode():
        deform_conv3x3(**a)
    assert len(received) == 1
    assert all(got is a[k] for got, k in zip(received[0], ("x", "offset", "mask", "weight", "bias")))


@needs_triton
def test_operators_for_torch_compile_have_shapes_without_running() -> None:
    """The opaque operators that torch.compile calls (the Triton kernel, torchvision on the default
    stream) give inductor the output's shape, type and layout from meta tensors."""
    from vsedvr.nets.deform_triton import deform_conv3x3_triton_op
    a = {k: v.to("meta") if isinstance(v, torch.Tensor) else v
         for k, v in _inputs(1, 8, 5, 6, 2, dtype=torch.float16, scale=1.0, seed=14, c_out=4).items()}
    for x in (a["x"], a["x"].contiguous(memory_format=torch.channels_last)):
        out = deform_conv3x3_triton_op(x, a["offset"], a["mask"], a["weight"], a["bias"], 2)
        assert out.shape == (1, 4, 5, 6) and out.dtype == torch.float16 and out.device.type == "meta"
        assert out.is_contiguous(memory_format=torch.channels_last) == (x.stride(1) == 1)
    out = deform._torchvision_on_cuda_op(a["x"].float(), a["offset"].float(), None, a["weight"].float(), None)
    assert out.shape == (1, 4, 5, 6) and out.dtype == torch.float32


# --------------------------------------------------------------------------- on a GPU

# EDVR-M's deformable convolutions at 540x960 input: L1 (and the cascade), L2, L3.
GPU_SHAPES = [(1, 64, 540, 960, 8), (1, 64, 270, 480, 8), (1, 64, 135, 240, 8)]


@needs_tensor_cores
@needs_triton
@pytest.mark.parametrize("tag", list(HALF))
@pytest.mark.parametrize("shape", GPU_SHAPES + [(1, 64, 1080, 1920, 8)], ids=lambda s: "x".join(map(str, s[2:4])))
def test_gpu_kernel_matches_torchvision_fp32(tag: str, shape: tuple[int, ...]) -> None:
    """The Triton kernel against torchvision in float32 on the same half-precision inputs (offsets of
    several pixels, sigmoid mask), NCHW and channels-last; 1080x1920 has positions beyond 1024."""
    from vsedvr.nets.deform_triton import deform_conv3x3_triton
    dtype = HALF[tag]
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    a = _inputs(*shape, dtype=dtype, scale=4.0, seed=7, device="cuda")
    a["mask"] = torch.sigmoid(a["mask"].float() * 8 - 4).to(dtype)
    wide = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    expected = deform_conv2d(wide["x"], wide["offset"], wide["weight"], wide["bias"], padding=1,
                             mask=wide["mask"]).double()
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = a["x"].contiguous(memory_format=memory_format)
        got = deform_conv3x3_triton(x, a["offset"], a["mask"], a["weight"], a["bias"], 8)
        torch.cuda.synchronize()
        _assert_close(got, expected, dtype)


@needs_tensor_cores
@needs_triton
def test_gpu_dispatch_half_to_triton_fp32_to_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, torch.dtype]] = []
    original = deform.deform_conv2d

    def recorded(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(("torchvision", x.dtype))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(deform, "deform_conv2d", recorded)
    for dtype in (torch.float16, torch.float32):
        a = _inputs(1, 16, 20, 24, 2, dtype=dtype, scale=2.0, seed=3, device="cuda")
        with torch.inference_mode():
            out = deform_conv3x3(**a)
        assert out.dtype == dtype
    assert calls == [("torchvision", torch.float32)]  # float16 never reached torchvision
    with torch.inference_mode(), deform.fast_path(False):
        deform_conv3x3(**_inputs(1, 16, 20, 24, 2, dtype=torch.float16, scale=2.0, seed=3, device="cuda"))
    assert calls[-1] == ("torchvision", torch.float32)  # upcast, as the reference path


@needs_tensor_cores
@needs_triton
def test_gpu_whole_edvr_fp16_with_the_triton_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """EDVR-M's layout (64 channels, 8 groups) in fp16 on CUDA: every DCN goes to the Triton
    kernel, and the frame is within fp16 rounding of the same network with the fp32 DCN."""
    from seeded import seed_weights
    from vsedvr.nets import EDVR
    from vsedvr.nets import deform_triton

    calls: list[int] = []
    original = deform_triton.deform_conv3x3_triton

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(deform_triton, "deform_conv3x3_triton", counted)
    net = seed_weights(EDVR(num_feat=64, deformable_groups=8, num_extract_block=2, num_reconstruct_block=2),
                       offset_bias_std=3.0, offset_weight_std=0.01).cuda().half()
    x = torch.rand(1, 5, 3, 96, 128, generator=torch.Generator().manual_seed(4)).cuda().half()
    with torch.inference_mode():
        got = net(x).float()
        assert len(calls) == 4 * 5
        with deform.fast_path(False):
            expected = net(x).float()
    assert len(calls) == 4 * 5
    mse = ((got - expected) ** 2).mean().item()
    assert mse < 1e-6 and (got - expected).abs().max() < 0.05, (mse, (got - expected).abs().max().item())


@needs_cuda
def test_gpu_torchvision_runs_on_the_default_stream_fenced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called from a side stream, torchvision's op runs with the default stream current (where old
    torchvision launches its im2col), and the caller's stream gets the right result with no sync."""
    seen: list[torch.cuda.Stream] = []
    original = deform.deform_conv2d

    def recorded(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.cuda.current_stream())
        return original(*args, **kwargs)

    monkeypatch.setattr(deform, "deform_conv2d", recorded)
    a = _inputs(1, 64, 540, 960, 8, dtype=torch.float32, scale=4.0, seed=5, device="cuda")
    expected = deform_conv2d(a["x"], a["offset"], a["weight"], a["bias"], padding=1, mask=a["mask"])
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(3):
            # queue work that the op's input depends on: a race reads x before it is written
            x = a["x"]
            for _ in range(20):
                x = (x * 1.0001).sub_(a["x"] * 0.0001)
            got = deform_conv3x3(x, a["offset"], a["mask"], a["weight"], a["bias"], 8)
            got = got.clone()  # on the side stream, right after the op
    torch.cuda.synchronize()
    assert seen and all(s == torch.cuda.default_stream() for s in seen)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    seen.clear()
    with torch.inference_mode():  # from the default stream itself: no switch, same result
        torch.testing.assert_close(deform_conv3x3(**a), expected, rtol=0, atol=0)
    assert seen == [torch.cuda.default_stream()]


@needs_triton
@pytest.mark.slow(reason="bench/bench_dcn.py's CUDA comparison through the interpreter: a process of ~30 s")
def test_bench_dcn_cuda_mode_runs_through_the_interpreter(tmp_path: Path) -> None:
    """The GPU steps of bench/bench_dcn.py, checked here at a tiny size: every variant times and the
    Triton ones agree with torchvision in float32."""
    import json
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_dcn.py"
    proc = subprocess.run([sys.executable, str(bench), "--device", "cpu", "--triton", "--size", "8x12", "--channels",
                           "16", "--repeats", "1", "--json", str(tmp_path / "dcn.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "per output frame (20 calls): triton fp16" in proc.stdout
    result = json.loads((tmp_path / "dcn.json").read_text())["dcn_triton"]
    assert set(result["levels"]) == {"L1", "L2", "L3"}
    for row in result["levels"].values():
        for name, entry in row["variants"].items():
            assert entry["median_ms"] > 0
            if name.startswith("triton"):
                assert entry["rel_error"] < REL[HALF[name.split()[1]]], (name, entry)


@needs_triton
@pytest.mark.slow(reason="compiles the kernel four times for sm_90 with Triton's compiler (no GPU needed): ~20 s")
def test_kernel_compiles_for_hopper_with_tensor_cores_and_no_spills(tmp_path: Path) -> None:
    """What the GPU will run, read without one: wgmma products, nothing spilled, and 16-byte copies
    of the corners when the input is channels-last (bench/bench_dcn.py --compile-report)."""
    import json
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_dcn.py"
    proc = subprocess.run([sys.executable, str(bench), "--compile-report", "90", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = json.loads((tmp_path / "r.json").read_text())
    assert len(reports) == 4
    for r in reports:
        assert any(i.startswith("wgmma.mma_async") for i in r["matrix_instructions"]), r
        assert r["spill_store_bytes"] in (0, None), r
        if r["channels_last"]:
            assert r["async_copies"].get("16 B", 0) >= 4, r
