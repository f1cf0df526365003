"""Tests of the EDVR network: state-dict layout, the per-frame/per-window split,
arbitrary frame sizes and the DCN offset/mask layout. Tiny networks, CPU only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from seeded import seed_weights
from vsedvr.nets import EDVR, pad_to_multiple
from vsedvr.nets.blocks import DCNPack

KEYS_FILE = Path(__file__).parent / "data" / "basicsr_keys.json"

_L = dict(num_feat=128, num_reconstruct_block=40)
VARIANTS: dict[str, dict[str, Any]] = {
    "edvrm": {},
    "edvrm_wotsa": dict(with_tsa=False),
    "edvrl": _L,
    "edvrl_wotsa": dict(_L, with_tsa=False),
    "vimeo7": dict(_L, num_frame=7),
    "srblur": dict(_L, with_predeblur=True),
    "deblur": dict(_L, with_predeblur=True, hr_in=True),
}

TINY = dict(num_feat=16, deformable_groups=2, num_extract_block=1, num_reconstruct_block=2)
TINY_CONFIGS = {
    "tsa": {},
    "wotsa": dict(with_tsa=False),
    "7frames": dict(num_frame=7),
    "7frames_wotsa_off_centre": dict(num_frame=7, with_tsa=False, center_frame_idx=1),
    "predeblur": dict(with_predeblur=True),
    "predeblur_hr_in": dict(with_predeblur=True, hr_in=True),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _tiny(**overrides: Any) -> EDVR:
    """A tiny EDVR with seeded random weights, O(1) outputs and DCN offsets of ~1 px."""
    return seed_weights(EDVR(**{**TINY, **overrides}))


def _frames(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_matches_basicsr_layout(variant: str) -> None:
    expected = json.loads(KEYS_FILE.read_text())[variant]
    state = EDVR(**VARIANTS[variant]).state_dict()
    assert [[key, list(tensor.shape)] for key, tensor in state.items()] == expected


def _attributes(network: EDVR) -> tuple[int, int, int, int]:
    return network.scale, network.num_frames, network.center, network.size_multiple


def test_attributes() -> None:
    assert _attributes(EDVR(**TINY)) == (4, 5, 2, 4)
    assert _attributes(EDVR(**TINY, num_frame=7, with_predeblur=True, hr_in=True)) == (1, 7, 3, 16)
    assert EDVR(**TINY, num_frame=7, center_frame_idx=1).center == 1


@pytest.mark.parametrize("kwargs", [dict(deformable_groups=3), dict(num_out_ch=1),
                                    dict(center_frame_idx=5), dict(center_frame_idx=-1)])
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EDVR(**{**TINY, **kwargs})


# --------------------------------------------------------------------------- split

# forward() batches the T frames through frame_features(); in float32 a different batch
# size can change the convolution algorithm and with it the rounding (~1e-6 relative), so
# the split is checked in float64, where only the arithmetic can differ.

@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("config", list(TINY_CONFIGS))
def test_frame_features_and_restore_window_equal_forward(config: str, batch: int) -> None:
    network = _tiny(**TINY_CONFIGS[config]).double()
    side = network.size_multiple
    x = _frames(batch, network.num_frames, 3, 2 * side, 3 * side, dtype=torch.float64)
    with torch.no_grad():
        expected = network(x)
        features = [network.frame_features(x[:, i]) for i in range(network.num_frames)]
        got = network.restore_window(features, x[:, network.center])
    scale = network.scale
    assert got.shape == (batch, 3, scale * 2 * side, scale * 3 * side)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_frame_features_shapes() -> None:
    network = _tiny(with_predeblur=True, hr_in=True)
    with torch.no_grad():
        l1, l2, l3 = network.frame_features(_frames(1, 3, 32, 48))
    assert (l1.shape, l2.shape, l3.shape) == ((1, 16, 8, 12), (1, 16, 4, 6), (1, 16, 2, 3))


def test_split_rejects_bad_input() -> None:
    network = _tiny()
    with pytest.raises(ValueError, match="multiple of 4"):
        network.frame_features(_frames(1, 3, 8, 10))
    features = network.frame_features(_frames(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expected 5"):
        network.restore_window([features] * 4, _frames(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        network(_frames(1, 4, 3, 8, 8))


# --------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("config", ["tsa", "predeblur_hr_in"])
@pytest.mark.parametrize("height, width", [(13, 10), (1, 1), (3, 5), (2, 17)])
def test_any_size_gives_scaled_output(config: str, height: int, width: int) -> None:
    network = _tiny(**TINY_CONFIGS[config])
    x = _frames(1, 5, 3, height, width)
    with torch.no_grad():
        out = network(x)
        padded_out = network(pad_to_multiple(x, network.size_multiple))
    scale = network.scale
    assert out.shape == (1, 3, scale * height, scale * width)
    assert torch.isfinite(out).all()
    # The output is the padded input's output, cropped.
    torch.testing.assert_close(out, padded_out[..., : scale * height, : scale * width],
                               rtol=0, atol=1e-6)


def test_multiple_size_is_not_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    network = _tiny().double()
    x = _frames(1, 5, 3, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        features = [network.frame_features(x[:, i]) for i in range(5)]
        expected = network.restore_window(features, x[:, 2])

        def no_padding(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("padded an input that needs no padding")

        monkeypatch.setattr(F, "pad", no_padding)
        got = network(x)
    assert pad_to_multiple(x, 4) is x
    assert got.shape == (1, 3, 32, 48)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_pad_to_multiple_reflects() -> None:
    x = torch.arange(15.0).reshape(1, 1, 1, 3, 5)  # (..., H=3, W=5): pads 1 row, 3 columns
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 1, 4, 8)
    torch.testing.assert_close(padded[..., :3, :5], x)
    torch.testing.assert_close(padded[..., 3, :5], x[..., 1, :])  # mirrored about the last row
    torch.testing.assert_close(padded[..., :3, 5:], x[..., [3, 2, 1]])


def test_pad_to_multiple_replicates_tiny_frames() -> None:
    x = torch.arange(6.0).reshape(2, 3, 1)  # H=3, W=1: a 3-column pad cannot reflect
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (2, 4, 4)
    torch.testing.assert_close(padded[:, :3], x.expand(2, 3, 4))
    torch.testing.assert_close(padded[:, 3], padded[:, 2])


# --------------------------------------------------------------------------- DCN layout

def _integer_shift_deform_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                               dy: torch.Tensor, dx: torch.Tensor,
                               keep: torch.Tensor) -> torch.Tensor:
    """Modulated deformable 3x3 conv for integer offsets, written as shifted plain convs.

    Tap (i, j) of deformable group g reads input pixel (y - 1 + i + dy[g, k], x - 1 + j
    + dx[g, k]) (zero outside), times ``keep[g, k]``, where k = 3 i + j.
    """
    n, channels, height, width = x.shape
    groups = dy.shape[0]
    per_group = channels // groups
    margin = 4
    padded = F.pad(x, (margin,) * 4)
    out = bias.view(1, -1, 1, 1).expand(n, -1, height, width).clone()
    for g in range(groups):
        group = slice(g * per_group, (g + 1) * per_group)
        for k in range(9):
            i, j = divmod(k, 3)
            top = margin - 1 + i + int(dy[g, k])
            left = margin - 1 + j + int(dx[g, k])
            sample = padded[:, group, top : top + height, left : left + width] * keep[g, k]
            out += torch.einsum("oc,nchw->nohw", weight[:, group, i, j], sample)
    return out


def test_dcn_pack_offset_and_mask_layout() -> None:
    groups, channels = 2, 4
    pack = DCNPack(channels, groups).double()
    generator = torch.Generator().manual_seed(2)
    dy = torch.randint(-2, 3, (groups, 9), generator=generator)
    dx = torch.randint(-2, 3, (groups, 9), generator=generator)
    keep = torch.randint(0, 2, (groups, 9), generator=generator)
    with torch.no_grad():
        pack.weight.normal_(generator=generator)
        pack.bias.normal_(generator=generator)
        # Constant offsets and masks: zero weights, everything in the bias.
        pack.conv_offset.weight.zero_()
        offsets = torch.stack([dy, dx], dim=-1).reshape(-1)  # channel 18 g + 2 k (+1 for dx)
        mask_logits = (keep.reshape(-1) * 2 - 1) * 40.0  # channel 18 G + 9 g + k
        pack.conv_offset.bias.copy_(torch.cat([offsets.double(), mask_logits.double()]))
    x = torch.rand(1, channels, 6, 7, dtype=torch.float64, generator=generator)

    with torch.no_grad():
        got = pack(x, torch.zeros_like(x))
        expected = _integer_shift_deform_conv(x, pack.weight, pack.bias, dy, dx, keep)
        # The offsets chosen tell the layouts apart: Δx/Δy swapped would fail.
        swapped = _integer_shift_deform_conv(x, pack.weight, pack.bias, dx, dy, keep)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    assert (swapped - expected).abs().max() > 0.1


def test_dcn_pack_single_row_shift() -> None:
    """Δy = +1 on every tap equals a plain conv of the image one row further down."""
    pack = DCNPack(4, 2)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        pack.weight.normal_(generator=generator)
        pack.conv_offset.weight.zero_()
        bias = torch.zeros(3 * 2 * 9)
        bias[0 : 2 * 2 * 9 : 2] = 1.0  # even offset channels are Δy
        bias[2 * 2 * 9 :] = 40.0  # mask = sigmoid(40) = 1
        pack.conv_offset.bias.copy_(bias)
        x = torch.rand(1, 4, 5, 6, generator=generator)
        got = pack(x, x)
        # Output row y reads rows y .. y + 2: pad 0 rows on top, 2 at the bottom.
        expected = F.conv2d(F.pad(x, (1, 1, 0, 2)), pack.weight, pack.bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- half precision

def test_bf16_network_computes_its_offsets_in_float32() -> None:
    """Under bf16 (precision="bf16") the offset convolutions stay float32: bf16 held a 30 px offset to
    0.125 px. With offsets of about 20 px the output's largest error against fp32 falls to about half
    (0.047 -> 0.025 here); the features themselves stay bf16."""
    import copy

    net = seed_weights(EDVR(num_feat=16, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1),
                       offset_bias_std=20.0)
    frames = torch.rand(1, 5, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    offset_types: set[torch.dtype] = set()
    with torch.inference_mode():
        reference = net(frames)
        coarse = (copy.deepcopy(net).to(torch.bfloat16)(frames.bfloat16()) - reference).abs().max()
        fine_net = copy.deepcopy(net).to(torch.bfloat16).offsets_in_float32()
        for module in fine_net.modules():
            if isinstance(module, DCNPack):
                module.conv_offset.register_forward_hook(lambda m, args, out: offset_types.add(out.dtype))
        fine = (fine_net(frames.bfloat16()) - reference).abs().max()
    assert offset_types == {torch.float32}
    assert fine_net.conv_first.weight.dtype == torch.bfloat16
    assert float(fine) < 0.7 * float(coarse), (float(fine), float(coarse))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_network_is_close_to_fp32(dtype: torch.dtype) -> None:
    """precision="fp16"/"bf16" convert the whole network; the DCNs compute in float32 (see
    test_deform's half-precision test), the rest stays in half, and the result (the residual plus the
    bilinear base of the centre frame) is float32."""
    network = _tiny()
    frames = _frames(1, 5, 3, 16, 20)
    with torch.inference_mode():
        reference = network(frames)
        half = network.to(dtype)(frames.to(dtype))
    assert half.dtype == torch.float32
    error = (half - reference).abs()
    scale = reference.abs().max()
    # bf16 keeps 8 bits of mantissa, fp16 11: a few steps of either, relative to the output's range
    assert float(error.max()) < (0.05 if dtype == torch.bfloat16 else 0.01) * float(scale), float(error.max())
    assert float(error.mean()) > 0  # it did compute in half
