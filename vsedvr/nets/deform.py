"""Fast modulated deformable 3x3 convolution (DCNv2) for inference on CPU, and the choice of
kernel per device and type (:func:`deform_conv3x3`; on CUDA half precision goes to the Triton
kernel of :mod:`vsedvr.nets.deform_triton`, the rest to torchvision, ordered with the current stream).

:func:`modulated_deform_conv3x3` computes the same function as
``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)`` for the
3x3 / stride 1 / padding 1 / dilation 1 convolutions of EDVR
(docs/edvr-reference.md#deformable-convolution), to float rounding: the sampling positions, their
integer parts and the bilinear fractions are the same floating-point operations as in
torchvision's kernel; only the order of the final sums differs.

How, per image and per band of output rows:

1. The input goes into a zero-padded, channels-last table with one row per (deformable group,
   padded pixel) holding that group's ``C / G`` channels.
2. Every sample (output pixel, group, tap) gets the table rows of its 4 bilinear corners and
   their weights (bilinear weight x mask). Out-of-image samples need no test: their position
   is clamped into the padding, whose rows are zero, which gives torchvision's rule (a sample
   counts only when -1 < y < H and -1 < x < W; corners outside the image read 0).
3. ``F.embedding_bag(mode="sum", per_sample_weights=...)`` gathers and weights the corners in
   one fused kernel. Its output, one row of ``G * 9 * C / G`` samples per output pixel, is the
   im2col matrix; one matrix product with the reordered weight finishes the band.

Threads. torchvision's kernel runs its sampling on one thread. Here the bands are spread over
a small pool of Python threads (as many as ``torch.get_num_threads()``), each band running
single-threaded: the pool's threads set their own OpenMP and MKL counts to 1, and the process's
thread count is never changed (:func:`_band_threads`; other filters keep their own rounding).
The alternative, OpenMP-parallel ops, means ~30 parallel regions per band; on a loaded machine each can wait for a preempted or spin-waiting worker. Measured on the
shared 2-core development machine while another process kept both cores busy (1 x 64 x 180 x
320, 8 groups, 2 threads): 0.25 s this way, 4.5 s with OpenMP-parallel ops (0.24 s with
``OMP_WAIT_POLICY=passive``), 0.8 s for torchvision.

Memory is bounded by ``chunk_elements`` per band and thread, whatever the frame size.
"""
from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .stable import stable_addmm

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "deform_conv3x3", "fast_path", "modulated_deform_conv3x3", "use_fast_path",
           "use_triton_path"]

_TAPS = 9
# Zero padding of the sampling table: 2 rows/columns before the image, 3 after. Positions are
# clamped to [-2, H + 1] x [-2, W + 1]; an out-of-image sample then has both corner rows (or
# both corner columns) in the padding, and the high corner of H + 1 is row H + 2, the last one.
_PAD_BEFORE = 2
_PAD_AFTER = 3

#: Default size of one band's column matrix, in elements (output pixels x C x 9): 8 MiB in
#: float32. About 3x as much again is held per band for corner rows, weights and temporaries.
DEFAULT_CHUNK_ELEMENTS = 1 << 21

_enabled = True


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """Enable or disable vsedvr's own kernels in :func:`deform_conv3x3` (process-wide) inside a
    ``with``: the CPU fast path and the Triton kernel on CUDA.

    ``with fast_path(False):`` makes every :class:`~vsedvr.nets.blocks.DCNPack` use
    torchvision's kernel, e.g. to compare against the reference.
    """
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


#: Inputs whose deformable convolutions compute in float32 where the Triton kernel does not run
#: (:func:`use_triton_path`; it computes positions in float32 itself). bfloat16: torchvision has no kernel for
#: it. float16: torchvision's kernels (CPU and CUDA) compute each sampling position in the input's
#: type, and half precision cannot hold the fraction of a large coordinate (steps of 0.25 px from
#: x = 256, 1 px from 1024), which is the alignment itself; bench/precision_error.py measures it.
_FP32_DTYPES = (torch.float16, torch.bfloat16)


def use_fast_path(x: Tensor) -> bool:
    """Whether :func:`deform_conv3x3` takes the fast path for input ``x``.

    Only when enabled (:func:`fast_path`), without autograd (``torch.no_grad`` or
    ``torch.inference_mode``: training keeps torchvision's differentiable op), and on CPU in
    float32/float64, the case it was written and measured for (on CUDA half precision has
    :func:`use_triton_path`).
    """
    return (_enabled and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64))


def use_triton_path(x: Tensor) -> bool:
    """Whether :func:`deform_conv3x3` takes the Triton kernel (:mod:`vsedvr.nets.deform_triton`)
    for input ``x``: enabled (:func:`fast_path`), without autograd, on an NVIDIA GPU of compute
    capability 8.0 or later (tensor cores for ``tl.dot`` in both types), float16 or bfloat16, where
    Triton imports. Elsewhere (no Triton: Windows without a Triton build; older GPUs; ROCm) half
    precision goes to torchvision in float32."""
    return (_enabled and not torch.is_grad_enabled() and x.device.type == "cuda" and x.dtype in _FP32_DTYPES
            and _triton_runs_on(x.device, x.dtype))


_triton_support: dict[tuple[int | None, torch.dtype], bool] = {}


def _triton_runs_on(device: torch.device, dtype: torch.dtype) -> bool:
    key = (device.index, dtype)
    if key not in _triton_support:
        try:
            from . import deform_triton  # noqa: F401 - imports Triton
        except ImportError:
            _triton_support[key] = False
        else:
            # Triton 3.6 emits tensor-core products from compute capability 8.0 (mma.sync; wgmma on
            # 9.0); for 7.x it falls back to FMA with register spills. ROCm: not tried.
            _triton_support[key] = not torch.version.hip and torch.cuda.get_device_capability(device)[0] >= 8
    return _triton_support[key]


def deform_conv3x3(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
                   deformable_groups: int) -> Tensor:
    """3x3 / stride 1 / pad 1 modulated deformable conv, by device and type:

    - CUDA, float16 / bfloat16 (:func:`use_triton_path`): the Triton kernel, in the input's type
      with float32 positions;
    - CPU, float32 / float64 (:func:`use_fast_path`): :func:`modulated_deform_conv3x3`;
    - otherwise ``torchvision.ops.deform_conv2d``, float16 and bfloat16 computed in float32 (see
      ``_FP32_DTYPES``) and returned in their own type; on CUDA ordered with the current stream
      (:func:`_torchvision_on_cuda`).

    Same arguments as :func:`modulated_deform_conv3x3`."""
    if use_triton_path(x):
        from .deform_triton import deform_conv3x3_triton, deform_conv3x3_triton_op, fits_int32
        if fits_int32(x, offset, mask):
            if torch.compiler.is_compiling():
                return deform_conv3x3_triton_op(x, offset, mask, weight, bias, deformable_groups)
            try:
                return deform_conv3x3_triton(x, offset, mask, weight, bias, deformable_groups)
            except (ValueError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - a Triton or GPU that cannot compile it: say so, fall back
                _triton_support[(x.device.index, x.dtype)] = False
                warnings.warn(f"vsedvr: the Triton deformable convolution does not run on {x.device} in {x.dtype} "
                              f"({type(e).__name__}: {str(e)[:300]}); torchvision's in float32 is used instead",
                              RuntimeWarning, stacklevel=2)
    if x.dtype in _FP32_DTYPES:
        up = [None if t is None else t.float() for t in (offset, mask, weight, bias)]
        return deform_conv3x3(x.float(), up[0], up[1], up[2], up[3], deformable_groups).to(x.dtype)
    if use_fast_path(x):
        if torch.compiler.is_compiling():
            return _modulated_deform_conv3x3_op(x, offset, mask, weight, bias, deformable_groups)
        return modulated_deform_conv3x3(x, offset, mask, weight, bias, deformable_groups)
    if x.device.type == "cuda":
        if torch.compiler.is_compiling() and not torch.is_grad_enabled():
            return _torchvision_on_cuda_op(x, offset, mask, weight, bias)
        return _torchvision_on_cuda(x, offset, mask, weight, bias)
    return deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)


# --------------------------------------------------------------------------- torchvision on CUDA
#
# torchvision up to 0.26 at least (pytorch/vision#9513, fixed by #9522 in July 2026) launches
# deform_conv2d's im2col kernel with <<<blocks, threads>>>, on the legacy default stream, while
# everything around it (the .contiguous() copies, the zero-filled column buffer, the GEMM, the
# bias add) runs on the current stream. The engine runs the network on a stream of its own, which
# PyTorch creates non-blocking: nothing orders the two, so im2col could read its input before it
# was written, and the GEMM read the columns before im2col wrote them. Here the whole op runs with
# the legacy default stream made current, so that all its kernels are on one stream, fenced both
# ways: the default stream waits for the caller's stream before, the caller's stream for the
# default stream after. The caching allocator: the inputs were allocated on the caller's stream
# and stay referenced until the op is queued; once freed, their blocks go to the caller's stream,
# whose later work is queued after the fence. The output was allocated on the default stream, so
# it is recorded on the caller's stream, which keeps its block from being handed out on the
# default stream before the caller's work on it has finished. Done on every torchvision: where the
# kernel already uses the current stream, the op just runs on the default stream, fenced; which
# release first has #9522 was not checked (0.29.1 has it).

def _torchvision_on_cuda(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                         bias: Tensor | None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` on the legacy default stream, ordered with the current one."""
    current = torch.cuda.current_stream(x.device)
    legacy = torch.cuda.default_stream(x.device)
    if current == legacy:
        return deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    legacy.wait_stream(current)
    with torch.cuda.stream(legacy):
        out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    current.wait_stream(legacy)
    out.record_stream(current)
    return out


# Opaque to torch.compile: inductor would call torchvision's kernel on the current stream itself.
@torch.library.custom_op("vsedvr::deform_conv2d_on_default_stream", mutates_args=())
def _torchvision_on_cuda_op(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                            bias: Tensor | None) -> Tensor:
    return _torchvision_on_cuda(x, offset, mask, weight, bias)


@_torchvision_on_cuda_op.register_fake
def _(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


def deform_conv2d(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, *, padding: int,
                  mask: Tensor | None) -> Tensor:
    """``torchvision.ops.deform_conv2d``, imported at the first call: importing torchvision takes
    about 1.6 s of CPU (it imports torch._dynamo), which the CPU and half-precision CUDA paths
    never need."""
    from torchvision.ops import deform_conv2d as torchvision_deform_conv2d
    return torchvision_deform_conv2d(x, offset, weight, bias, padding=padding, mask=mask)


def _check(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
           groups: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if groups < 1 or c % groups:
        raise ValueError(f"deformable_groups ({groups}) must divide the channel count ({c})")
    if tuple(offset.shape) != (n, 2 * _TAPS * groups, h, w):
        raise ValueError(f"offset must have shape {(n, 2 * _TAPS * groups, h, w)}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, _TAPS * groups, h, w):
        raise ValueError(f"mask must have shape {(n, _TAPS * groups, h, w)}, got {tuple(mask.shape)}")
    if weight.dim() != 4 or tuple(weight.shape[1:]) != (c, 3, 3):
        raise ValueError(f"weight must have shape (C_out, {c}, 3, 3), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


class _Geometry(NamedTuple):
    height: int
    width: int
    wp: int  # padded row length of the table


def modulated_deform_conv3x3(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                             bias: Tensor | None, deformable_groups: int, *,
                             chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Modulated deformable 3x3 convolution, stride 1, padding 1, dilation 1, groups 1.

    Same result as ``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1,
    mask=mask)`` to float rounding. Not differentiable (meant for ``torch.no_grad`` /
    ``torch.inference_mode``); any device, float32 or float64, tuned for CPU.

    Args:
        x: Input, shape (N, C, H, W).
        offset: (N, 18 G, H, W); channel ``18 g + 2 k`` is the row shift (dy) and
            ``18 g + 2 k + 1`` the column shift (dx) of tap ``k = 3 i + j`` in group ``g``.
        mask: (N, 9 G, H, W), channel ``9 g + k``; None means all ones.
        weight: (C_out, C, 3, 3).
        bias: (C_out,) or None.
        deformable_groups: G; must divide C.
        chunk_elements: Target size of one band's column matrix (output pixels x C x 9).

    Returns:
        Output, shape (N, C_out, H, W), dtype and device of ``x``.

    Raises:
        ValueError: On inconsistent shapes.
    """
    _check(x, offset, mask, weight, bias, deformable_groups)
    n, c, height, width = x.shape
    groups = deformable_groups
    cg = c // groups
    c_out = weight.shape[0]
    device, dtype = x.device, x.dtype
    offset = offset.to(dtype)
    mask = mask.to(dtype) if mask is not None else None

    hp, wp = height + _PAD_BEFORE + _PAD_AFTER, width + _PAD_BEFORE + _PAD_AFTER
    table_rows = groups * hp * wp
    index_dtype = torch.int32 if table_rows < 2**31 - 1 else torch.int64
    geometry = _Geometry(height, width, wp)

    # The weight in the column order of the gathered matrix: (C_out, (group, tap, channel)).
    w_rows = (weight.to(dtype).reshape(c_out, groups, cg, _TAPS).permute(0, 1, 3, 2)
              .reshape(c_out, groups * _TAPS * cg))
    bias_col = bias.to(dtype).view(c_out, 1) if bias is not None else None
    # Integer base positions y - 1 + i and x - 1 + j of every (output row | column, group, tap),
    # as floats: (H, 1, 9 G) and (1, W, 9 G).
    taps = torch.arange(_TAPS, device=device).repeat(groups)
    base_y = (torch.arange(height, device=device).view(height, 1, 1) - 1 + taps // 3).to(dtype)
    base_x = (torch.arange(width, device=device).view(1, width, 1) - 1 + taps % 3).to(dtype)
    # Table row of image pixel (0, 0) in the group of each (group, tap).
    group_start = (torch.arange(groups, device=device, dtype=index_dtype).repeat_interleave(_TAPS) * (hp * wp)
                   + (_PAD_BEFORE * wp + _PAD_BEFORE))

    out = torch.empty(n, c_out, height * width, device=device, dtype=dtype)
    tables = []
    for i in range(n):
        # (G * hp * wp, C / G): one row per (group, padded pixel), zero outside the image.
        table = torch.zeros(groups, hp, wp, cg, device=device, dtype=dtype)
        table[:, _PAD_BEFORE:_PAD_BEFORE + height, _PAD_BEFORE:_PAD_BEFORE + width] = (
            x[i].reshape(groups, cg, height, width).permute(0, 2, 3, 1))
        tables.append(table.view(table_rows, cg))

    rows_per_band = max(1, min(height, chunk_elements // max(1, width * c * _TAPS)))

    def band(i: int, r0: int) -> None:
        r1 = min(height, r0 + rows_per_band)
        # Corner table rows and weights of every sample, (R, W, 9 G, 4): the order in which
        # embedding_bag emits its rows, one row of im2col per output pixel.
        shape = (r1 - r0, width, groups * _TAPS, 4)
        index = torch.empty(shape, device=device, dtype=index_dtype)
        weights = torch.empty(shape, device=device, dtype=dtype)
        _corners(offset[i, :, r0:r1].permute(1, 2, 0),
                 None if mask is None else mask[i, :, r0:r1].permute(1, 2, 0),
                 base_y[r0:r1], base_x, group_start, geometry, index, weights)
        samples = index.numel() // 4
        cols = F.embedding_bag(index.view(samples, 4), tables[i], mode="sum",
                               per_sample_weights=weights.view(samples, 4))
        # (C_out, K) @ (K, pixels), written straight into the output rows.
        cols_t = cols.view((r1 - r0) * width, -1).t()
        target = out[i, :, r0 * width:r1 * width]
        stable_addmm(bias_col, w_rows, cols_t, out=target)  # small bands: see nets/stable.py

    bands = [(i, r0) for i in range(n) for r0 in range(0, height, rows_per_band)]
    if device.type != "cpu":
        for i, r0 in bands:
            band(i, r0)
    else:
        with _band_threads(len(bands)) as pool:
            if pool is None:
                for i, r0 in bands:
                    band(i, r0)
            else:
                # Grad mode and inference mode are thread-local: carry them into the workers.
                grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

                def job(i: int, r0: int) -> None:
                    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                        band(i, r0)

                for future in [pool.submit(job, i, r0) for i, r0 in bands]:
                    future.result()
    return out.view(n, c_out, height, width)


# The fast path as an opaque operator, so that torch.compile keeps it in one graph with the rest of
# the network instead of breaking the graph around it (its Python threads and thread-count changes
# cannot be traced; with graph breaks every pyramid level's shape recompiled the DCN's caller).
@torch.library.custom_op("vsedvr::modulated_deform_conv3x3", mutates_args=())
def _modulated_deform_conv3x3_op(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor,
                                 bias: Tensor | None, deformable_groups: int) -> Tensor:
    return modulated_deform_conv3x3(x, offset, mask, weight, bias, deformable_groups)


@_modulated_deform_conv3x3_op.register_fake
def _(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
      deformable_groups: int) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


def _corners(offset: Tensor, mask: Tensor | None, base_y: Tensor, base_x: Tensor, group_start: Tensor,
             geo: _Geometry, index: Tensor, weights: Tensor) -> None:
    """Table rows and weights of the 4 bilinear corners of every sample of a band.

    Args:
        offset: (R, W, 18 G) offsets of the band's output pixels (any strides).
        mask: (R, W, 9 G) or None.
        base_y: (R, 1, 9 G) integer row positions y - 1 + i, as floats.
        base_x: (1, W, 9 G) integer column positions x - 1 + j, as floats.
        group_start: (9 G,) table row of image pixel (0, 0) in each sample's group.
        geo: Frame size and padded row length.
        index: Output (R, W, 9 G, 4), table rows of the corners (y0, x0), (y0, x0 + 1),
            (y0 + 1, x0), (y0 + 1, x0 + 1).
        weights: Output (R, W, 9 G, 4), their bilinear weights times the mask.
    """
    # Sampling positions: the same float operation as torchvision's (integer base + offset).
    py = offset[..., 0::2] + base_y
    px = offset[..., 1::2] + base_x
    # Out-of-image samples: moving them into the zero padding makes all 4 corners read 0, which
    # is torchvision's rule (a sample counts only when -1 < y < H and -1 < x < W); positions in
    # (-2, H + 1) are untouched, and those outside (-1, H) read padding rows anyway.
    py.clamp_(-_PAD_BEFORE, geo.height + 1)
    px.clamp_(-_PAD_BEFORE, geo.width + 1)
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly = py.sub_(y0)  # y - floor(y), rounded as in torchvision
    lx = px.sub_(x0)
    hy = 1 - ly
    hx = 1 - lx
    if mask is not None:
        hy.mul_(mask)
        ly.mul_(mask)
    torch.mul(hy, hx, out=weights[..., 0])
    torch.mul(hy, lx, out=weights[..., 1])
    torch.mul(ly, hx, out=weights[..., 2])
    torch.mul(ly, lx, out=weights[..., 3])
    # Clamped again as integers: NaN positions get through the float clamp and convert to
    # anything; they stay NaN through their weights, as in torchvision.
    yi = y0.to(index.dtype).clamp_(-_PAD_BEFORE, geo.height + 1)
    xi = x0.to(index.dtype).clamp_(-_PAD_BEFORE, geo.width + 1)
    start = yi.mul_(geo.wp).add_(xi).add_(group_start)
    index[..., 0] = start
    torch.add(start, 1, out=index[..., 1])
    torch.add(start, geo.wp, out=index[..., 2])
    torch.add(start, geo.wp + 1, out=index[..., 3])


# --------------------------------------------------------------------------- threads
#
# torch.set_num_threads is process-wide in effect: it sets a global count that every thread
# copies at its first parallel operation, and the OpenMP and MKL counts of the calling thread.
# Changing it while other Restores (or other PyTorch filters) run makes their operations run with
# another thread count, which changes their rounding (and their speed). So the count is never
# changed here: the pool's own threads are made single-threaded, each for itself, through the
# per-thread controls of the libraries PyTorch uses (omp_set_num_threads sets the calling thread's
# OpenMP count; mkl_set_num_threads_local the calling thread's MKL count). Where PyTorch does not
# run on OpenMP, or a control cannot be found, there is no pool and the bands run in the calling
# thread with PyTorch's own threading: slower on a loaded machine, the same results.

_thread_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_single_threading: Callable[[], None] | None | bool = False  # False: not looked up yet


def _find_single_threading() -> Callable[[], None] | None:
    """A function that makes the calling thread's PyTorch operations single-threaded, or None."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib = Path(torch.__file__).parent / "lib"
    try:
        # the OpenMP runtime and MKL (linked into libtorch_cpu) that PyTorch itself loaded
        omp = next((ctypes.CDLL(str(p)) for p in sorted(lib.glob("libgomp*.so*")) + sorted(lib.glob("libiomp*.so*"))),
                   None) or ctypes.CDLL(None)
        omp_set = omp.omp_set_num_threads
    except (OSError, AttributeError):
        return None
    mkl_set = None
    if torch.backends.mkl.is_available():
        try:
            # the C interface; the lower-case name is Fortran's, which takes its argument by reference
            mkl_set = ctypes.CDLL(str(next(lib.glob("libtorch_cpu.*")))).MKL_Set_Num_Threads_Local
        except (OSError, AttributeError, StopIteration):
            return None

    def single_threaded() -> None:
        torch.get_num_threads()  # PyTorch's per-thread initialisation first: it would undo what follows
        omp_set(1)
        if mkl_set is not None:
            mkl_set(1)

    return single_threaded


@contextmanager
def _band_threads(bands: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of single-threaded Python threads for the bands, as many as the calling thread's
    PyTorch thread count; None (run the bands here) when that is 1, there is one band, or the
    pool threads cannot be made single-threaded (see above). Changes no thread count but the
    pool threads' own."""
    global _pool, _pool_size, _single_threading
    workers = min(torch.get_num_threads(), bands)
    pool = None
    if workers > 1:
        with _thread_lock:
            if _single_threading is False:
                _single_threading = _find_single_threading()
            if _single_threading is not None and _pool_size < workers:
                # The old pool is not shut down: a concurrent call may still submit to it; its
                # idle threads end once it is garbage.
                _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vsedvr-dcn",
                                           initializer=_single_threading)
                _pool_size = workers
            pool = _pool
    yield pool
