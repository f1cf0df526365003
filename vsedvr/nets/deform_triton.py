"""Modulated deformable 3x3 convolution (DCNv2) in half precision for CUDA, written in Triton.

:func:`deform_conv3x3_triton` computes the function of
``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)``
(docs/edvr-reference.md#deformable-convolution) for float16 and bfloat16 tensors, without
upcasting them and without a column buffer in memory: one fused kernel (an implicit GEMM).

How. A program owns ``BLOCK_P`` output pixels of one image and all output channels (up to 128;
more are split over programs). The reduction runs over (deformable group, tap, channel of the
group), ``k_step / (C/G)`` (group, tap) pairs at a time (``k_step`` columns, 32 by default; C/G
rounded up to a power of two):

1. the offsets and the mask of those samples are read once, in their own type, and the sampling
   positions, the four bilinear weights and the frame test are computed in float32: the same
   operations as torchvision's float32 kernel (integer base + offset, floor, 1 - fraction), so a
   position near x = 4000 keeps its fraction to 2^-12 px, where a half-precision position has
   steps of 2 px;
2. the four corners of every sample are read for the group's channels (one 16-byte vector per
   corner: NCHW input is first copied to channels-last, see ``GATHER_CHANNELS_LAST``) and summed
   in float32 times the mask: a
   ``BLOCK_P x k_step`` tile of the im2col matrix, which exists only in registers;
3. that tile, rounded once to the input's type, goes into ``tl.dot`` with the matching rows of the
   weight (tensor cores, float32 accumulation).

The bias is added to the float32 accumulator and the sum rounded once to the output's type. The
difference from the float32 reference is that one rounding of the sampled values to half
precision before the product (2^-11 relative in float16, 2^-8 in bfloat16).

Why fused rather than half-precision columns plus a cuBLAS GEMM: the columns of one 540x960
EDVR-M call are 9 x 64 x 518,400 values (0.6 GB in fp16), written once and read once, against
about 0.36 GB for everything the fused kernel reads and writes; the GEMM itself (C_out = 64) is
too thin to profit from cuBLAS.

Layout rules, as in the reference: offset channel ``18 g + 2 k`` is the row shift and
``18 g + 2 k + 1`` the column shift of tap ``k = 3 i + j`` in deformable group ``g``, mask channel
``9 g + k``, input channels ``g C/G .. (g + 1) C/G - 1`` belong to group ``g``; a sample counts only
when -1 < y < H and -1 < x < W, and each corner outside the frame reads 0. Any strides are
accepted for ``x``; ``offset`` and ``mask`` are read in place when their rows and columns merge
into one pixel index (NCHW, channels-last, and the channel slice of the offset convolution's
output that the network passes), else copied; the output is channels-last when ``x`` is.
Launched on the current CUDA stream of ``x``'s device, as every Triton kernel. Not differentiable.
``bench/bench_dcn.py --compile-report`` shows what the compiler makes of it without a GPU.

This module imports Triton; :mod:`vsedvr.nets.deform` imports it only when Triton can run.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref

import torch
import triton
import triton.language as tl
from torch import Tensor

from .deform import _check

__all__ = ["DEFAULT_BLOCK_P", "DEFAULT_K_STEP", "GATHER_CHANNELS_LAST", "deform_conv3x3_triton", "fits_int32",
           "pack_weight"]

_TAPS = 9
_MAX_BLOCK_CO = 128
#: Output pixels per program.
DEFAULT_BLOCK_P = 64
#: Whether :func:`deform_conv3x3_triton` converts NCHW input to channels-last before gathering
#: (reasoned, not yet measured on a GPU: bench/bench_dcn.py times both).
GATHER_CHANNELS_LAST = True
#: Reduction columns per step (samples per step x padded channels per group); tl.dot needs >= 16.
DEFAULT_K_STEP = 32
_INT32_LIMIT = 2**31 - 1


@triton.jit
def _dcn3x3_kernel(
    x_ptr, off_ptr, mask_ptr, w_ptr, b_ptr, out_ptr,
    H, W, C_OUT,
    sxn, sxc, sxh, sxw,
    son, soc, sop,  # offset: image, channel, pixel (rows and columns merged: p = W y + x)
    smn, smc, smp,
    syn, syc, syp,
    SAMPLES: tl.constexpr,  # 9 G
    SAMPLES_PAD: tl.constexpr,  # a multiple of STEP
    CG: tl.constexpr,  # channels per deformable group
    CG_PAD: tl.constexpr,  # next power of two
    STEP: tl.constexpr,  # samples per reduction step
    BLOCK_P: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    CO_PAD: tl.constexpr,  # row length of the packed weight
    HAS_MASK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_FP32: tl.constexpr,  # the interpreter's bf16 tl.dot is wrong: multiply in float32 there
):
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    pid_co = tl.program_id(2)

    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < H * W
    oh = p // W
    ow = p % W
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < C_OUT

    x_base = x_ptr + n * sxn
    off_base = off_ptr + n * son + p[:, None] * sop  # (P, 1)
    mask_base = mask_ptr + n * smn + p[:, None] * smp
    t = tl.arange(0, STEP)
    c = tl.arange(0, CG_PAD)
    c_ok = c < CG
    ks = tl.arange(0, STEP * CG_PAD)

    acc = tl.zeros([BLOCK_P, BLOCK_CO], dtype=tl.float32)
    for s0 in range(0, SAMPLES_PAD, STEP):
        s = s0 + t  # (group, tap) pairs of this step: s = 9 g + k
        s_ok = s < SAMPLES
        g = s // 9
        k = s % 9
        ps = p_ok[:, None] & s_ok[None, :]  # (P, STEP)
        dy = tl.load(off_base + (2 * s)[None, :] * soc, mask=ps, other=0.0).to(tl.float32)
        dx = tl.load(off_base + (2 * s + 1)[None, :] * soc, mask=ps, other=0.0).to(tl.float32)
        # float32 positions: integer base + offset, as torchvision's float32 kernel
        y = (oh[:, None] - 1 + (k // 3)[None, :]).to(tl.float32) + dy
        x = (ow[:, None] - 1 + (k % 3)[None, :]).to(tl.float32) + dx
        # torchvision's test, written so that NaN passes it; a NaN position then gives NaN (as on
        # the CPU path; torchvision converts it to an integer index, undefined behaviour)
        inside = ~((y <= -1.0) | (y >= H) | (x <= -1.0) | (x >= W))
        finite = inside & (y == y) & (x == x) & ps
        ys = tl.where(finite, y, 0.0)
        xs = tl.where(finite, x, 0.0)
        y0f = tl.floor(ys)
        x0f = tl.floor(xs)
        ly = tl.where(finite, ys - y0f, y)  # NaN stays NaN
        lx = tl.where(finite, xs - x0f, x)
        hy = 1.0 - ly
        hx = 1.0 - lx
        y0 = y0f.to(tl.int32)
        x0 = x0f.to(tl.int32)
        if HAS_MASK:
            m = tl.load(mask_base + s[None, :] * smc, mask=ps, other=0.0).to(tl.float32)
        # corners: (P, STEP, CG_PAD)
        chan = (g[:, None] * CG + c[None, :]) * sxc  # (STEP, CG_PAD)
        if CG == CG_PAD:  # no channel mask: lets a channels-last corner load as one vector
            ld = finite[:, :, None]
        else:
            ld = finite[:, :, None] & c_ok[None, None, :]
        y0_ok = (y0 >= 0)[:, :, None]
        y1_ok = (y0 + 1 <= H - 1)[:, :, None]
        x0_ok = (x0 >= 0)[:, :, None]
        x1_ok = (x0 + 1 <= W - 1)[:, :, None]
        a00 = x_base + chan[None, :, :] + (y0 * sxh + x0 * sxw)[:, :, None]
        v00 = tl.load(a00, mask=ld & y0_ok & x0_ok, other=0.0).to(tl.float32)
        v01 = tl.load(a00 + sxw, mask=ld & y0_ok & x1_ok, other=0.0).to(tl.float32)
        v10 = tl.load(a00 + sxh, mask=ld & y1_ok & x0_ok, other=0.0).to(tl.float32)
        v11 = tl.load(a00 + sxh + sxw, mask=ld & y1_ok & x1_ok, other=0.0).to(tl.float32)
        w00 = (hy * hx)[:, :, None]
        w01 = (hy * lx)[:, :, None]
        w10 = (ly * hx)[:, :, None]
        w11 = (ly * lx)[:, :, None]
        val = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
        val = tl.where(inside[:, :, None], val, 0.0)
        if HAS_MASK:
            val = m[:, :, None] * val
        col = tl.reshape(val, [BLOCK_P, STEP * CG_PAD]).to(w_ptr.dtype.element_ty)
        wt = tl.load(w_ptr + (s0 * CG_PAD + ks)[:, None] * CO_PAD + co[None, :])
        if DOT_FP32:
            acc += tl.dot(col.to(tl.float32), wt.to(tl.float32))
        else:
            acc += tl.dot(col, wt)

    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + n * syn + co[None, :] * syc + p[:, None] * syp
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & co_ok[None, :])


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


class _Plan:
    """Block sizes of one (C, C_out, G) shape."""

    def __init__(self, c: int, c_out: int, groups: int, k_step: int) -> None:
        self.cg = c // groups
        self.cg_pad = _next_pow2(self.cg)
        self.step = max(1, _next_pow2(max(16, k_step)) // self.cg_pad)
        self.samples = _TAPS * groups
        self.samples_pad = -(-self.samples // self.step) * self.step
        self.block_co = max(16, min(_MAX_BLOCK_CO, _next_pow2(c_out)))
        self.co_pad = -(-c_out // self.block_co) * self.block_co


_packed_lock = threading.Lock()
_packed: dict[tuple[int, torch.dtype, int, int, int], tuple[weakref.ref, int, Tensor]] = {}


def pack_weight(weight: Tensor, groups: int, dtype: torch.dtype, k_step: int = DEFAULT_K_STEP) -> Tensor:
    """``weight`` (C_out, C, 3, 3) as the kernel reads it: one row per (group, tap, channel),
    ``(samples_pad * cg_pad, co_pad)`` in ``dtype``, zero in the padding rows and columns.

    Cached per weight tensor while its version is unchanged (one pack per network layer)."""
    c_out, c = weight.shape[:2]
    plan = _Plan(c, c_out, groups, k_step)
    key = (id(weight), dtype, plan.cg_pad, plan.samples_pad, plan.co_pad)
    try:
        version = weight._version
    except RuntimeError:  # an inference tensor has no version counter: no caching
        version = None
    if version is not None:
        hit = _packed.get(key)
        if hit is not None and hit[0]() is weight and hit[1] == version:
            return hit[2]
    rows = (weight.detach().to(dtype).reshape(c_out, groups, plan.cg, _TAPS)
            .permute(1, 3, 2, 0).reshape(plan.samples, plan.cg, c_out))
    packed = weight.new_zeros((plan.samples_pad, plan.cg_pad, plan.co_pad), dtype=dtype)
    packed[:plan.samples, :plan.cg, :c_out] = rows
    packed = packed.view(plan.samples_pad * plan.cg_pad, plan.co_pad)
    if version is not None:
        with _packed_lock:
            for stale in [k for k, (ref, _, _) in _packed.items() if ref() is None]:
                del _packed[stale]
            _packed[key] = (weakref.ref(weight), version, packed)
    return packed


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _span(t: Tensor) -> int:
    """Largest element offset within one image of ``t`` (dims 1-3)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))


def _pixel_strides(t: Tensor) -> tuple[int, int, int] | None:
    """(image, channel, pixel) strides of a 4-d tensor whose rows and columns merge into one
    pixel index p = W y + x (NCHW and channels-last do), or None."""
    _, _, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h == 1 or sh == w * sw:
        return sn, sc, sw
    if w == 1:
        return sn, sc, sh
    return None


def fits_int32(x: Tensor, offset: Tensor, mask: Tensor | None) -> bool:
    """Whether every per-image index of the kernel fits in 32 bits (the image offset is 64-bit)."""
    tensors = [x, offset] + ([mask] if mask is not None else [])
    return max(_span(t) for t in tensors) < _INT32_LIMIT


def deform_conv3x3_triton(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
                          deformable_groups: int, *, out: Tensor | None = None,
                          gather_channels_last: bool = GATHER_CHANNELS_LAST, block_p: int = DEFAULT_BLOCK_P,
                          k_step: int = DEFAULT_K_STEP, num_warps: int = 4, num_stages: int = 2) -> Tensor:
    """Modulated deformable 3x3 convolution (stride 1, padding 1) of half-precision tensors.

    Args:
        x: Input (N, C, H, W), float16 or bfloat16, NCHW or channels-last (any strides).
        offset: (N, 18 G, H, W), any floating type and strides (copied first unless its rows and
            columns merge, as in NCHW and channels-last); see the module docstring.
        mask: (N, 9 G, H, W) or None (all ones).
        weight: (C_out, C, 3, 3); converted to ``x``'s type (cached per weight).
        bias: (C_out,) or None; added in float32.
        deformable_groups: G; must divide C.
        out: Where to write the result (N, C_out, H, W) in ``x``'s type, NCHW or channels-last;
            by default a new tensor, channels-last when ``x`` is.
        gather_channels_last: Convert an ``x`` that is not channels-last first (one copy), so that
            the corners of a sample load as one vector per corner instead of one value per channel.
        block_p, k_step, num_warps, num_stages: Tuning (``bench/bench_dcn.py`` compares them).

    Returns:
        (N, C_out, H, W) in ``x``'s type, channels-last when ``x`` is.

    Raises:
        ValueError: On inconsistent shapes, another dtype, or indices that do not fit in 32 bits.
    """
    _check(x, offset, mask, weight, bias, deformable_groups)
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be float16 or bfloat16, got {x.dtype}")
    if not fits_int32(x, offset, mask):
        raise ValueError(f"one image of shape {tuple(x.shape)} is too large for 32-bit indices")
    n, c, h, w = x.shape
    c_out = weight.shape[0]
    plan = _Plan(c, c_out, deformable_groups, k_step)
    packed = pack_weight(weight, deformable_groups, x.dtype, k_step)
    if out is None:
        out = torch.empty((n, c_out, h, w), device=x.device, dtype=x.dtype, memory_format=_memory_format(x))
    elif tuple(out.shape) != (n, c_out, h, w) or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be a {x.dtype} tensor of shape {(n, c_out, h, w)} on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    if _span(out) + 1 >= _INT32_LIMIT:
        raise ValueError(f"an output image of shape {tuple(out.shape[1:])} is too large for 32-bit indices")
    out_strides = _pixel_strides(out)
    if out_strides is None:
        raise ValueError(f"out must be NCHW or channels-last, got strides {out.stride()}")
    if out.numel() == 0:
        return out
    if gather_channels_last and _memory_format(x) != torch.channels_last and c > 1:
        x = x.contiguous(memory_format=torch.channels_last)
    if _pixel_strides(offset) is None:
        offset = offset.contiguous()
    if mask is not None and _pixel_strides(mask) is None:
        mask = mask.contiguous()
    mask_arg = mask if mask is not None else offset  # never read
    bias_arg = bias if bias is not None else packed  # never read
    grid = (triton.cdiv(h * w, block_p), n, plan.co_pad // plan.block_co)
    # Triton launches on the current device's current stream: make x's device current
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _launch(grid, x, offset, mask_arg, packed, bias_arg, out, out_strides, plan, mask is not None,
                bias is not None, block_p, num_warps, num_stages)
    return out


def _launch(grid: tuple[int, int, int], x: Tensor, offset: Tensor, mask_arg: Tensor, packed: Tensor,
            bias_arg: Tensor, out: Tensor, out_strides: tuple[int, int, int], plan: _Plan, has_mask: bool,
            has_bias: bool, block_p: int, num_warps: int, num_stages: int) -> None:
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    h, w = x.shape[2:]
    _dcn3x3_kernel[grid](
        x, offset, mask_arg, packed, bias_arg, out,
        h, w, out.shape[1],
        *x.stride(), *_pixel_strides(offset), *_pixel_strides(mask_arg), *out_strides,
        SAMPLES=plan.samples, SAMPLES_PAD=plan.samples_pad, CG=plan.cg, CG_PAD=plan.cg_pad, STEP=plan.step,
        BLOCK_P=block_p, BLOCK_CO=plan.block_co, CO_PAD=plan.co_pad,
        HAS_MASK=has_mask, HAS_BIAS=has_bias,
        DOT_FP32=interpreted and x.dtype == torch.bfloat16,
        num_warps=num_warps, num_stages=num_stages,
    )


# Opaque to torch.compile, like the CPU path's operator in .deform.
@torch.library.custom_op("vsedvr::deform_conv3x3_triton", mutates_args=())
def deform_conv3x3_triton_op(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                             bias: Tensor | None, deformable_groups: int) -> Tensor:
    return deform_conv3x3_triton(x, offset, mask, weight, bias, deformable_groups)


@deform_conv3x3_triton_op.register_fake
def _(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
      deformable_groups: int) -> Tensor:
    return torch.empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]), device=x.device, dtype=x.dtype,
                       memory_format=_memory_format(x))
