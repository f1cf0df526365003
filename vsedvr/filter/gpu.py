"""The CUDA device as the filter meets it: out-of-memory errors, the current device, pinned host
buffers, free memory."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from .options import ArgumentError

log = logging.getLogger("vsedvr")

#: Channels-last tensors through the network, and CUDA graphs of each tile shape (vsedvr/filter/graphs.py),
#: on CUDA: off until measured on a GPU (``tools/gpu_check.sh``'s step ``fastpaths`` times each against
#: the plain path and checks the frames); ``VSEDVR_CHANNELS_LAST=1`` / ``VSEDVR_CUDA_GRAPHS=1`` turn one on
#: for a process, ``=0`` off.
CHANNELS_LAST_BY_DEFAULT = False
CUDA_GRAPHS_BY_DEFAULT = False


def switch(name: str, default: bool) -> bool:
    """An on/off environment variable (``0`` or ``1``; unset or empty: ``default``)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value not in ("0", "1"):
        raise ArgumentError(f'the environment variable {name} must be 0 or 1, got "{value}"; '
                            f'`unset {name}` for the default')
    return value == "1"

#: What cuDNN, cuBLAS and raw CUDA calls say when they cannot allocate. CUBLAS_STATUS_NOT_INITIALIZED
#: is cuBLAS failing to create its handle and workspace, which under memory pressure is what it
#: reports (a broken installation reports it too: the retries then end in the same error).
_OUT_OF_MEMORY_STATUSES = ("CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_NOT_INITIALIZED",
                           "CUDA error: out of memory")


def out_of_gpu_memory(error: BaseException) -> bool:
    """Whether ``error``, or an error it wraps (torch.compile wraps its backend's), is the GPU out of memory.

    PyTorch's allocator raises OutOfMemoryError; cuDNN's and cuBLAS's own allocations fail as plain
    RuntimeErrors naming their status.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.cuda.OutOfMemoryError) or any(
                status in str(current) for status in _OUT_OF_MEMORY_STATUSES):
            return True
        # what it was raised from (dynamo: ``raise BackendCompilerFailed(...) from e``), not merely during
        current = getattr(current, "inner_exception", None) or current.__cause__
    return False


def device_scope(device: torch.device) -> AbstractContextManager[Any]:
    """``torch.cuda.device(device)`` for a CUDA device, else nothing.

    Scoped, not ``torch.cuda.set_device``: VapourSynth calls filters on its worker threads, and a
    thread's current device is every CUDA filter's on that thread.
    """
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def host_buffer(shape: Sequence[int], dtype: torch.dtype, pinned: bool) -> torch.Tensor:
    """An empty host tensor, pinned when asked and possible.

    cudaHostAlloc failing raises "CUDA error: out of memory", the words of a GPU out-of-memory
    error: taken for one, it halved the tiles for good and did nothing for the host's memory. A
    pinned buffer that cannot be had is not a GPU error: the transfer uses pageable memory (it is
    then synchronous), with one warning per process.
    """
    if not pinned:
        return torch.empty(tuple(shape), dtype=dtype)
    try:
        return _allocate_pinned(tuple(shape), dtype)
    except RuntimeError as e:
        global _warned_pinned
        if not _warned_pinned:
            _warned_pinned = True
            log.warning("Restore: pinned host memory could not be allocated (%s); transfers use pageable "
                        "memory from now on (slower; reported once)", str(e).strip().splitlines()[0])
        return torch.empty(tuple(shape), dtype=dtype)


def _allocate_pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


_warned_pinned = False

def free_cuda_memory(device: torch.device) -> int:
    """Bytes this process can still allocate on ``device``: the driver's free memory plus what
    PyTorch's allocator holds unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
