"""core.edvr.Restore through a real VapourSynth core and real vspipe, against the network itself."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

import clips
from vsedvr import load_model, restore
from vsedvr.filter.windows import PADDINGS, window_indices

TESTS = Path(__file__).resolve().parent
W, H, LENGTH = 16, 12, 9


def frames_of(clip: vs.VideoNode) -> np.ndarray:
    """All frames as an (N, 3, H, W) float32 array."""
    return np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in clip.frames()]).astype(np.float32)


def reference(checkpoint: Path, frames: np.ndarray, padding: str, scenes: list[tuple[int, int]] | None = None,
              only: list[int] | None = None) -> dict[int, np.ndarray]:
    """The network applied directly to each output frame's window (built with window_indices)."""
    net = load_model(checkpoint)
    scenes = scenes or [(0, len(frames) - 1)]
    out = {}
    with torch.inference_mode():
        for first, last in scenes:
            for n in range(first, last + 1):
                if only is not None and n not in only:
                    continue
                idx = window_indices(n, net.num_frames, first, last, padding)
                out[n] = net(torch.from_numpy(frames[idx])[None])[0].numpy()
    return out


@pytest.fixture(scope="module")
def source() -> vs.VideoNode:
    return clips.moving_pattern(W, H, LENGTH)


def test_output_format_size_and_props(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    tagged = vs.core.std.SetFrameProps(source, Tagged=7, _Matrix=0)
    out = vs.core.edvr.Restore(tagged, model=str(tiny_checkpoint))
    assert (out.width, out.height, out.num_frames, out.format.id) == (4 * W, 4 * H, LENGTH, vs.RGBS)
    frame = out.get_frame(3)
    assert frame.props["Tagged"] == 7 and frame.props["_Matrix"] == 0
    assert np.asarray(frame[0]).shape == (4 * H, 4 * W)


@pytest.mark.parametrize("padding", PADDINGS)
def test_each_padding_matches_its_rule_at_both_ends(tiny_checkpoint: Path, source: vs.VideoNode,
                                                    padding: str) -> None:
    frames = frames_of(source)
    out = vs.core.edvr.Restore(source, model=str(tiny_checkpoint), padding=padding)
    ends = [0, 1, 2, LENGTH - 3, LENGTH - 2, LENGTH - 1]
    expected = reference(tiny_checkpoint, frames, padding, only=ends)
    for n in ends:
        got = frames_of(out[n])[0]
        np.testing.assert_allclose(got, expected[n], atol=1e-5, rtol=0, err_msg=f"frame {n}, {padding}")


def test_other_paddings_give_other_edges(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    """The padding argument reaches the plugin: the first frame differs between modes."""
    firsts = [frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), padding=p)[0])[0] for p in PADDINGS]
    for a in range(len(firsts)):
        for b in range(a + 1, len(firsts)):
            assert not np.array_equal(firsts[a], firsts[b]), (PADDINGS[a], PADDINGS[b])


@pytest.mark.parametrize("marker", ["prev", "next"])
def test_scene_cut_acts_like_a_clip_edge(tiny_checkpoint: Path, source: vs.VideoNode, marker: str) -> None:
    cut = 4  # frames 0..3 and 4..8 are two scenes
    if marker == "prev":  # the first frame of the new scene says so
        marked = source[:cut] + vs.core.std.SetFrameProps(source[cut], _SceneChangePrev=1) + source[cut + 1:]
    else:  # the last frame of the old scene says so
        marked = source[:cut - 1] + vs.core.std.SetFrameProps(source[cut - 1], _SceneChangeNext=1) + source[cut:]
    frames = frames_of(source)
    expected = reference(tiny_checkpoint, frames, "reflection_circle", scenes=[(0, cut - 1), (cut, LENGTH - 1)])
    aware = frames_of(vs.core.edvr.Restore(marked, model=str(tiny_checkpoint)))
    for n in range(LENGTH):
        np.testing.assert_allclose(aware[n], expected[n], atol=1e-5, rtol=0, err_msg=f"frame {n}")
    blind = frames_of(vs.core.edvr.Restore(marked, model=str(tiny_checkpoint), scenechange=False))
    whole = reference(tiny_checkpoint, frames, "reflection_circle", only=[cut])
    np.testing.assert_allclose(blind[cut], whole[cut], atol=1e-5, rtol=0)
    assert not np.allclose(blind[cut], aware[cut], atol=1e-4)
    assert np.array_equal(blind[LENGTH - 1], aware[LENGTH - 1])  # its window stays inside the second scene


def test_scene_shorter_than_window_replicates_its_ends(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    """A 2-frame scene: the reference rule leaves the scene, the documented fallback clamps to it."""
    marked = (vs.core.std.SetFrameProps(source[:3], _SceneChangeNext=0)
              + vs.core.std.SetFrameProps(source[3], _SceneChangePrev=1)
              + vs.core.std.SetFrameProps(source[4], _SceneChangeNext=1) + source[5:])
    assert window_indices(3, 5, 3, 4, "reflection_circle") == [4, 4, 3, 4, 3]
    frames = frames_of(source)
    expected = reference(tiny_checkpoint, frames, "reflection_circle", scenes=[(3, 4)])
    got = frames_of(vs.core.edvr.Restore(marked, model=str(tiny_checkpoint))[3:5])
    np.testing.assert_allclose(got[0], expected[3], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1], expected[4], atol=1e-5, rtol=0)


def test_scene_props_of_the_wrong_type_are_ignored(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    floats = vs.core.std.SetFrameProps(source, _SceneChangePrev=1.0, _SceneChangeNext=1.0)
    got = frames_of(vs.core.edvr.Restore(floats, model=str(tiny_checkpoint))[4])
    plain = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint))[4])
    assert np.array_equal(got, plain)


def test_short_clip_is_padded_by_clamping(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    for length in (1, 2, 3):
        clip = source[:length]
        frames = frames_of(clip)
        expected = reference(tiny_checkpoint, frames, "reflection_circle")
        got = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint)))
        for n in range(length):
            np.testing.assert_allclose(got[n], expected[n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("threads", [1, 8])
def test_random_order_equals_sequential(tiny_checkpoint: Path, threads: int) -> None:
    core = vs.core
    old = core.num_threads
    core.num_threads = threads
    try:
        clip = clips.moving_pattern(W, H, 40, seed=3)
        sequential = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint)))
        shuffled = vs.core.edvr.Restore(clip, model=str(tiny_checkpoint))
        order = list(range(40)) * 2
        random.Random(threads).shuffle(order)
        futures = {n: shuffled.get_frame_async(n) for n in order[:20]}  # in flight together
        for n, fut in futures.items():
            assert np.array_equal(frames_of_frame(fut.result()), sequential[n]), n
        for n in order[20:]:
            assert np.array_equal(frames_of_frame(shuffled.get_frame(n)), sequential[n]), n
    finally:
        core.num_threads = old


@pytest.mark.parametrize("threads", [8, 16])
def test_in_order_rendering_encodes_each_frame_once_at_many_threads(tiny_checkpoint: Path, threads: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Under fmParallel all threads wait for the network at once; the engine serves the lowest frame
    first, and the feature cache drops what the walk has left behind first, so past the first burst
    of requests (which reach the network in any order) each input frame is encoded once. Handed over
    in arbitrary order with a plain LRU, 80 frames at 8 threads took 185 encodings."""
    import gc

    from test_cache import encodings
    from vsedvr.filter import plugin
    from vsedvr.filter.engine import WindowEngine

    core = vs.core
    old = core.num_threads
    core.num_threads = threads
    computed: list[int] = []
    monkeypatch.setattr(plugin, "trace", lambda event, n: computed.append(n) if event == "compute" else None)
    try:
        clip = clips.moving_pattern(W, H, 60, seed=4)
        before = {id(o) for o in gc.get_objects() if type(o) is WindowEngine}
        out = vs.core.edvr.Restore(clip, model=str(tiny_checkpoint))
        engine = next(o for o in gc.get_objects() if type(o) is WindowEngine and id(o) not in before)
        encoded: list[int] = []
        put = engine.cache.put
        engine.cache.put = lambda key, item: (encoded.append(key[0]), put(key, item))
        for _ in out.frames():
            pass
    finally:
        core.num_threads = old
    assert sorted(set(encoded)) == list(range(60))
    again = sorted({n for n in encoded if encoded.count(n) > 1})
    assert all(n < threads + 2 for n in again), (again, computed)  # within the first burst's windows
    assert len(encoded) == engine.cache.misses == encodings(computed), computed  # as tests/test_cache.py replays


def test_frames_overlap_around_the_serial_network(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fmParallel: while one frame's result is written out, the next frame's network already runs
    (under fmParallelRequests VapourSynth ran one frame of the filter at a time, and the transfers
    could never overlap the computation). The network itself stays serial."""
    import threading
    import time

    from vsedvr.filter import plugin

    events: list[tuple[float, str, int]] = []
    lock = threading.Lock()

    def record(event: str, frame: int) -> None:
        with lock:
            events.append((time.perf_counter(), event, frame))

    core = vs.core
    old = core.num_threads
    core.num_threads = 8
    try:
        monkeypatch.setattr(plugin, "trace", record)
        clip = vs.core.edvr.Restore(clips.moving_pattern(64, 48, 24, seed=5), model=str(tiny_checkpoint))
        monkeypatch.setattr(plugin, "trace", None)
        for fut in [clip.get_frame_async(n) for n in range(24)]:
            fut.result()
    finally:
        core.num_threads = old
    spans: dict[tuple[str, int], list[float]] = {}
    for t, event, frame in sorted(events):
        kind = "compute" if event.startswith("compute") else "write"
        spans.setdefault((kind, frame), []).append(t)
    computes = sorted(v for (kind, _), v in spans.items() if kind == "compute")
    assert len(computes) == 24 and all(len(v) == 2 for v in spans.values()), spans
    # the network is serial: no two computations overlap
    assert all(a[1] <= b[0] for a, b in zip(computes, computes[1:])), computes
    overlaps = [(m, k) for (km, m), c in spans.items() if km == "compute"
                for (kk, k), w in spans.items() if kk == "write" and k != m and c[0] < w[1] and w[0] < c[1]]
    assert overlaps, "no frame's computation ran while another frame was being written"


def frames_of_frame(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)]).astype(np.float32)


def test_rgbh_in_rgbh_out(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    half = vs.core.resize.Point(source, format=vs.RGBH)
    out = vs.core.edvr.Restore(half, model=str(tiny_checkpoint))
    assert out.format.id == vs.RGBH
    single = frames_of(vs.core.edvr.Restore(vs.core.resize.Point(half, format=vs.RGBS), model=str(tiny_checkpoint))[2])
    # on the CPU RGBH is computed in fp32: the only difference is the final rounding to half
    np.testing.assert_allclose(frames_of(out[2]), single, atol=2e-3, rtol=0)


def test_python_helper_is_the_same_filter(tiny_checkpoint: Path, source: vs.VideoNode) -> None:
    a = frames_of(restore(source, model=tiny_checkpoint)[:3])
    b = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint))[:3])
    assert np.array_equal(a, b)


def test_vspipe_renders_what_python_renders(tmp_path: Path, tiny_checkpoint: Path, source: vs.VideoNode,
                                            vspipe: str, vs_env: dict[str, str]) -> None:
    script = tmp_path / "restore.vpy"
    script.write_text(textwrap.dedent(f"""\
        import sys
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        clip = clips.moving_pattern({W}, {H}, {LENGTH})
        clip = vs.core.edvr.Restore(clip, model={str(tiny_checkpoint)!r})
        clip.set_output()
        """))
    raw = tmp_path / "out.raw"
    done = subprocess.run([vspipe, str(script), str(raw)], env=vs_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # vspipe writes RGB planes in G, B, R order (ffmpeg's gbrpf32le)
    piped = np.fromfile(raw, dtype=np.float32).reshape(LENGTH, 3, 4 * H, 4 * W)[:, [2, 0, 1]]
    in_process = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint)))
    assert np.array_equal(piped, in_process)
    expected = reference(tiny_checkpoint, frames_of(source), "reflection_circle")
    for n in range(LENGTH):
        np.testing.assert_allclose(piped[n], expected[n], atol=1e-5, rtol=0)


def test_error_inside_python_becomes_a_frame_error(tiny_checkpoint: Path, source: vs.VideoNode,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vsedvr.filter.engine import WindowEngine

    out = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))

    def broken(self, window, sources):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(WindowEngine, "restore", broken)
    with pytest.raises(vs.Error) as err:
        out.get_frame(2)
    text = str(err.value)
    assert "Restore: frame 2" in text and "Traceback" in text and "RuntimeError: injected fault" in text
    monkeypatch.undo()
    assert np.asarray(out.get_frame(3)[0]).shape == (4 * H, 4 * W)  # the filter still works afterwards


@pytest.mark.slow(reason="a Python process exits mid-render, also compiled (inductor compiles on the exit path: "
                         "minutes on 2 cores); make test keeps exits with frames in flight through test_native_host's "
                         "exit-free host and test_robustness's vspipe exits")
@pytest.mark.parametrize("compile", [False, True])
def test_exit_with_frames_in_flight(tmp_path: Path, tiny_checkpoint: Path, compile: bool) -> None:
    """The interpreter exits (and the core is freed) while requests are pending: no crash, no hang,
    and no frame computed half-way through the teardown (compiled: a failed-tracing warning)."""
    # compiled: the size test_compiled_network_equals_uncompiled compiles, and compiled before the requests
    width, height, first = (16, 12, "clip.get_frame(0)") if compile else (32, 24, "")
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        clip = vs.core.edvr.Restore(clips.moving_pattern({width}, {height}, 60), model={str(tiny_checkpoint)!r},
                                    compile={compile})
        {first}
        pending = [clip.get_frame_async(n) for n in range(60)]
        print("requested", len(pending))
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "requested 60" in done.stdout
    assert "torch.compile failed" not in done.stderr


@pytest.mark.parametrize("kwargs, words", [
    ({"model": "no_such_model"}, ['"model"', "edvrm"]),
    ({"padding": "mirror"}, ['"padding"', "reflection_circle", "mirror"]),
    ({"device": "gpu"}, ['"device"', '"cuda:N"', "gpu"]),
    ({"scenechange": 2}, ['"scenechange"', "0 or 1"]),
    ({"compile": 3}, ['"compile"', "0 or 1"]),
])
def test_bad_arguments_name_the_parameter(tiny_checkpoint: Path, source: vs.VideoNode, kwargs: dict,
                                          words: list[str]) -> None:
    kwargs = {"model": str(tiny_checkpoint), **kwargs}
    with pytest.raises(vs.Error) as err:
        vs.core.edvr.Restore(source, **kwargs)
    text = str(err.value)
    assert text.startswith("Restore: "), text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.RGB24, vs.GRAY32, vs.RGB48])
def test_wrong_formats_show_the_conversion(source: vs.VideoNode, fmt: int) -> None:
    clip = vs.core.std.BlankClip(width=16, height=16, format=fmt, length=3)
    with pytest.raises(vs.Error) as err:
        vs.core.edvr.Restore(clip)
    text = str(err.value)
    assert vs.core.get_video_format(fmt).name in text
    assert "`clip = core.resize.Bicubic(clip, format=vs.RGBS" in text  # tests/test_suggested_fixes.py pastes it


def test_variable_size_is_refused(source: vs.VideoNode) -> None:
    mixed = vs.core.std.Splice([source[:2], vs.core.resize.Point(source[:2], width=W * 2, height=H * 2)],
                               mismatch=True)
    with pytest.raises(vs.Error, match="variable size"):
        vs.core.edvr.Restore(mixed)


def test_tiles_with_enough_overlap_equal_whole_frames(tiny_checkpoint: Path) -> None:
    clip = clips.moving_pattern(64, 48, 6, seed=5)
    whole = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint)))
    tiled = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint), tile=[32, 24], tile_overlap=32))
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)
    seams = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint), tile=[32, 24], tile_overlap=0))
    assert np.abs(seams - whole).max() > 1e-3  # without overlap the tiles' borders show


@pytest.mark.parametrize("kwargs, words", [
    ({"tile": [30, 24]}, ['"tile"', "multiples of 4", "[30, 24]"]),
    ({"tile": [-8, 8]}, ['"tile"', "positive"]),
    ({"tile": [8, 8, 8]}, ['"tile"', "[width, height]"]),
    ({"tile": [0]}, ['"tile"', "positive", "got [0]"]),  # the value as given, not as expanded
    ({"tile": [32, 32], "tile_overlap": 6}, ['"tile_overlap"', "multiple of 4"]),
    ({"tile_overlap": -4}, ['"tile_overlap"', "non-negative"]),
    ({"precision": "fp8"}, ['"precision"', "fp32", "fp8"]),
    ({"precision": "fp16", "device": "cpu"}, ['"precision"', "CUDA"]),
    ({"device": "cuda"}, ['"device"', "no CUDA"]),
])
def test_bad_tiling_and_precision_name_the_parameter(tiny_checkpoint: Path, source: vs.VideoNode, kwargs: dict,
                                                     words: list[str]) -> None:
    if torch.cuda.is_available() and kwargs.get("device") == "cuda":
        pytest.skip("this machine has CUDA")
    with pytest.raises(vs.Error) as err:
        vs.core.edvr.Restore(source, model=str(tiny_checkpoint), **kwargs)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_huge_deformable_offsets_are_reported_once(tmp_path: Path, source: vs.VideoNode,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The references warn when the mean |offset| exceeds 50 px; so does the filter (once)."""
    from vsedvr.nets import EDVR

    torch.manual_seed(1)
    net = EDVR(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)
    state = net.state_dict()
    path = tmp_path / "calm.pth"
    torch.save({"params": state}, path)
    state["pcd_align.cas_dcnpack.conv_offset.bias"][:36] = 80.0  # offsets of 80 px everywhere
    wild = tmp_path / "wild.pth"
    torch.save({"params": state}, wild)
    with caplog.at_level("WARNING", logger="vsedvr"):
        frames_of(vs.core.edvr.Restore(source, model=str(path))[:3])
        assert not [r for r in caplog.records if "deformable offset" in r.getMessage()]
        frames_of(vs.core.edvr.Restore(source, model=str(wild))[:3])
    warnings = [r.getMessage() for r in caplog.records if "deformable offset" in r.getMessage()]
    assert len(warnings) == 1 and "80 pixels" in warnings[0], warnings


def test_compiled_network_equals_uncompiled(tiny_checkpoint: Path, source: vs.VideoNode,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    with caplog.at_level("WARNING", logger="vsedvr"):
        compiled = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), compile=True))
    assert counters["stats"]["unique_graphs"] > graphs  # the network really went through torch.compile
    assert not [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    plain = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint)))
    np.testing.assert_allclose(compiled, plain, atol=1e-5, rtol=0)


def test_compile_failure_falls_back_to_the_plain_network(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """No working C++ compiler for inductor (common on Windows): a warning, then uncompiled output."""
    script = tmp_path / "fallback.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        import numpy as np
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        source = clips.moving_pattern(16, 12, 6)
        outputs = [vs.core.edvr.Restore(source, model={str(tiny_checkpoint)!r}, compile=c) for c in (True, False)]
        a, b = ([np.asarray(f[p]) for f in clip.frames() for p in range(3)] for clip in outputs)
        print("max diff", max(float(np.abs(x - y).max()) for x, y in zip(a, b)))
        """))
    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "torch.compile failed" in done.stderr and "running the network uncompiled" in done.stderr, done.stderr
    assert done.stderr.count("torch.compile failed") == 1, done.stderr
    assert float(done.stdout.split("max diff")[1]) <= 1e-5, done.stdout
