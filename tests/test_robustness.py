"""Odd clips, faults and load: nothing crashes, nothing hangs, nothing corrupts the model cache.

Real VapourSynth core, real vspipe, a real HTTP server on 127.0.0.1, OS-level faults (RLIMIT_FSIZE,
a full tmpfs). Every subprocess runs under a timeout (a hang fails the test) and its return code
must not be negative (a crash, i.e. a signal, fails the test).

The subprocess scenarios spend most of their time importing torch; to keep the module fast, the
autouse ``children`` fixture starts all the selected ones at once, before the first test; the
in-process tests run meanwhile, and each subprocess test (at the end) waits for its own child.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

import clips
from vsedvr import load_model
from vsedvr.filter.windows import PADDINGS, window_indices
from loopback_server import Server
from vsedvr.zoo import MODELS, ModelError, ModelSpec, fetch

TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT = 240  # seconds from the child's start (they run side by side); still running then = a hang


# ----------------------------------------------------------------------------- helpers

def frames_of(clip: vs.VideoNode) -> np.ndarray:
    """All frames as an (N, 3, H, W) float32 array."""
    return np.stack([plane_stack(f) for f in clip.frames()])


def plane_stack(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)]).astype(np.float32)


def clip_from_array(frames: np.ndarray, fmt: int = vs.RGBS) -> vs.VideoNode:
    """A clip whose frame n holds frames[n] (N, 3, H, W), samples exactly as given (NaN included)."""
    length, _, h, w = frames.shape
    dtype = np.float16 if fmt == vs.RGBH else np.float32
    data = frames.astype(dtype)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = data[n, p]
        return out

    blank = vs.core.std.BlankClip(width=w, height=h, length=length, format=fmt, fpsnum=24, fpsden=1)
    return vs.core.std.ModifyFrame(blank, blank, fill)


@functools.lru_cache(maxsize=2)
def _network(checkpoint: Path) -> torch.nn.Module:
    return load_model(checkpoint)


def reference(checkpoint: Path, frames: np.ndarray, padding: str = "reflection_circle") -> np.ndarray:
    """The network's own forward() on each output frame's window (it pads odd sizes itself)."""
    net = _network(checkpoint)
    out = []
    with torch.inference_mode():
        for n in range(len(frames)):
            idx = window_indices(n, net.num_frames, 0, len(frames) - 1, padding)
            out.append(net(torch.from_numpy(frames[idx])[None])[0].numpy())
    return np.stack(out)


def nan_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]


# ----------------------------------------------------------------------------- odd clips

@pytest.mark.parametrize("width, height", [(1, 1), (3, 5), (2, 17), (13, 10), (1024, 4), (4, 1024)])
def test_tiny_odd_and_extreme_frame_sizes(tiny_checkpoint: Path, width: int, height: int) -> None:
    length = 2 if max(width, height) > 100 else 3
    source = clips.moving_pattern(width, height, length, seed=width * 100 + height)
    out = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))
    assert (out.width, out.height, out.num_frames) == (4 * width, 4 * height, length)
    got = frames_of(out)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(tiny_checkpoint, frames_of(source)), atol=1e-4, rtol=0)
    if max(width, height) < 100:  # tiles larger than, equal to and smaller than the frame: same size, finite
        tiled = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), tile=[4, 8], tile_overlap=4)[1])
        assert tiled.shape == (1, 3, 4 * height, 4 * width) and np.isfinite(tiled).all()


@pytest.mark.parametrize("padding", PADDINGS)
def test_one_and_two_frame_clips_in_every_padding(tiny_checkpoint: Path, padding: str) -> None:
    source = clips.moving_pattern(13, 10, 2, seed=7)
    for length in (1, 2):
        clip = source[:length]
        got = frames_of(vs.core.edvr.Restore(clip, model=str(tiny_checkpoint), padding=padding))
        np.testing.assert_allclose(got, reference(tiny_checkpoint, frames_of(clip), padding), atol=1e-4, rtol=0)
    if padding != "reflection_circle":
        return
    # both frames of a 2-frame clip marked as cuts: two one-frame scenes, each restored from itself alone
    cut = vs.core.std.SetFrameProps(source, _SceneChangePrev=1, _SceneChangeNext=1)
    got = frames_of(vs.core.edvr.Restore(cut, model=str(tiny_checkpoint), padding=padding))
    for n in range(2):
        alone = reference(tiny_checkpoint, frames_of(source[n]), padding)[0]
        np.testing.assert_allclose(got[n], alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", [vs.RGBS, vs.RGBH], ids=["RGBS", "RGBH"])
def test_nan_and_inf_are_replaced_before_inference(tiny_checkpoint: Path, fmt: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    clean = frames_of(clips.moving_pattern(16, 12, 7, seed=11))
    dirty = clean.copy()
    dirty[1, 0, 3, 4] = np.nan
    dirty[2, 1, :, 5] = np.inf
    dirty[3, 2, 7, :] = -np.inf
    dirty[4, 1] = np.nan  # a whole plane
    dirty[0, :, 0, 0] = [np.nan, np.inf, -np.inf]  # the first frame, read by the mirrored windows
    dirty[6, 0, -1, -1] = -np.nan
    sanitized = np.nan_to_num(dirty, nan=0.0, posinf=1.0, neginf=0.0)
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        restored = vs.core.edvr.Restore(clip_from_array(dirty, fmt), model=str(tiny_checkpoint))
        got = frames_of(restored)
        assert len(nan_warnings(caplog)) == 1, nan_warnings(caplog)  # once per filter instance
        again = frames_of(restored[::-1])  # every frame again, in another order: no second warning
        assert len(nan_warnings(caplog)) == 1
        expected = frames_of(vs.core.edvr.Restore(clip_from_array(sanitized, fmt), model=str(tiny_checkpoint)))
        assert len(nan_warnings(caplog)) == 1  # the sanitized clip has nothing to warn about
        frames_of(vs.core.edvr.Restore(clip_from_array(dirty, fmt), model=str(tiny_checkpoint))[1])
        assert len(nan_warnings(caplog)) == 2  # a new instance warns again
    assert np.isfinite(got).all()
    assert np.array_equal(got, expected)
    assert np.array_equal(again[::-1], expected)
    assert "replaced" in nan_warnings(caplog)[0]


def _set_flag(value: object) -> vs.VideoNode:
    """The 16x12x5 test clip with _SceneChangePrev, _SceneChangeNext and Other = value on frame 2."""
    source = clips.moving_pattern(16, 12, 5, seed=2)

    def tag(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        if n != 2:
            return f
        out = f.copy()
        out.props["_SceneChangePrev"] = value
        out.props["_SceneChangeNext"] = value
        out.props["Other"] = value
        return out

    return vs.core.std.ModifyFrame(source, source, tag)


def test_scene_props_of_wrong_types_are_ignored(tiny_checkpoint: Path) -> None:
    """Frame 2 carries the odd props; its own output shows whether either flag was taken as a cut."""
    plain = frames_of(vs.core.edvr.Restore(clips.moving_pattern(16, 12, 5, seed=2), model=str(tiny_checkpoint))[2])
    cut = frames_of(vs.core.edvr.Restore(_set_flag(1), model=str(tiny_checkpoint))[2])
    assert not np.array_equal(cut, plain)  # an integer 1 does cut: the comparison below can see a cut
    blank = vs.core.std.BlankClip(width=4, height=4, format=vs.GRAY8, length=1)
    # (VapourSynth refuses nodes and functions as frame props, so those cannot reach the filter)
    odd_values: list[object] = [1.0, [1.0, 2.0], "1", b"\x01", "", blank.get_frame(0)]
    for value in odd_values:
        out = vs.core.edvr.Restore(_set_flag(value), model=str(tiny_checkpoint))
        got = frames_of(out[2])
        assert np.array_equal(got, plain), type(value)
        assert "Other" in out.get_frame(2).props  # the centre frame's props travel, whatever their type
    # integers of unusual values and integer arrays are integers: they may cut, but must not break
    for value in [2**63 - 1, -1, 0, [1, 0], [0, 1]]:
        got = frames_of(vs.core.edvr.Restore(_set_flag(value), model=str(tiny_checkpoint))[2])
        assert got.shape == plain.shape and np.isfinite(got).all()
        if value == 0 or value == [0, 1]:  # 0 (the first element of an array) is "no cut"
            assert np.array_equal(got, plain), value


# ----------------------------------------------------------------------------- load

def test_random_access_at_8_threads_over_200_frames(tiny_checkpoint: Path) -> None:
    length = 200
    source = clips.moving_pattern(16, 12, length, seed=9)
    core = vs.core
    old = core.num_threads
    try:
        core.num_threads = 1
        sequential = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint)))
        core.num_threads = 8
        shuffled = vs.core.edvr.Restore(source, model=str(tiny_checkpoint))
        rng = random.Random(200)
        order = list(range(length))
        rng.shuffle(order)
        # random jumps, interleaved with short sequential runs and revisits
        for start in rng.sample(range(length - 8), 3):
            order[rng.randrange(len(order)):0] = list(range(start, start + 8))
        order += rng.choices(range(length), k=8)
        in_flight: list[tuple[int, object]] = []
        checked = 0
        for n in order:
            in_flight.append((n, shuffled.get_frame_async(n)))
            if len(in_flight) >= 16:
                m, fut = in_flight.pop(0)
                assert np.array_equal(plane_stack(fut.result()), sequential[m]), m
                checked += 1
        for m, fut in in_flight:
            assert np.array_equal(plane_stack(fut.result()), sequential[m]), m
            checked += 1
        assert checked == len(order) and len(set(order)) == length
    finally:
        core.num_threads = old


# ----------------------------------------------------------------------------- model cache: a server

PAYLOAD = np.random.default_rng(42).bytes(600_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"robust-{SHA[:10]}.pth"


def spec_for(server: Server) -> ModelSpec:
    return ModelSpec(name="robust", task="sr", scale=4, num_frames=3, arch={"num_frame": 3}, filename=NAME,
                     url=f"{server.base}/{NAME}")


def cache_contents(folder: Path) -> list[str]:
    """Everything but lock files (which are kept on purpose)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


# ----------------------------------------------------------------------------- child processes

class Child:
    """A subprocess started now and judged later: output to files (no pipe can fill up and block it)."""

    def __init__(self, cmd: list[str], env: dict[str, str], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.cmd, self.folder = cmd, folder
        self.started = time.monotonic()
        with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         text=True, cwd=folder)

    def result(self) -> subprocess.CompletedProcess[str]:
        """Waits for the child; a timeout (hang) or a negative return code (a signal: crash) fails the test."""
        left = CHILD_TIMEOUT - (time.monotonic() - self.started)
        try:
            self.proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"hang: {self.cmd[:3]} still running after {CHILD_TIMEOUT} s\n{self.stderr[-3000:]}")
        done = subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.stdout, self.stderr)
        assert done.returncode >= 0, f"crash: killed by signal {-done.returncode}\n{done.stderr[-3000:]}"
        return done

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Children(dict):
    """test name -> Child, plus the HTTP server the download scenarios use."""

    server: Server


def vpy(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(f"import sys\nimport vapoursynth as vs\nsys.path.insert(0, {str(TESTS)!r})\nimport clips\n"
                      + textwrap.dedent(body))
    return script


DISK_FULL_CHILD = """
import json, os, resource, signal, sys
import vapoursynth as vs
from vsedvr.zoo import ModelError, ModelSpec, fetch
base, name, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = ModelSpec(name="robust", task="sr", scale=4, num_frames=3, arch={"num_frame": 3}, filename=name,
                 url=base + name)
clip = vs.core.std.BlankClip(width=8, height=8, format=vs.RGBS, length=1)
folder = os.environ["VSEDVR_HOME"]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
result = {}
try:
    fetch(spec, progress=False)
    result["fetch"] = "fetched"
except ModelError as e:
    result["fetch"] = str(e)
result["after fetch"] = sorted(os.listdir(folder))
try:
    vs.core.edvr.Restore(clip, model="edvrm")
    result["restore"] = "restored"
except vs.Error as e:
    result["restore"] = str(e)
result["after restore"] = sorted(os.listdir(folder))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
result["retry"] = str(fetch(spec, progress=False))
print("RESULT " + json.dumps(result), flush=True)
"""

CORE_FREED_CHILD = """
import sys, threading
import vapoursynth as vs
sys.path.insert(0, sys.argv[2])
import clips
model = sys.argv[1]


class Policy(vs.EnvironmentPolicy):
    def on_policy_registered(self, api):
        self.api, self.env = api, None

    def on_policy_cleared(self):
        self.env = None

    def get_current_environment(self):
        return self.env

    def set_environment(self, env):
        old, self.env = self.env, env
        return old


policy = Policy()
vs.register_policy(policy)


def requests_then_free(from_callback):
    policy.env = env = policy.api.create_environment()
    vs.core.num_threads = 4
    clip = vs.core.edvr.Restore(clips.moving_pattern(16, 12, 12), model=model)
    futures = [clip.get_frame_async(n) for n in range(12)]
    del clip
    if from_callback:  # freed from inside a frame callback (the binding defers it to a helper thread)
        freed = threading.Event()
        futures[0].add_done_callback(lambda f: (policy.api.destroy_environment(env), freed.set()))
        assert freed.wait(60)
    else:
        policy.api.destroy_environment(env)  # the core is freed with the requests in flight
    policy.env = None
    outcome = {"frames": 0, "errors": 0}
    for f in futures:
        try:
            f.result(timeout=60)
            outcome["frames"] += 1
        except vs.Error:
            outcome["errors"] += 1
    print("freed", from_callback, outcome, flush=True)


requests_then_free(False)
requests_then_free(True)
policy.env = policy.api.create_environment()  # a fresh core still runs the filter
clip = vs.core.edvr.Restore(clips.moving_pattern(16, 12, 3), model=model)
print("fresh core", clip.get_frame(1).width, flush=True)
policy.api.destroy_environment(policy.env)
"""


def _disk_full(folder: Path, ckpt: Path, env: dict[str, str], vspipe: str, server: Server) -> tuple[list, dict]:
    env = dict(env, VSEDVR_HOME=str(folder / "cache"), VSEDVR_BASE_URL=server.base + "/", PYTHONDONTWRITEBYTECODE="1")
    return [sys.executable, "-c", DISK_FULL_CHILD, server.base + "/", NAME, str(64 * 1024)], env


def _core_freed(folder: Path, ckpt: Path, env: dict[str, str], vspipe: str, server: Server) -> tuple[list, dict]:
    return [sys.executable, "-c", CORE_FREED_CHILD, str(ckpt), str(TESTS)], env


def _vspipe_pending(folder: Path, ckpt: Path, env: dict[str, str], vspipe: str, server: Server) -> tuple[list, dict]:
    script = vpy(folder, "pending.vpy", f"""\
        vs.core.num_threads = 8
        clip = vs.core.edvr.Restore(clips.moving_pattern(16, 12, 24), model={str(ckpt)!r})
        pending = [clip.get_frame_async(n) for n in range(24)]
        clip.set_output()
        """)
    return [vspipe, "--end", "1", str(script), str(folder / "out.raw")], env


def _vspipe_raises(folder: Path, ckpt: Path, env: dict[str, str], vspipe: str, server: Server) -> tuple[list, dict]:
    script = vpy(folder, "raises.vpy", f"""\
        clip = vs.core.edvr.Restore(clips.moving_pattern(16, 12, 24), model={str(ckpt)!r})
        pending = [clip.get_frame_async(n) for n in range(24)]
        raise RuntimeError("the script gives up")
        """)
    return [vspipe, str(script), "--"], env


def _vspipe_fault(folder: Path, ckpt: Path, env: dict[str, str], vspipe: str, server: Server) -> tuple[list, dict]:
    script = vpy(folder, "fault.vpy", f"""\
        from vsedvr.filter.engine import WindowEngine
        real = WindowEngine.restore

        def faulty(self, window, sources):
            if window[len(window) // 2] == 5:
                raise ZeroDivisionError("injected fault in frame 5")
            return real(self, window, sources)

        WindowEngine.restore = faulty
        vs.core.num_threads = 8
        clip = vs.core.edvr.Restore(clips.moving_pattern(16, 12, 24), model={str(ckpt)!r})
        clip.set_output()
        """)
    return [vspipe, "-r", "8", str(script), str(folder / "out.raw")], env


#: test function name -> how to start its child
SCENARIOS: dict[str, Callable[..., tuple[list, dict]]] = {
    "test_file_size_limit_while_caching_leaves_nothing_behind": _disk_full,
    "test_core_freed_with_requests_in_flight": _core_freed,
    "test_vspipe_exits_with_frames_pending": _vspipe_pending,
    "test_vspipe_script_that_raises_after_requesting_frames": _vspipe_raises,
    "test_exception_inside_python_side_under_vspipe": _vspipe_fault,
}


@pytest.fixture(scope="module", autouse=True)
def children(request: pytest.FixtureRequest, tiny_checkpoint: Path, vs_env: dict[str, str], vspipe: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    """Starts the child of every selected scenario at once; stops any left running at the end."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items
                if getattr(item, "module", None) is request.module}
    started = Children()
    started.server = Server(default=PAYLOAD)
    root = tmp_path_factory.mktemp("children")
    try:
        for name, build in SCENARIOS.items():
            if name in selected:
                folder = root / name
                folder.mkdir()
                cmd, env = build(folder, tiny_checkpoint, vs_env, vspipe, started.server)
                started[name] = Child(cmd, env, folder)
        yield started
    finally:
        for child in started.values():
            child.stop()
        started.server.close()


# ----------------------------------------------------------------------------- model cache faults

def test_file_size_limit_while_caching_leaves_nothing_behind(children: Children) -> None:
    """RLIMIT_FSIZE makes the download's writes fail (EFBIG) the way a full disk would."""
    child = children["test_file_size_limit_while_caching_leaves_nothing_behind"]
    done = child.result()
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    home = child.folder / "cache"
    assert NAME in result["fetch"] and "File too large" in result["fetch"], result["fetch"]
    assert str(home / NAME) in result["fetch"]  # and where to place it by hand
    edvrm = MODELS["edvrm"].filename
    assert result["restore"].startswith('Restore: "model"'), result["restore"]
    assert edvrm in result["restore"] and "File too large" in result["restore"], result["restore"]
    for key in ("after fetch", "after restore"):  # no .part file, nothing under the final name
        assert all(n.endswith(".lock") for n in result[key]), (key, result[key])
    assert result["retry"] == str(home / NAME)
    assert cache_contents(home) == [NAME] and (home / NAME).read_bytes() == PAYLOAD


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                           text=True, timeout=30)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {tried.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_full_disk_while_caching_leaves_nothing_behind(children: Children, small_disk: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    home = small_disk / "cache"
    home.mkdir()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 700_000)  # ~324 KiB left: the 600 KB download cannot fit
    server = children.server
    monkeypatch.setenv("VSEDVR_HOME", str(home))
    monkeypatch.setenv("VSEDVR_BASE_URL", server.base)
    spec = spec_for(server)
    with pytest.raises(ModelError) as err:
        fetch(spec, progress=False)
    assert NAME in str(err.value) and "No space left on device" in str(err.value), str(err.value)
    assert cache_contents(home) == []
    with pytest.raises(vs.Error) as verr:  # the same through the plugin, for a zoo model
        vs.core.edvr.Restore(vs.core.std.BlankClip(width=8, height=8, format=vs.RGBS, length=1), model="edvrm")
    text = str(verr.value)
    assert text.startswith('Restore: "model"') and MODELS["edvrm"].filename in text and "No space left" in text
    assert cache_contents(home) == []
    filler.unlink()  # the user makes room and tries again
    assert fetch(spec, progress=False).read_bytes() == PAYLOAD
    assert cache_contents(home) == [NAME]


# ----------------------------------------------------------------------------- shutdown and errors

def test_core_freed_with_requests_in_flight(children: Children) -> None:
    """A core freed (destroy_environment) with 12 requests in flight, also from a frame callback."""
    done = children["test_core_freed_with_requests_in_flight"].result()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for from_callback in ("False", "True"):  # every request was answered: a frame or an error, none lost
        line = next((x for x in lines if x.startswith(f"freed {from_callback} ")), None)
        assert line is not None, done.stdout
        outcome = json.loads(line.split(" ", 2)[2].replace("'", '"'))
        assert outcome["frames"] + outcome["errors"] == 12, line
    assert "fresh core 64" in done.stdout, done.stdout


def test_vspipe_exits_with_frames_pending(children: Children) -> None:
    """The script asks for every frame itself, vspipe outputs two and exits: clean exit, no hang."""
    child = children["test_vspipe_exits_with_frames_pending"]
    done = child.result()
    assert done.returncode == 0, done.stderr[-3000:]
    assert (child.folder / "out.raw").stat().st_size == 2 * 3 * 48 * 64 * 4  # two frames of 64x48 RGBS


def test_vspipe_script_that_raises_after_requesting_frames(children: Children) -> None:
    done = children["test_vspipe_script_that_raises_after_requesting_frames"].result()
    assert done.returncode > 0
    assert "Traceback" in done.stderr and "RuntimeError: the script gives up" in done.stderr, done.stderr[-3000:]


def test_exception_inside_python_side_under_vspipe(children: Children) -> None:
    """A fault injected into the engine (frame 5 only, 8 threads): vspipe fails, says why, does not hang."""
    done = children["test_exception_inside_python_side_under_vspipe"].result()
    assert done.returncode > 0, done.stderr[-3000:]
    for words in ("Restore: frame 5", "Traceback", "ZeroDivisionError: injected fault in frame 5"):
        assert words in done.stderr, done.stderr[-3000:]
