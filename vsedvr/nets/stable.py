"""CPU operations whose results do not depend on torch's thread count.

A frame must come out the same from a default ``vspipe`` (all cores), a 1-thread render worker and
any thread count in between. Five of PyTorch's CPU operations split their work by thread count in
ways that change the rounding (found by feeding every module of the network the same inputs at 1
to 4 threads; docs/how-it-works.md):

- oneDNN's 1x1 convolution splits its channel sum: a matrix product (weights x pixels) does not;
- matrix products and convolutions with fewer than about 108 output pixels take a kernel that
  splits the sum as well: they are given zero columns up to ``MIN_STABLE_PIXELS`` (the real
  outputs are unchanged; the extra ones are dropped);
- ``F.interpolate``'s bilinear loop, for 3 channels (the x4 base image): rows and columns are
  blended with elementwise operations instead;
- a sum over channels (TSA's similarity of each frame to the centre): added channel by channel;
- ``torch.sigmoid`` (and any elementwise function with a vector and a scalar loop that round
  differently): where the threads' chunks end moves elements between the two loops, so it is
  applied to slices of ``GRAIN`` elements, each of which PyTorch computes in one thread.

3x3 convolutions with at least that many output pixels, pooling, pixel shuffle and elementwise
operations were the same at every thread count. On CUDA every function here is PyTorch's own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: PyTorch's CPU grain: an elementwise operation on fewer elements runs in the calling thread alone.
GRAIN = 32768

#: Output pixels (matrix columns) below which PyTorch's CPU kernels may split a sum by thread count.
MIN_STABLE_PIXELS = 128


def stable_addmm(bias: Tensor | None, weight: Tensor, columns: Tensor, out: Tensor | None = None) -> Tensor:
    """``bias + weight @ columns`` (bias (M, 1) or None), into ``out`` when given; the same at any
    thread count on the CPU."""
    count = columns.shape[1]
    if columns.device.type != "cpu" or count >= MIN_STABLE_PIXELS:
        if bias is None:
            return torch.mm(weight, columns, out=out)
        return torch.addmm(bias, weight, columns, out=out)
    wide = torch.constant_pad_nd(columns, (0, MIN_STABLE_PIXELS - count))
    result = (torch.mm(weight, wide) if bias is None else torch.addmm(bias, weight, wide))[:, :count]
    return result if out is None else out.copy_(result)


class StableConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) computed the same at any thread count on
    the CPU: 1x1 as a matrix product, small outputs widened with zeros."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or self.groups != 1:
            return super().forward(x)
        n, c, height, width = x.shape
        if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0):
            weight = self.weight.view(self.out_channels, c)
            bias = None if self.bias is None else self.bias[:, None]
            return torch.stack([stable_addmm(bias, weight, x[i].reshape(c, height * width))
                                for i in range(n)]).view(n, self.out_channels, height, width)
        out_h, out_w = (self._out_size(height, 0), self._out_size(width, 1))
        if out_h * out_w >= MIN_STABLE_PIXELS:
            return super().forward(x)
        # zero columns on the right, as the convolution's own zero padding would see them
        wider = -(-MIN_STABLE_PIXELS // out_h)
        x = torch.constant_pad_nd(x, (0, (wider - out_w) * self.stride[1]))
        return super().forward(x)[..., :out_w]

    def _out_size(self, size: int, dim: int) -> int:
        return (size + 2 * self.padding[dim] - self.dilation[dim] * (self.kernel_size[dim] - 1) - 1) \
            // self.stride[dim] + 1


def upsample_bilinear(x: Tensor, factor: int) -> Tensor:
    """Bilinear upsampling by an integer factor (align_corners=False); equal to ``F.interpolate``
    within float rounding, and on the CPU the same at any thread count."""
    if x.device.type != "cpu":
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return _upsample_axis(_upsample_axis(x, factor, x.dim() - 2), factor, x.dim() - 1)


def _upsample_axis(x: Tensor, factor: int, dim: int) -> Tensor:
    """Linear upsampling along ``dim``: output ``factor * k + j`` blends inputs k and k +- 1 with a
    weight fixed by the phase j, so each phase is a few elementwise operations on shifted views."""
    size = x.shape[dim]
    edges = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, size - 1, 1)], dim)  # the clamp at both ends
    shape = list(x.shape)
    shape[dim:dim + 1] = [size, factor]
    out = x.new_empty(shape)
    for phase in range(factor):
        offset = (phase + 0.5) / factor - 0.5  # source position - k, in [-0.5, 0.5)
        first = 0 if offset < 0 else 1  # index into ``edges`` of input k - 1 or k
        weight = offset + 1 if offset < 0 else offset
        out.select(dim + 1, phase).copy_(_blend(edges.narrow(dim, first, size), edges.narrow(dim, first + 1, size),
                                                torch.tensor(weight, dtype=x.dtype)))
    return out.flatten(dim, dim + 1)


def _blend(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    """``a + weight * (b - a)`` in separate operations: torch.lerp's vector loop fuses a multiply-add
    that its scalar tail does not, so its result would depend on where the threads' chunks end."""
    out = b - a
    out.mul_(weight)
    return out.add_(a)


def channel_dot(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """``(a * b).sum(dim)``; on the CPU summed channel by channel in order, since PyTorch's
    reduction splits the channel sum by thread count."""
    if a.device.type != "cpu":
        return (a * b).sum(dim=dim)
    a, b = torch.broadcast_tensors(a, b)
    total = a.select(dim, 0) * b.select(dim, 0)
    for k in range(1, a.shape[dim]):
        total.add_(a.select(dim, k) * b.select(dim, k))
    return total


def stable_sigmoid(x: Tensor) -> Tensor:
    """``torch.sigmoid(x)``; on the CPU the same at any thread count (applied slice by slice)."""
    if x.device.type != "cpu" or x.numel() <= GRAIN:
        return torch.sigmoid(x)
    x = x.contiguous()
    out = torch.empty_like(x)
    source, target = x.view(-1), out.view(-1)
    for start in range(0, source.numel(), GRAIN):
        torch.sigmoid(source[start:start + GRAIN], out=target[start:start + GRAIN])
    return out
