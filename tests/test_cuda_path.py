"""Defects of the CUDA path that show on the CPU (issue 17): compile guards, reference cycles, the
offset watch's cost, the device switch, out-of-memory retries. docs/cuda.md lists what each decided.

The engine runs a real (small, random) EDVR on real frames; the out-of-memory errors are raised
from a forward hook or a compile backend, which is where a real GPU would raise them.
"""
from __future__ import annotations

import ast
import gc
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import vapoursynth as vs

import clips
from vsedvr.filter import gpu
from vsedvr.filter.engine import WindowEngine
from vsedvr.nets import EDVR
from vsedvr.nets.blocks import DCNPack

PACKAGE = Path(gpu.__file__).resolve().parent.parent


def tiny_model(seed: int = 0) -> EDVR:
    torch.manual_seed(seed)
    return EDVR(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1).eval()


def random_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((3, height, width), dtype=np.float32) for _ in range(count)]


def views(frame: np.ndarray) -> list[Any]:
    return [memoryview(np.ascontiguousarray(p)).cast("B") for p in frame] + [frame.shape[2] * 4]


def render(engine: WindowEngine, frames: list[np.ndarray], numbers: range | list[int] | None = None) -> np.ndarray:
    """Restores the given frames (clamped 5-frame windows) through restore() and write()."""
    last = len(frames) - 1
    out = []
    for n in range(len(frames)) if numbers is None else numbers:
        window = [min(max(n + d, 0), last) for d in range(-2, 3)]
        pending = engine.restore(window, [views(frames[i]) for i in window])
        h, w = frames[0].shape[1:]
        result = np.zeros((3, 4 * h, 4 * w), dtype=np.float32)
        engine.write(pending, [memoryview(p).cast("B") for p in result] + [4 * w * 4])
        out.append(result)
    return np.stack(out)


class CountingBackend:
    """A torch.compile backend that runs graphs eagerly and counts them by region.

    Each region's graph is named by its first input: frame_features(frame), pcd_align(nbr, ref),
    fusion(aligned); any other graph is the reconstruction's (a Sequential, whose first input dynamo
    names after its first block's weight or its input, differently between torch versions), so an
    extra graph anywhere shows as a second reconstruction graph.
    """

    REGIONS = {"l_frame_": "frame_features", "l_nbr_": "pcd_align", "l_aligned_": "fusion"}

    def __init__(self) -> None:
        self.graphs: Counter[str] = Counter()

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable[..., Any]:
        first = next(n.name for n in gm.graph.nodes if n.op == "placeholder")
        self.graphs[next((r for p, r in self.REGIONS.items() if first.startswith(p)), "reconstruction")] += 1
        return gm.forward


@pytest.fixture
def fresh_dynamo(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="torch._dynamo"):
        yield caplog
    torch._dynamo.reset()


# --------------------------------------------------------------------------- 1. compile guards

@pytest.mark.slow(reason="inductor compiles every tile shape on the CPU (minutes on 2 cores); "
                         "test_filter's compiled-equals-uncompiled test keeps compile=True in make test")
@pytest.mark.parametrize(("tile", "shapes"), [(None, 1), ((16, 16), 1)], ids=["untiled", "tiled"])
def test_compiled_regions_compile_once_per_tile_shape(fresh_dynamo: pytest.LogCaptureFixture,
                                                      tile: tuple[int, int] | None, shapes: int) -> None:
    """12 frames of 40x28 (16-px tiles with the default overlap): each region compiles once, whatever
    the window position, and no region hits the recompile limit (beyond it dynamo silently runs the
    region uncompiled). Tiled, once too: every tile reads a region of one size (issue 31; before,
    the read regions clipped at the frame's edges had 3 widths, and each compiled its own graphs)."""
    backend = CountingBackend()
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 40, 28, np.float32, torch.float32, tile=tile,
                          tile_overlap=16 if tile else 0, compile=True, compile_backend=backend)
    frames = random_frames(40, 28, 12)
    compiled = render(engine, frames)
    assert engine.compiled
    assert backend.graphs == {"frame_features": shapes, "pcd_align": shapes, "fusion": shapes,
                              "reconstruction": shapes}, backend.graphs
    limits = [r.getMessage() for r in fresh_dynamo.records if "recompile_limit" in r.getMessage()]
    assert not limits, limits[0]
    plain = render(WindowEngine(tiny_model(), torch.device("cpu"), 40, 28, np.float32, torch.float32, tile=tile,
                                tile_overlap=16 if tile else 0), frames)
    np.testing.assert_allclose(compiled, plain, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- 4. reference cycles

@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("compile", [False, True], ids=["plain", "compiled"])
def test_dropped_engine_frees_its_model_without_the_cycle_collector(no_gc: None, compile: bool) -> None:
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32,
                          compile=compile, compile_backend="eager")
    render(engine, random_frames(24, 16, 3))
    assert len(engine.cache) > 0
    engine_ref, model_ref = weakref.ref(engine), weakref.ref(engine.model)
    del engine
    assert engine_ref() is None and model_ref() is None


def test_deleted_restore_node_frees_its_engine_without_the_cycle_collector(tiny_checkpoint: Path,
                                                                         no_gc: None) -> None:
    def engines() -> int:
        return sum(type(o) is WindowEngine for o in gc.get_objects())  # type(): no __class__ lookups

    before = engines()
    clip = vs.core.edvr.Restore(clips.moving_pattern(24, 16, 4), model=str(tiny_checkpoint), device="cpu")
    clip.get_frame(1)
    assert engines() == before + 1
    del clip
    assert engines() == before


# --------------------------------------------------------------------------- 5. offset watch cost

def _ops(engine: WindowEngine, run: Callable[[], Any]) -> Counter[str]:
    """The ops ``run`` calls, profiled on the engine's compute thread (where the network runs; the
    profiler sees its own thread's ops)."""
    def profiled() -> Counter[str]:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run()
        return Counter({e.key: e.count for e in prof.key_averages()})
    return engine.compute_thread.run(profiled)


def test_offset_watch_makes_no_copy_of_the_offsets() -> None:
    """The mean |offset| of each DCN is one reduction: no |offset| tensor the size of the offsets (the
    frames' own NaN check, torch.isfinite, takes an abs per new input frame: the baseline)."""
    frames = random_frames(24, 16, 5)

    def ops_of_one_window(watch: bool) -> Counter[str]:
        engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32)
        if not watch:
            engine._offsets.stop()
        render(engine, frames, [2])
        engine.cache.clear()
        return _ops(engine, lambda: render(engine, frames, [2]))

    watched, unwatched = ops_of_one_window(True), ops_of_one_window(False)
    assert watched["aten::abs"] == unwatched["aten::abs"], (watched["aten::abs"], unwatched["aten::abs"])
    dcns = sum(isinstance(m, DCNPack) for m in tiny_model().modules())
    assert watched["aten::linalg_vector_norm"] == 5 * dcns  # it still watches every DCN of every frame
    assert unwatched["aten::linalg_vector_norm"] == 0


@pytest.mark.parametrize("compile", [False, True], ids=["plain", "compiled"])
def test_offset_watch_stops_after_its_warning(caplog: pytest.LogCaptureFixture, compile: bool) -> None:
    """Compiled too (aot_eager: functionalised like inductor's graphs, so the in-place maximum must survive)."""
    torch._dynamo.reset()
    model = tiny_model(1)
    with torch.no_grad():
        model.pcd_align.cas_dcnpack.conv_offset.bias[:36] = 80.0  # offsets of 80 px everywhere
    engine = WindowEngine(model, torch.device("cpu"), 24, 16, np.float32, torch.float32, compile=compile,
                          compile_backend="aot_eager")
    frames = random_frames(24, 16, 6)
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        render(engine, frames, [0, 1])
    assert sum("deformable offset" in r.getMessage() for r in caplog.records) == 1
    # the frame after the warning: no hook left, nothing measured
    assert not any(m._forward_hooks for m in model.modules())
    ops = _ops(engine, lambda: render(engine, frames, [2]))
    assert ops["aten::linalg_vector_norm"] == 0 and ops["aten::maximum"] == 0


# --------------------------------------------------------------------------- 6. device switch

def test_no_thread_wide_cuda_device_switch() -> None:
    """torch.cuda.set_device changes the current device of the VapourSynth worker thread for every
    other CUDA filter on it; the engine scopes its device with ``torch.cuda.device(...)`` instead."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "set_device":
                calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not calls, calls


def test_device_scope_is_the_scoped_context() -> None:
    scope = gpu.device_scope(torch.device("cuda", 1))
    assert isinstance(scope, torch.cuda.device) and scope.idx == 1  # constructing it touches no GPU
    with gpu.device_scope(torch.device("cpu")):
        pass


# --------------------------------------------------------------------------- 7. out-of-memory retries

@pytest.mark.parametrize("message", [
    "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
])
def test_out_of_memory_statuses_are_recognised(message: str) -> None:
    assert gpu.out_of_gpu_memory(RuntimeError(message))
    assert not gpu.out_of_gpu_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))


def test_wrapped_out_of_memory_is_recognised() -> None:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError as inner:
            raise RuntimeError("backend failed") from inner
    except RuntimeError as outer:
        assert gpu.out_of_gpu_memory(outer)


def _raise_oom(times: int) -> Callable[..., None]:
    left = [times]

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if left[0]:
            left[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (raised by the test)")
    return hook


def test_one_transient_out_of_memory_keeps_the_tiles(caplog: pytest.LogCaptureFixture) -> None:
    """Another process briefly holding the GPU's memory: the frame is retried at the same tiles."""
    frames = random_frames(144, 96, 5)
    expected = render(WindowEngine(tiny_model(), torch.device("cpu"), 144, 96, np.float32, torch.float32), frames, [2])
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 144, 96, np.float32, torch.float32)
    engine.model.fusion.register_forward_pre_hook(_raise_oom(1))
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        got = render(engine, frames, [2])
    assert engine.tile is None
    assert not [r for r in caplog.records if "ran out of memory" in r.getMessage()]
    np.testing.assert_array_equal(got, expected)


def test_repeated_out_of_memory_shrinks_the_tiles(caplog: pytest.LogCaptureFixture) -> None:
    frames = random_frames(144, 96, 5)
    expected = render(WindowEngine(tiny_model(), torch.device("cpu"), 144, 96, np.float32, torch.float32), frames, [2])
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 144, 96, np.float32, torch.float32)
    engine.model.fusion.register_forward_pre_hook(_raise_oom(2))
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        got = render(engine, frames, [2])
    assert engine.tile == (72, 64)
    assert sum("ran out of memory" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_out_of_memory_while_compiling_keeps_compile(fresh_dynamo: pytest.LogCaptureFixture,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Inductor benchmarks its kernels on the GPU while compiling; an OOM there is an OOM (retried), not a
    compiler that does not work (which would disable compile for good)."""
    counting = CountingBackend()
    failures = [1]

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable[..., Any]:
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (raised by the test)")
        return counting(gm, example_inputs)

    engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32,
                          compile=True, compile_backend=backend)
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        render(engine, random_frames(24, 16, 5), [2])
    assert engine.compiled and engine.tile is None
    assert not [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert counting.graphs["pcd_align"] == 1


# --------------------------------------------------------------------------- issue 31, item 5

def test_a_frame_reads_nothing_back_while_it_computes(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The NaN check ran on the host (``torch.isfinite(...).all()`` tested in Python, on whichever
    thread held the lock); on CUDA any such read is a sync. Now it is a flag on the device, read with
    the offset peak after the download: nothing on the compute thread turns a tensor into a Python
    value. The warning still comes, once."""
    import threading

    engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32)
    frames = random_frames(24, 16, 5)
    frames[1][0, 3, 4] = np.nan
    reads: list[str] = []
    computing = threading.local()  # set on the thread that runs a frame's network, while it does
    run_network = WindowEngine._run_network

    def network(self: WindowEngine, window: Any, sources: Any) -> Any:
        computing.on = True
        try:
            return run_network(self, window, sources)
        finally:
            computing.on = False

    def guarded(name: str) -> Callable[..., Any]:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: Any) -> Any:
            if getattr(computing, "on", False):
                reads.append(name)
            return original(self, *args)
        return read

    monkeypatch.setattr(WindowEngine, "_run_network", network)
    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, guarded(name))
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        got = render(engine, frames, [2, 3])
    assert not reads, reads
    assert sum("NaN or infinite" in r.getMessage() for r in caplog.records) == 1
    assert np.isfinite(got).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_results_travel_in_half_and_are_converted_as_they_are_written(dtype: torch.dtype) -> None:
    """A half-precision network's result was converted to fp32 on the device and downloaded in fp32
    (99.5 MB a frame at 540p -> 4K, pinned buffers kept for the process). Now it travels in float16
    (half the bytes; bfloat16 networks too: their float32 result would lose 3 more bits in bfloat16)
    and write() converts it while copying into the RGBS frame."""
    engine = WindowEngine(tiny_model().to(dtype), torch.device("cpu"), 24, 16, np.float32, dtype)
    frames = random_frames(24, 16, 5)
    pending = engine.restore([0, 1, 2, 3, 4], [views(f) for f in frames])
    assert pending.host.dtype == torch.float16
    out = np.zeros((3, 64, 96), dtype=np.float32)
    engine.write(pending, [memoryview(p).cast("B") for p in out] + [96 * 4])
    assert np.array_equal(out, pending.host.float().numpy())
    full = render(WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32), frames, [2])[0]
    assert np.abs(out - full).max() < (2e-3 if dtype == torch.float16 else 2e-2)


# --------------------------------------------------------------------------- issue 32: fast-path switches

@pytest.mark.parametrize("tile", [None, (24, 16)], ids=["whole", "tiled"])
def test_channels_last_engine_gives_the_frames_of_nchw(tile: tuple[int, int] | None) -> None:
    """The channels-last layout (on CUDA, VSEDVR_CHANNELS_LAST=1) through crops, padding, the feature
    cache, the network, tiles and the planar output, shown on the CPU: the frames of the NCHW engine."""
    frames = random_frames(40, 28, 6)
    overlap = 8 if tile else 0
    plain = render(WindowEngine(tiny_model(), torch.device("cpu"), 40, 28, np.float32, torch.float32, tile=tile,
                                tile_overlap=overlap), frames)
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 40, 28, np.float32, torch.float32, tile=tile,
                          tile_overlap=overlap, channels_last=True)
    assert engine.model.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    channels_last = render(engine, frames)
    cached = next(iter(engine.cache._items.values()))
    assert cached[0].is_contiguous(memory_format=torch.channels_last)  # the crop, and so its features
    np.testing.assert_allclose(channels_last, plain, atol=2e-6, rtol=0)


def test_graphs_are_refused_where_they_cannot_be_captured() -> None:
    from vsedvr.filter.graphs import graphs_supported

    assert "CUDA device" in graphs_supported(torch.device("cpu"), torch.float16)
    engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32, cuda_graphs=True)
    assert not engine.cuda_graphs  # and the frames are the eager ones
    assert np.array_equal(render(engine, random_frames(24, 16, 3)),
                          render(WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32),
                                 random_frames(24, 16, 3)))


@pytest.mark.parametrize("name", ["VSEDVR_CHANNELS_LAST", "VSEDVR_CUDA_GRAPHS"])
def test_a_bad_switch_names_the_variable(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "yes")
    with pytest.raises(vs.Error, match=rf'{name} must be 0 or 1, got "yes"; `unset {name}` for the default'):
        vs.core.edvr.Restore(clips.moving_pattern(16, 12, 3), model=str(tiny_checkpoint), device="cpu")
    monkeypatch.setenv(name, "0")
    assert vs.core.edvr.Restore(clips.moving_pattern(16, 12, 3), model=str(tiny_checkpoint), device="cpu").num_frames == 3


# --------------------------------------------------------------------------- the residual base in float32

def test_half_precision_network_adds_the_base_of_the_unrounded_frame() -> None:
    """A bfloat16 network (on the CPU here; on CUDA the same engine) whose last convolution gives 0:
    the frame is the bilinear x4 of the clip's own samples, rounded once to float16 for the download
    (2.4e-4 at most for samples in [0, 1]). Before, the centre crop went to the network in bfloat16 and
    the result was downloaded in bfloat16: 8 bits, errors up to 2e-3 (banding in a 10-bit encode)."""
    from vsedvr.nets.stable import upsample_bilinear

    frames = random_frames(24, 16, 3)
    model = tiny_model().to(torch.bfloat16)
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
    engine = WindowEngine(model, torch.device("cpu"), 24, 16, np.float32, torch.bfloat16)
    assert engine.transfer_dtype == torch.float16
    out = render(engine, frames)
    base = upsample_bilinear(torch.from_numpy(np.stack(frames)), 4).numpy()
    assert np.abs(out - base).max() <= 2.5e-4, np.abs(out - base).max()
