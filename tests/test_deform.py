"""The fast modulated deformable conv (vsedvr.nets.deform) against torchvision's deform_conv2d.

Tolerances: float32 outputs are O(1) here and must agree to 1e-5; float64 to 1e-10. Only the
order of the final sums may differ, so the real differences are ~1e-7 and ~1e-15.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from torchvision.ops import deform_conv2d

from seeded import seed_weights
from vsedvr.nets import EDVR
from vsedvr.nets import deform
from vsedvr.nets.blocks import DCNPack
from vsedvr.nets.deform import deform_conv3x3, fast_path, modulated_deform_conv3x3, use_fast_path

ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _inputs(n: int, c: int, h: int, w: int, groups: int, scale: float, dtype: torch.dtype = torch.float32,
            seed: int = 0, c_out: int | None = None) -> dict[str, Any]:
    """Random x, offsets of ~``scale`` px, mask in (0, 1), weights giving O(1) outputs."""
    g = torch.Generator().manual_seed(seed)
    c_out = c if c_out is None else c_out
    return dict(
        x=torch.randn(n, c, h, w, generator=g, dtype=dtype),
        offset=torch.randn(n, 18 * groups, h, w, generator=g, dtype=dtype) * scale,
        mask=torch.rand(n, 9 * groups, h, w, generator=g, dtype=dtype),
        weight=torch.randn(c_out, c, 3, 3, generator=g, dtype=dtype) / (c * 9) ** 0.5,
        bias=torch.randn(c_out, generator=g, dtype=dtype),
        deformable_groups=groups,
    )


def _reference(a: dict[str, Any]) -> torch.Tensor:
    return deform_conv2d(a["x"], a["offset"], a["weight"], a["bias"], padding=1, mask=a["mask"])


def _fast(a: dict[str, Any], **kwargs: Any) -> torch.Tensor:
    with torch.inference_mode():
        return modulated_deform_conv3x3(a["x"], a["offset"], a["mask"], a["weight"], a["bias"],
                                        a["deformable_groups"], **kwargs)


def _assert_matches(a: dict[str, Any], **kwargs: Any) -> torch.Tensor:
    expected = _reference(a)
    got = _fast(a, **kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL[a["x"].dtype])
    return expected


SHAPES = [  # (N, C, H, W, G)
    (2, 4, 1, 1, 2),
    (2, 6, 3, 5, 3),
    (3, 8, 7, 13, 4),
    (1, 16, 7, 13, 1),
    (2, 16, 12, 10, 8),
    (1, 64, 9, 11, 8),  # EDVR-M's channels and groups
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("scale", [0.5, 3.0, 40.0], ids=["small", "medium", "mostly-outside"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_offsets_match_torchvision(shape: tuple[int, ...], scale: float, dtype: torch.dtype) -> None:
    a = _inputs(*shape, scale=scale, dtype=dtype)
    expected = _assert_matches(a)
    assert 0.3 < expected.abs().max() < 30  # outputs of order 1: the tolerance is meaningful


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_integer_offsets_match_torchvision(dtype: torch.dtype) -> None:
    a = _inputs(2, 8, 7, 13, 2, scale=0, dtype=dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    a["offset"] = torch.randint(-4, 5, a["offset"].shape, generator=g).to(dtype)
    _assert_matches(a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_positions_on_and_around_the_border(dtype: torch.dtype) -> None:
    """Sample positions exactly at -1, 0, H - 1, H and a hair inside and outside of each."""
    n, c, h, w, groups = 1, 4, 5, 6, 2
    a = _inputs(n, c, h, w, groups, scale=0, dtype=dtype, seed=3)
    eps = torch.finfo(dtype).eps * 4

    def specials(size: int) -> list[float]:
        edges = [-1.0, 0.0, size - 1.0, float(size)]
        return sorted({e + d for e in edges for d in (-eps, 0.0, eps, -0.5, 0.5)} | {-1.5, size + 0.5})

    g = torch.Generator().manual_seed(4)
    ys, xs = torch.tensor(specials(h), dtype=dtype), torch.tensor(specials(w), dtype=dtype)
    target_y = ys[torch.randint(len(ys), (n, groups, 9, h, w), generator=g)]
    target_x = xs[torch.randint(len(xs), (n, groups, 9, h, w), generator=g)]
    tap = torch.arange(9)
    base_y = (torch.arange(h).view(h, 1) - 1 + (tap // 3).view(9, 1, 1)).to(dtype)  # (9, h, 1)
    base_x = (torch.arange(w).view(1, w) - 1 + (tap % 3).view(9, 1, 1)).to(dtype)  # (9, 1, w)
    a["offset"] = torch.stack([target_y - base_y, target_x - base_x], dim=3).reshape(n, 18 * groups, h, w)
    _assert_matches(a)


def test_huge_and_infinite_offsets_read_zero_like_torchvision() -> None:
    a = _inputs(1, 4, 5, 6, 2, scale=1.0, seed=5)
    a["offset"][0, 0, 1, 1] = float("inf")
    a["offset"][0, 3, 2, 2] = -float("inf")
    a["offset"][0, 5, 3, 3] = 1e20
    a["offset"][0, 20, 4, 4] = -3e9
    _assert_matches(a)


def test_nan_offsets_do_not_crash() -> None:
    a = _inputs(1, 4, 5, 6, 2, scale=1.0, seed=6)
    a["offset"][0, 7, 0, 0] = float("nan")
    out = _fast(a)
    assert out.shape == (1, 4, 5, 6)
    assert out[0, :, 0, 0].isnan().all() and not out[0, :, 1:].isnan().any()


def test_without_mask_and_bias() -> None:
    a = _inputs(2, 6, 7, 9, 3, scale=2.0, seed=7)
    expected = deform_conv2d(a["x"], a["offset"], a["weight"], None, padding=1)
    with torch.no_grad():
        got = modulated_deform_conv3x3(a["x"], a["offset"], None, a["weight"], None, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_other_output_channel_count() -> None:
    _assert_matches(_inputs(2, 8, 6, 7, 2, scale=2.0, seed=8, c_out=5))


@pytest.mark.parametrize("chunk_elements", [1, 3 * 8 * 9 * 13, 10**9], ids=["row", "3rows", "whole"])
def test_bands_do_not_change_the_result(chunk_elements: int) -> None:
    a = _inputs(2, 8, 11, 13, 4, scale=3.0, dtype=torch.float64, seed=9)
    _assert_matches(a, chunk_elements=chunk_elements)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_the_same_result_and_are_restored(threads: int) -> None:
    a = _inputs(1, 16, 24, 20, 8, scale=3.0, seed=10)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _fast(a, chunk_elements=16 * 9 * 20 * 2)  # 12 bands
        torch.set_num_threads(threads)
        got = _fast(a, chunk_elements=16 * 9 * 20 * 2)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, single)


def test_concurrent_calls_from_several_threads() -> None:
    """As VapourSynth calls it: worker threads, inference mode, overlapping calls."""
    cases = [_inputs(1, 8, 10 + i, 12, 2, scale=2.0, seed=20 + i) for i in range(4)]
    expected = [_reference(a) for a in cases]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    before = torch.get_num_threads()

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = _fast(cases[i], chunk_elements=8 * 9 * 12)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert torch.get_num_threads() == before
    for i, e in enumerate(expected):
        torch.testing.assert_close(results[i], e, rtol=0, atol=1e-5)


def test_wrong_shapes_are_rejected() -> None:
    a = _inputs(1, 8, 5, 6, 2, scale=1.0)
    with pytest.raises(ValueError, match="deformable_groups"):
        modulated_deform_conv3x3(a["x"], a["offset"], a["mask"], a["weight"], a["bias"], 3)
    with pytest.raises(ValueError, match="offset"):
        modulated_deform_conv3x3(a["x"], a["offset"][:, :-1], a["mask"], a["weight"], a["bias"], 2)
    with pytest.raises(ValueError, match="mask"):
        modulated_deform_conv3x3(a["x"], a["offset"], a["mask"][:, :-1], a["weight"], a["bias"], 2)
    with pytest.raises(ValueError, match="weight"):
        modulated_deform_conv3x3(a["x"], a["offset"], a["mask"], a["weight"][:, :-1], a["bias"], 2)


# --------------------------------------------------------------------------- dispatch

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("grad", [False, True], ids=["fast", "torchvision"])
def test_half_input_samples_in_float32_far_from_the_origin(dtype: torch.dtype, grad: bool) -> None:
    """Half input computes in float32 and is rounded once at the end: torchvision's own fp16 kernel
    computes sampling positions in fp16, whose steps are 1 px from x = 1024 (errors ~0.2 there)."""
    a = _inputs(1, 8, 4, 1100, 2, 1.5, seed=3)
    half = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    widened = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in half.items()}
    with torch.set_grad_enabled(grad):
        out = deform_conv3x3(**half)
        expected = deform_conv3x3(**widened).to(dtype)
    assert out.dtype == dtype
    torch.testing.assert_close(out[..., 1024:], expected[..., 1024:], atol=0, rtol=0)


def test_fast_path_only_without_autograd() -> None:
    x = torch.zeros(1, 4, 3, 3)
    assert not use_fast_path(x)
    with torch.no_grad():
        assert use_fast_path(x)
        assert not use_fast_path(x.half())
        with fast_path(False):
            assert not use_fast_path(x)
        assert use_fast_path(x)
    with torch.inference_mode():
        assert use_fast_path(x)


def test_dispatch_under_grad_keeps_torchvision_and_its_gradients() -> None:
    a = _inputs(1, 4, 5, 6, 2, scale=1.0, seed=11)
    offset = a["offset"].clone().requires_grad_()
    out = deform_conv3x3(a["x"], offset, a["mask"], a["weight"], a["bias"], 2)
    out.sum().backward()
    assert offset.grad is not None and offset.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), _reference(a), rtol=0, atol=0)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = deform.modulated_deform_conv3x3

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(deform, "modulated_deform_conv3x3", counted)
    return calls


def test_dcn_pack_uses_the_fast_path_only_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    pack = DCNPack(8, 2)
    with torch.no_grad():
        pack.conv_offset.bias.normal_(0.0, 1.5, generator=torch.Generator().manual_seed(12))
    x = torch.rand(1, 8, 6, 7, generator=torch.Generator().manual_seed(13))
    trained = pack(x, x)  # grad mode: torchvision, differentiable
    trained.sum().backward()
    assert not calls and pack.conv_offset.weight.grad is not None
    with torch.no_grad():
        fast = pack(x, x)
    assert len(calls) == 1
    torch.testing.assert_close(fast, trained.detach(), rtol=0, atol=1e-5)


def _tiny_edvr(**overrides: Any) -> EDVR:
    """Tiny EDVR, seeded, with DCN offsets of a few pixels and O(1) outputs."""
    net = EDVR(**{**dict(num_feat=16, deformable_groups=2, num_extract_block=1, num_reconstruct_block=2),
                  **overrides})
    return seed_weights(net, offset_bias_std=2.0, offset_weight_std=0.02)


@pytest.mark.parametrize("overrides", [{}, dict(with_tsa=False, num_frame=3)], ids=["tsa", "wotsa-3frames"])
@pytest.mark.parametrize("size", [(16, 20), (13, 18)], ids=["16x20", "13x18-padded"])
def test_whole_edvr_fast_path_matches_torchvision_path(monkeypatch: pytest.MonkeyPatch,
                                                       overrides: dict[str, Any], size: tuple[int, int]) -> None:
    net = _tiny_edvr(**overrides)
    x = torch.rand(2, net.num_frames, 3, *size, generator=torch.Generator().manual_seed(1))
    calls = _counting(monkeypatch)
    with torch.inference_mode():
        with fast_path(False):
            expected = net(x)
        assert not calls
        got = net(x)
    assert len(calls) == 4 * net.num_frames  # 3 pyramid levels + cascade, every frame
    assert 0.3 < expected.abs().max() < 30
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Both float32 paths are as far from the float64 result as float32 rounding takes them.
    with torch.inference_mode(), fast_path(False):
        exact = net.double()(x.double())
    reference_error = (expected.double() - exact).abs().max()
    assert (got.double() - exact).abs().max() < 2 * reference_error + 1e-7


def test_whole_edvr_float64_split_forward() -> None:
    """frame_features / restore_window (the plugin's path) in float64: agreement to 1e-10."""
    net = _tiny_edvr().double()
    frames = torch.rand(5, 1, 3, 12, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        features = [net.frame_features(f) for f in frames]
        got = net.restore_window(features, frames[2])
        with fast_path(False):
            expected = net.restore_window(features, frames[2])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
