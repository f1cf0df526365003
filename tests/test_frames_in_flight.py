"""The CUDA path under many VapourSynth threads, shown on the CPU (issue 22, items 2-8): frames in
flight per filter, one memory budget per device, no order of requests starved, a pinned allocation
that fails is no GPU out-of-memory, no process-wide cuDNN flag, and the exit waits for frames that
are downloading. Each test failed before its fix (at cc35754); tests/test_cuda.py has the GPU side."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

import clips
from inflight import FramesInFlight
from vsedvr.filter import gpu, plugin, tiles
from vsedvr.filter.engine import WindowEngine
from vsedvr.filter.gate import MAX_PASSES
from vsedvr.filter.gpu import host_buffer
from vsedvr.filter.tiles import FRAMES_IN_FLIGHT

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def threads_16():
    core = vs.core
    old = core.num_threads
    core.num_threads = 16
    yield
    core.num_threads = old


def test_frames_in_flight_are_bounded_at_16_threads(tiny_checkpoint: Path, threads_16: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow download (the write waits for it): frames between the start of their network and the
    end of write() stay at the bound. Before, the network ran on while finished frames piled up
    waiting for their downloads: up to 16, each holding a GPU output (6 GB for EDVR-M at 1080p) and
    a pinned buffer."""
    # a download far slower than the (tiny) network
    counter = FramesInFlight(lambda pending: time.sleep(0.3)).install(monkeypatch)
    clip = vs.core.edvr.Restore(clips.moving_pattern(32, 24, 40, seed=2), model=str(tiny_checkpoint))
    for fut in [clip.get_frame_async(n) for n in range(40)]:
        fut.result()
    assert counter.live == 0
    assert counter.peak == FRAMES_IN_FLIGHT, f"{counter.peak} frames in flight at 16 threads"


def test_reversed_clip_is_not_starved(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore(...).std.Reverse() read in order with 8 requests in flight: output frame 0 (input 39)
    is computed early. Serving the lowest waiting frame first computed it last: each finished frame
    brought a lower request, and vspipe had to buffer the whole clip."""
    core = vs.core
    old = core.num_threads
    core.num_threads = 8
    computed: list[int] = []
    monkeypatch.setattr(plugin, "trace", lambda event, n: computed.append(n) if event == "compute" else None)
    try:
        clip = vs.core.edvr.Restore(clips.moving_pattern(32, 24, 40, seed=3), model=str(tiny_checkpoint))
        monkeypatch.setattr(plugin, "trace", None)
        for _ in clip.std.Reverse().frames(prefetch=8):
            pass
    finally:
        core.num_threads = old
    assert sorted(computed) == list(range(40))
    # at most: the frames admitted before its request arrived (8 in flight), MAX_PASSES passes at the
    # in-flight gate, and the frames ahead of it inside (lowest first alone: computed last, 39th)
    assert computed.index(39) < 8 + MAX_PASSES + FRAMES_IN_FLIGHT + 8, computed


def test_two_restores_on_one_gpu_share_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two EDVR-M at 1080p fp16 planned on a 32 GiB card (a fake free-memory figure): the second
    plans from what the first left, together within 80 % of it. Before, each planned 80 % of the same
    free memory (whole frames, 2 x 17.5 GiB), and the first out-of-memory error shrank one's tiles
    for good."""
    from vsedvr.nets import EDVR

    free = 32 * 2**30
    monkeypatch.setattr(tiles, "free_cuda_memory", lambda device: free)
    model = EDVR()
    device = torch.device("cuda", 0)

    class Owner:  # stands for the engine a reservation lives with
        pass

    first = tiles.plan_for_device(model, device, 1920, 1080, torch.float16)
    owner = Owner()
    tiles.reserve(device, owner, first.reservation)
    second = tiles.plan_for_device(model, device, 1920, 1080, torch.float16)
    weights = sum(p.numel() for p in model.parameters()) * 2
    assert first.reservation + second.reservation + 2 * weights <= tiles.FREE_FRACTION * free, (first, second)
    assert (second.tile, second.cached_windows) != (first.tile, first.cached_windows)
    del owner
    assert tiles.reserved_bytes(device) == 0  # a freed filter gives its share back
    assert tiles.plan_for_device(model, device, 1920, 1080, torch.float16) == first


def test_failed_pinned_allocation_is_not_a_gpu_out_of_memory(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """cudaHostAlloc failing says "CUDA error: out of memory": the engine took it for the GPU's and
    halved its tiles for good. Now the buffer is pageable, with one warning."""
    def no_pinned_memory(shape, dtype):
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")

    monkeypatch.setattr(gpu, "_allocate_pinned", no_pinned_memory)
    monkeypatch.setattr(gpu, "_warned_pinned", False)
    with caplog.at_level("WARNING", logger="vsedvr"):
        first = host_buffer((3, 4, 5), torch.float32, pinned=True)
        host_buffer((3, 4, 5), torch.float32, pinned=True)
    assert first.shape == (3, 4, 5) and not first.is_pinned()
    warnings = [r.getMessage() for r in caplog.records if "pinned host memory" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_no_process_wide_cudnn_setting() -> None:
    """cudnn.benchmark is process-wide (every PyTorch filter of the script) and makes each process time
    its own algorithms: the frames of two vspipe runs could differ. The package never sets it."""
    package = ROOT / "vsedvr"
    offenders = [str(p.relative_to(ROOT)) for p in package.rglob("*.py")
                 if "cudnn.benchmark =" in p.read_text() or "cudnn.deterministic =" in p.read_text()]
    assert not offenders, offenders


def test_exit_waits_for_frames_being_written(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The script returns while a frame waits for its download in write(): the exit waits for it to
    leave (before, it waited for the network's lock only, free by then, and the frame took the GIL
    back during finalisation: on Python 3.12 that ends in terminate())."""
    script = tmp_path / "exit_in_write.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, threading, time
        import vapoursynth as vs
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import clips
        from vsedvr.filter.engine import WindowEngine
        inside = threading.Event()
        write = WindowEngine.write
        def slow_write(self, pending, output):
            inside.set()
            time.sleep(2)
            write(self, pending, output)
            print("written", file=sys.stderr, flush=True)
        WindowEngine.write = slow_write
        clip = vs.core.edvr.Restore(clips.moving_pattern(32, 24, 5), model={str(tiny_checkpoint)!r})
        future = clip.get_frame_async(2)
        inside.wait(60)
        print("leaving main", file=sys.stderr, flush=True)
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "leaving main" in done.stderr and "written" in done.stderr.split("leaving main")[1], done.stderr


def test_a_trace_hook_that_raises_gives_the_in_flight_slot_back(tiny_checkpoint: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The debug hook raising at "write" fails that frame only: the frame's in-flight slot is given
    back. It was kept (write() never ran), and after FRAMES_IN_FLIGHT such frames every later frame
    waited for a slot for good (and an exit for its full bound)."""
    def raising(event: str, n: int) -> None:
        if event == "write" and n < FRAMES_IN_FLIGHT:
            raise RuntimeError(f"trace hook failed at frame {n}")

    monkeypatch.setattr(plugin, "trace", raising)
    clip = vs.core.edvr.Restore(clips.moving_pattern(32, 24, 8, seed=4), model=str(tiny_checkpoint))
    monkeypatch.setattr(plugin, "trace", None)
    failed = []
    for n in range(FRAMES_IN_FLIGHT + 2):
        try:
            clip.get_frame_async(n).result(timeout=120)
        except vs.Error as e:
            failed.append(n)
            assert "trace hook failed" in str(e)
        except TimeoutError:
            pytest.fail(f"frame {n} still waits for an in-flight slot after 120 s")
    assert failed == list(range(FRAMES_IN_FLIGHT))


# --------------------------------------------------------------------------- issue 31, item 2: one compute thread

@pytest.mark.parametrize("threads", [1, 8])
def test_the_network_runs_on_one_thread_at_any_thread_count(tiny_checkpoint: Path, threads: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call of the network (features and windows) runs on the Restore's compute thread, whatever
    core.num_threads is, and the frames equal those of one thread. Before, whichever VapourSynth
    thread held the lock ran it: each built its own cuDNN plans, cuBLAS handles and workspace."""
    from vsedvr.nets import EDVR

    callers: set[tuple[int, str]] = set()
    frame_features, restore_window = EDVR.frame_features, EDVR.restore_window

    def recorded(method):
        def call(self, *args):
            callers.add((threading.get_ident(), threading.current_thread().name))
            return method(self, *args)
        return call

    monkeypatch.setattr(EDVR, "frame_features", recorded(frame_features))
    monkeypatch.setattr(EDVR, "restore_window", recorded(restore_window))
    core = vs.core
    old = core.num_threads
    source = clips.moving_pattern(32, 24, 24, seed=6)
    try:
        core.num_threads = 1
        one = [np.stack([np.asarray(f[p]) for p in range(3)])
               for f in vs.core.edvr.Restore(source, model=str(tiny_checkpoint)).frames()]
        callers.clear()  # creating the Restore ran a tiny window on this thread: not a frame
        core.num_threads = threads
        clip = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))
        callers.clear()
        got = [np.stack([np.asarray(fut.result()[p]) for p in range(3)])
               for fut in [clip.get_frame_async(n) for n in range(24)]]
    finally:
        core.num_threads = old
    assert len(callers) == 1 and next(iter(callers))[1] == "vsedvr-compute", callers
    assert next(iter(callers))[0] != threading.get_ident()
    for n in range(24):
        assert np.array_equal(got[n], one[n]), n


def test_an_error_in_the_network_reaches_the_frame_that_asked(tiny_checkpoint: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception raised on the compute thread is that frame's vs.Error (with the compute thread's
    traceback); the other frames in flight come out right, and the filter keeps working."""
    source = clips.moving_pattern(32, 24, 12, seed=7)
    clean = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))
    expected = [np.stack([np.asarray(f[p]) for p in range(3)]) for f in clean.frames()]
    run_network = WindowEngine._run_network

    def faulty(self, window, sources):
        if window[2] == 5:
            raise RuntimeError(f"injected fault in frame {window[2]} on {threading.current_thread().name}")
        return run_network(self, window, sources)

    monkeypatch.setattr(WindowEngine, "_run_network", faulty)
    core = vs.core
    old = core.num_threads
    core.num_threads = 8
    try:
        clip = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))
        futures = [clip.get_frame_async(n) for n in range(12)]
        for n, fut in enumerate(futures):
            if n == 5:
                with pytest.raises(vs.Error) as err:
                    fut.result()
                text = str(err.value)
                assert "Restore: frame 5" in text and "RuntimeError: injected fault in frame 5 on vsedvr-compute" in text
                assert "faulty" in text, text  # the traceback from the compute thread
            else:
                assert np.array_equal(np.stack([np.asarray(fut.result()[p]) for p in range(3)]), expected[n]), n
        monkeypatch.setattr(WindowEngine, "_run_network", run_network)
        assert np.array_equal(np.stack([np.asarray(clip.get_frame(5)[p]) for p in range(3)]), expected[5])
    finally:
        core.num_threads = old


def test_the_compute_thread_is_a_daemon_and_ends_with_its_engine(tiny_checkpoint: Path) -> None:
    """It never keeps a process alive, and a freed Restore leaves no thread behind (none for the
    cycle collector to find either: the thread holds no reference to the engine)."""
    import gc

    from test_cuda_path import random_frames, render, tiny_model

    gc.collect()
    gc.disable()
    try:
        engine = WindowEngine(tiny_model(), torch.device("cpu"), 24, 16, np.float32, torch.float32)
        render(engine, random_frames(24, 16, 3))
        thread = next(t for t in threading.enumerate() if t.ident == engine.compute_thread.ident)
        assert thread.daemon and thread.name == "vsedvr-compute"
        del engine
        thread.join(10)
        assert not thread.is_alive()
    finally:
        gc.enable()


def test_frames_waiting_for_the_network_hold_no_output_frame(tiny_checkpoint: Path, threads_16: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 31, item 5: the plugin allocates a frame's output only once its network has run
    (Restorer.process, then Restorer.write). Before, each of the 16 threads waiting at the network's
    lock held its output frame: 16 x 398 MB at 1080p -> 8K, counted against VapourSynth's cache.
    VapourSynth's frame memory (``core.used_cache_size``, less what the core held before and all
    the input frames; nothing is freed here: the futures keep every result) when each frame's
    network starts, in output frames beyond those started: up to 14 before, under 0 after."""
    width, height, count = 104, 72, 24  # a frame size no other test uses: no pooled buffer of its size
    frame_bytes = 3 * (4 * width) * (4 * height) * 4
    inputs_bytes = (count + 4) * 3 * width * height * 4  # every input frame, all held at once at most
    started, beyond = [0], []
    run_network = WindowEngine._run_network

    def counted(engine, window, sources):
        started[0] += 1
        beyond.append((vs.core.used_cache_size - base - inputs_bytes) / frame_bytes - started[0])
        time.sleep(0.02)  # the other threads' frames arrive at the lock meanwhile
        return run_network(engine, window, sources)

    monkeypatch.setattr(WindowEngine, "_run_network", counted)
    clip = vs.core.edvr.Restore(clips.moving_pattern(width, height, count, seed=2), model=str(tiny_checkpoint))
    base = vs.core.used_cache_size  # the core's frame memory so far (other tests', pooled)
    futures = [clip.get_frame_async(n) for n in range(count)]
    for fut in futures:
        fut.result()
    assert max(beyond) < 2, f"{max(beyond):.1f} output frames allocated beyond the frames whose network started"
