"""``vsedvr render``: segments rendered by real worker processes (each evaluates the script once,
as vspipe does, and writes VapourSynth's own yuv4mpeg into real ffmpeg), joined by real ffmpeg, on a
local pool and on a real local Ray cluster, give the frames of one plain vspipe render; faults (a
worker killed mid-segment, a damaged segment file, the driver interrupted) end with the same frames
and redo only the segments they hit.

Frames are compared with ffmpeg's framemd5 (MD5 of each decoded frame), not with vsedvr's own
hashing. Faults are injected from inside the script through environment variables, which are not
part of the render plan (so the re-run is the same plan): RENDER_TEST_KILL=FRAME:MARKER[:ray-worker]
kills the worker process (or the Ray worker above it) when FRAME is first requested;
RENDER_TEST_SLEEP slows every frame down; RENDER_TEST_SLOW_START=MARKER:SECONDS makes every worker
but the first ready SECONDS later; RENDER_TEST_BAD_WORKER=MARKER makes the first worker fail every
frame after 2 (frame 0, the canary, reads 0-2); RENDER_TEST_OFFSET=N changes the frames (another pipeline), RENDER_TEST_ODD_WORKER=
MARKER those of the first worker only; RENDER_TEST_STALL / _STOP / _UNWRITABLE / _BLOCK=FRAME:PATH, when FRAME is first requested,
hang the frame forever, SIGSTOP the worker, replace the folder PATH by a file, make a folder PATH.

The multi-node Ray cluster tests are in tests/test_render_cluster.py.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
VSEDVR = [sys.executable, "-m", "vsedvr"]

FAULTS = '''
import os, signal, time
def first(marker):
    """True in the first process to get here (the marker file created atomically)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
slow_start = os.environ.get("RENDER_TEST_SLOW_START")
if slow_start:  # every worker but the first to evaluate the script is ready SECONDS later
    marker, seconds = slow_start.split(":")
    if not first(marker):
        time.sleep(float(seconds))
OFFSET = int(os.environ.get("RENDER_TEST_OFFSET", "0"))  # added to the frames: another pipeline
odd = os.environ.get("RENDER_TEST_ODD_WORKER")
if odd and first(odd):  # the first worker to evaluate the script renders other frames
    OFFSET += 1
bad = os.environ.get("RENDER_TEST_BAD_WORKER")
if bad and first(bad + ".lock"):  # the first worker to evaluate the script fails every frame
    with open(bad, "w") as f:
        f.write(str(os.getpid()))
def once(name, n):
    """The PATH of $NAME=FRAME:PATH when frame FRAME is first requested (PATH + '.done' marks it)."""
    value = os.environ.get(name)
    if value:
        frame, path = value.split(":", 1)
        if n == int(frame) and not os.path.exists(path + ".done"):
            open(path + ".done", "w").close()
            return path
def fault(n):
    if bad and n > 2 and open(bad).read() == str(os.getpid()):  # frame 0 (the canary: 0-2) works
        raise RuntimeError(f"this worker cannot render (pid {os.getpid()})")
    if once("RENDER_TEST_STALL", n):
        while True:  # a frame that never comes (a hung GPU, an NFS read in D state)
            time.sleep(60)
    if once("RENDER_TEST_STOP", n):
        os.kill(os.getpid(), signal.SIGSTOP)
    unwritable = once("RENDER_TEST_UNWRITABLE", n)
    if unwritable:  # the work folder's attempts/ gone, a file in its place: no worker can write there
        os.rename(unwritable, unwritable + ".moved")
        open(unwritable, "w").close()
    blocked = once("RENDER_TEST_BLOCK", n)
    if blocked:  # a folder where a segment's file must go: its rename fails with an OSError
        os.mkdir(blocked)
    kill = os.environ.get("RENDER_TEST_KILL")
    if kill:
        frame, marker, *who = kill.split(":")
        if n == int(frame) and not os.path.exists(marker):
            open(marker, "w").close()
            pid = os.getpid()
            while who == ["ray-worker"] and pid > 1:  # up the parents to the Ray worker process
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                if pid != os.getpid() and (cmdline.startswith(b"ray::") or b"default_worker" in cmdline):
                    break
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            os.kill(pid, signal.SIGKILL)
    time.sleep(float(os.environ.get("RENDER_TEST_SLEEP", "0")))
'''

# 24 frames of 32x24 noise, a scene cut between frames 7 and 8, EDVR x4 (5-frame windows). With
# --segment 8 the boundaries are at the cut (frame 8) and inside a window (frame 16: its window
# 14..18 reads two frames of the previous segment).
EDVR_SCRIPT = FAULTS + '''
import numpy as np
import vapoursynth as vs
core = vs.core
frames = np.random.default_rng(0).random((24, 3, 24, 32), dtype=np.float32)
blank = core.std.BlankClip(width=32, height=24, length=24, format=vs.RGBS, fpsnum=24, fpsden=1)
def fill(n, f):
    fault(n)
    out = f.copy()
    for p in range(3):
        np.asarray(out[p])[:] = frames[n, p]
    out.props["_SceneChangePrev"] = int(n == 8)
    out.props["_SceneChangeNext"] = int(n == 7)
    return out
clip = core.edvr.Restore(core.std.ModifyFrame(blank, blank, fill), model="edvr_demo", device="cpu")
core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="709").set_output()
'''

# Without torch, for the fault tests: 40 frames of noise averaged over a 5-frame window.
FAST_SCRIPT = FAULTS + '''
import numpy as np
import vapoursynth as vs
core = vs.core
noise = np.random.default_rng(1).integers(0, 256, (40, 48, 64), dtype=np.uint8)
blank = core.std.BlankClip(width=64, height=48, length=40, format=vs.YUV420P8, fpsnum=25, fpsden=1)
def fill(n, f):
    fault(n)
    out = f.copy()
    np.asarray(out[0])[:] = noise[n] + OFFSET
    return out
clip = core.std.ModifyFrame(blank, blank, fill)
core.std.AverageFrames(clip, weights=[1, 2, 3, 2, 1]).set_output()
'''


def framemd5(path: Path) -> list[str]:
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def plain_render(script: Path, vspipe: str, env: dict[str, str]) -> list[str]:
    y4m = script.with_suffix(".plain.y4m")
    subprocess.run([vspipe, "-c", "y4m", str(script), str(y4m)], env=env, check=True, capture_output=True)
    return framemd5(y4m)


def attempts(work: Path) -> dict[int, int]:
    """How many times each segment was started (over all runs in this work folder)."""
    return {int(p.name): len(p.read_text().splitlines()) for p in sorted((work / "attempts").iterdir())}


def manifest(work: Path) -> dict:
    return json.loads((work / "manifest.json").read_text())


def render_cli(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*VSEDVR, "render", *args, "--ffmpeg", FFMPEG, "--progress-interval", "2"],
                          env=env, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def edvr_script(tmp_path_factory: pytest.TempPathFactory, vspipe: str, vs_env: dict[str, str]) -> tuple[Path, list[str]]:
    script = tmp_path_factory.mktemp("edvr") / "edvr.vpy"
    script.write_text(EDVR_SCRIPT)
    return script, plain_render(script, vspipe, dict(vs_env, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def fast_script(tmp_path_factory: pytest.TempPathFactory, vspipe: str, vs_env: dict[str, str]) -> tuple[Path, list[str]]:
    script = tmp_path_factory.mktemp("fast") / "fast.vpy"
    script.write_text(FAST_SCRIPT)
    return script, plain_render(script, vspipe, vs_env)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every Ray test of the session (starting one costs ~8 s)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------ identical


@pytest.mark.slow(reason="EDVR through a local pool and through one vspipe: two full renders")
def test_local_pool_identical_to_one_vspipe(edvr_script, vs_env, tmp_path):
    script, plain = edvr_script
    out = tmp_path / "out.mkv"
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "8", "--keep", env=vs_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # progress and notes go to stderr only
    assert "24/24 frames" in proc.stderr and "3 segments of 8 frames" in proc.stderr
    assert len(plain) == 24 and len(set(plain)) == 24
    assert framemd5(out) == plain
    work = tmp_path / "out.mkv.parts"
    assert [tuple(r) for r in manifest(work)["plan"]["ranges"]] == [(0, 7), (8, 15), (16, 23)]
    assert attempts(work) == {0: 1, 1: 1, 2: 1}
    for i, (start, end) in enumerate([(0, 7), (8, 15), (16, 23)]):  # each segment alone is vspipe's frames
        assert framemd5(work / f"seg-{i:05d}.mkv") == plain[start:end + 1]

    again = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "8", env=vs_env)
    assert again.returncode == 0, again.stderr
    assert "already rendered and verified" in again.stderr
    assert attempts(work) == {0: 1, 1: 1, 2: 1}


@pytest.mark.slow(reason="starts a local Ray cluster (tens of seconds) and renders EDVR twice")
def test_ray_identical_with_a_worker_killed(ray_cluster, edvr_script, vs_env, tmp_path):
    """One Ray actor per CPU slot; the actor rendering frame 11 dies mid-segment, is replaced, and the
    segment is rendered again."""
    from vsedvr.render import RayPool, render

    script, plain = edvr_script
    out = tmp_path / "out.mkv"
    env = dict(vs_env, RENDER_TEST_KILL=f"11:{tmp_path / 'killed'}:ray-worker")
    messages: list[str] = []
    summary = render(script, out, segment=8, pool=RayPool(retries=2, env=env), ffmpeg=FFMPEG,
                     log=messages.append, progress_interval=2)
    assert (tmp_path / "killed").exists()
    assert summary["rendered"] == [0, 1, 2]
    assert framemd5(out) == plain
    # the segment whose worker died twice started (Restore may ask for frame 11 ahead, from segment 0)
    assert sorted(attempts(tmp_path / "out.mkv.parts").values()) == [1, 1, 2]
    assert any("1 retried" in m for m in messages) and any("starting another" in m for m in messages), messages


# ---------------------------------------------------------------------------------- faults


@pytest.mark.slow(reason="a worker killed and its segment retried: several renders "
                         "(test_colour_tags_from_the_frame_properties keeps a local-pool render in make test)")
def test_worker_killed_mid_segment_is_retried(fast_script, vs_env, tmp_path):
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    env = dict(vs_env, RENDER_TEST_KILL=f"25:{tmp_path / 'killed'}")
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "10", env=env)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "segment 2 (frames 20-29): the worker" in x)
    assert "was killed by SIGKILL" in line and "retrying" in line
    assert "starting another" in proc.stderr  # the dead worker was replaced
    assert framemd5(out) == plain
    work = tmp_path / "out.mkv.parts"
    tried = attempts(work)
    assert tried[2] == 2 and tried[3] == 1, tried
    # a segment the killed worker had rendered but not yet checked (checks overlap the next segment)
    # is rendered again: how many depends on the machine's load (CI's run saw segment 0 twice)
    assert tried[0] in (1, 2) and tried[1] in (1, 2), tried
    assert not list(work.glob("seg-*.mkv"))  # removed once the result was verified (no --keep)


def attempt_pids(work: Path) -> dict[int, list[str]]:
    """The worker process (pid) of each attempt at each segment."""
    return {int(p.name): [line.split()[2] for line in p.read_text().splitlines()]
            for p in sorted((work / "attempts").iterdir())}


@pytest.mark.slow(reason="two workers render two 5-second segments side by side")
def test_no_segment_waits_for_a_busy_worker_while_another_is_idle(fast_script, vs_env, tmp_path):
    """The second worker becomes ready a second after the first, while the first renders segment
    0: segment 1 goes to it, not into the first one's queue (issue 36: --workers 2 --segment 48 on
    96 frames ran serially)."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    env = dict(vs_env, RENDER_TEST_SLEEP="0.25", RENDER_TEST_SLOW_START=f"{tmp_path / 'first'}:1")
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "20", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pids = attempt_pids(tmp_path / "out.mkv.parts")
    assert len(pids[0]) == len(pids[1]) == 1
    assert pids[0] != pids[1], f"both segments rendered by one worker while the other was idle: {pids}"
    assert framemd5(out) == plain


# ------------------------------------------------------------------ hangs and loops (issue 36)


@pytest.mark.slow(reason="two workers stall (one hangs in a frame, one is SIGSTOPped): 2 x the 3-s watchdog")
def test_stalled_workers_are_killed_and_their_segments_retried(fast_script, vs_env, tmp_path):
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    env = dict(vs_env, RENDER_TEST_STALL=f"15:{tmp_path / 'stall'}", RENDER_TEST_STOP=f"35:{tmp_path / 'stop'}")
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "10", "--stall-timeout", "3",
                      env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    stalled = [line for line in proc.stderr.splitlines() if "stalled: no new frame or check result" in line]
    assert len(stalled) >= 2, proc.stderr
    assert any("segment 1 (frames 10-19)" in line and "retrying" in line for line in stalled), proc.stderr
    assert any("segment 3 (frames 30-39)" in line and "retrying" in line for line in stalled), proc.stderr
    assert all(f"host {os.uname().nodename} (CPU)" in line for line in stalled)
    tried = attempts(tmp_path / "out.mkv.parts")
    assert tried[1] == 2 and tried[3] == 2, tried
    # a segment the stopped worker had rendered but not yet checked (checks overlap the next
    # segment) is rendered again: how many depends on the machine's load
    assert tried[0] in (1, 2) and tried[2] in (1, 2), tried
    assert framemd5(out) == plain


@pytest.mark.slow(reason="renders 8 segments on two workers, one failing every frame")
def test_a_failing_worker_gets_no_segment_back_and_is_retired(fast_script, vs_env, tmp_path):
    """A black hole: one worker fails every segment at once. Its failed segments go to the other
    worker (never straight back to it), it is retired after 3 failures in a row, and the render
    ends with the frames of one vspipe, with --retries 1."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    marker = tmp_path / "bad"
    env = dict(vs_env, RENDER_TEST_SLEEP="0.05", RENDER_TEST_BAD_WORKER=str(marker))
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "5", "--retries", "1",
                      env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert framemd5(out) == plain
    bad_pid = marker.read_text()
    pids = attempt_pids(tmp_path / "out.mkv.parts")
    assert all(p.count(bad_pid) <= 1 for p in pids.values()), pids  # never the same segment twice
    assert sum(p.count(bad_pid) for p in pids.values()) == 3, pids  # retired after its third failure
    retired = [line for line in proc.stderr.splitlines() if "retiring the worker on" in line]
    assert len(retired) == 1 and f"host {os.uname().nodename} (CPU)" in retired[0], proc.stderr
    assert "3 segments in a row failed there" in retired[0] and "this worker cannot render" in retired[0]


@pytest.mark.slow(reason="a render whose work folder becomes unwritable: every later attempt fails")
def test_an_unwritable_work_folder_ends_the_render_instead_of_looping(fast_script, vs_env, tmp_path):
    """Workers that cannot write into the work folder (its attempts/ replaced by a file) used to
    crash before "started" and be replaced without end; now each attempt fails, naming the folder,
    the host and the device, and the render ends."""
    script, _ = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    env = dict(vs_env, RENDER_TEST_UNWRITABLE=f"12:{work / 'attempts'}", RENDER_TEST_SLEEP="0.05")
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "10", "--retries", "1",
                      env=env, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "segments failed" in proc.stderr and "the others are kept" in proc.stderr
    assert f"on host {os.uname().nodename} (CPU): NotADirectoryError" in proc.stderr
    assert f"the work folder {work} must exist and be writable on every worker" in proc.stderr
    assert proc.stderr.count("starting another") == 0
    assert "Traceback" not in proc.stderr


@pytest.mark.slow(reason="a segment's check fails with an OSError, 3 attempts")
def test_an_os_error_in_a_check_fails_the_segment_instead_of_hanging(fast_script, vs_env, tmp_path):
    """The worker's checking thread used to die on anything but a RenderError (here the rename of a
    verified segment onto a folder), and the driver waited for it forever."""
    script, _ = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    env = dict(vs_env, RENDER_TEST_BLOCK=f"12:{work / 'seg-00001.mkv'}")
    proc = render_cli(str(script), "-o", str(out), "--workers", "1", "--segment", "10", env=env, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "1 of 4 segments failed (1)" in proc.stderr
    assert f"segment 1 on host {os.uname().nodename} (CPU): IsADirectoryError" in proc.stderr
    assert attempts(work)[1] == 3


def _worker_events(job: dict, env: dict[str, str], prefix: list[str] = ()) -> list[dict]:
    """Starts a real worker process (under ``prefix``), gives it ``job``, returns its events until
    it is ready or fails to start."""
    cmd = [*prefix, sys.executable, "-P", "-m", "vsedvr.render.worker"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] in ("ready", "error"):
            break
    proc.stdin.close()  # the worker ends itself
    proc.wait(timeout=60)
    return events


def test_a_worker_that_does_not_see_the_work_folder_refuses_to_start(fast_script, vs_env, tmp_path):
    """A node with a folder of its own at the work folder's path (here: a worker in a mount
    namespace with an empty tmpfs there) would verify segments the driver never sees; it must not
    start. Likewise a node whose script differs from the driver's."""
    from vsedvr.zoo.cache import sha256_file

    script, _ = fast_script
    work = tmp_path / "work"
    work.mkdir()
    (work / ".probe-1").write_text("token")
    job = {"script": str(script), "script_sha256": sha256_file(script), "work_dir": str(work),
           "probe": {"name": ".probe-1", "token": "token"}}
    assert _worker_events(job, vs_env)[-1]["event"] == "ready"  # the driver's own view: fine
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m needs CAP_SYS_ADMIN)")
    own = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs none "{work}" && exec "$@"', "sh"]
    ev = _worker_events(job, vs_env, own)[-1]
    assert ev["event"] == "error", ev
    assert f"the work folder {work} on host {os.uname().nodename}" in ev["message"]
    assert "is not the folder the driver sees" in ev["message"] and "shared file system" in ev["message"]
    ev = _worker_events(dict(job, script_sha256="0" * 64), vs_env)[-1]
    assert ev["event"] == "error" and "is not the driver's" in ev["message"], ev


@pytest.mark.slow(reason="renders 40 frames twice and refuses three changed finishes")
def test_a_changed_finish_is_refused_with_its_cost(fast_script, vs_env, tmp_path):
    """After a verified result whose segments were deleted, a new --encode or a moved output used to
    render the whole video again without a word; now it is refused with the cost and what to do."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    args = (str(script), "-o", str(out), "--workers", "1", "--segment", "20")
    assert render_cli(*args, env=vs_env, timeout=120).returncode == 0
    assert attempts(work) == {0: 1, 1: 1}

    encoded = render_cli(*args, "--encode", "-c:v ffv1 -level 1", env=vs_env, timeout=120)
    assert encoded.returncode == 1, encoded.stderr
    assert "the finish changed: --encode (none -> -c:v ffv1 -level 1)" in encoded.stderr
    assert "would render all 40 frames again (about " in encoded.stderr and "worker-hours" in encoded.stderr
    assert "--rerender" in encoded.stderr
    suggested = encoded.stderr.split("encode the verified lossless result yourself: ")[1].split(";")[0]
    assert suggested.startswith("ffmpeg -i ")
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", *shlex.split(suggested)[1:]], check=True)  # works pasted
    assert framemd5(tmp_path / "out.encoded.mkv") == plain  # beside the result (-o is unchanged); FFV1 here

    out.rename(tmp_path / "moved.mkv")
    moved = render_cli(*args, env=vs_env, timeout=120)
    assert moved.returncode == 1
    assert f"the verified result {out} is gone (moved or deleted)" in moved.stderr
    assert "put the verified result back" in moved.stderr
    assert attempts(work) == {0: 1, 1: 1}  # nothing rendered by the refused runs

    again = render_cli(*args, "--rerender", env=vs_env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert attempts(work) == {0: 2, 1: 2}
    assert framemd5(out) == plain


# ----------------------------------------------------------- pipeline drift (issue 36, item 2)


@pytest.mark.slow(reason="two renders of 40 frames")
def test_a_resume_with_another_pipeline_is_refused(fast_script, vs_env, tmp_path):
    """An upgrade, another plugin or a re-muxed source between runs (here: frames offset by one, the
    script file unchanged) used to pass as the same plan: frame 0, rendered by every worker before
    its first segment, now tells, and the plan is refused."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    args = (str(script), "-o", str(out), "--workers", "1", "--segment", "20", "--keep")
    assert render_cli(*args, env=vs_env, timeout=120).returncode == 0
    changed = render_cli(*args, env=dict(vs_env, RENDER_TEST_OFFSET="1"), timeout=120)
    assert changed.returncode == 1, changed.stderr
    assert "holds another render plan (changed: the pipeline the segments were rendered with: frame 0 " \
           "(the canary) renders differently)" in changed.stderr
    assert "--fresh" in changed.stderr
    assert framemd5(out) == plain


@pytest.mark.slow(reason="a render on two workers, one of them rendering other frames")
def test_a_worker_with_another_pipeline_is_left_out(fast_script, vs_env, tmp_path):
    """Two workers whose frame 0 differs (a node with other versions or another GPU model): the
    second one to report is left out, naming its host and what differs, and every segment comes
    from the first, so the video is one pipeline's."""
    script, _ = fast_script
    out = tmp_path / "out.mkv"
    env = dict(vs_env, RENDER_TEST_ODD_WORKER=str(tmp_path / "odd"), RENDER_TEST_SLEEP="0.02")
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "10", env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    left_out = [line for line in proc.stderr.splitlines() if "its pipeline differs from the first worker's" in line]
    assert len(left_out) == 1 and f"the worker on host {os.uname().nodename} (CPU) is left out" in left_out[0], proc.stderr
    assert "frame 0 (the canary) renders differently" in left_out[0]
    pids = attempt_pids(tmp_path / "out.mkv.parts")
    assert len({p for ps in pids.values() for p in ps}) == 1, pids  # one worker rendered every segment


@pytest.mark.slow(reason="three renders of 40 frames")
def test_the_join_is_checked_by_packets_and_a_foreign_ffv1_segment_is_named(fast_script, vs_env, tmp_path):
    """The lossless join is checked against the segments' recorded packets (no decode). A segment
    written by an FFV1 encoder that chose other codec parameters (another ffmpeg build on a node;
    here -slices 9, recorded as such a worker would) joins without an error from ffmpeg and then
    stops decoding: it is named, with what to do."""
    from vsedvr.render.tools import packet_hashes
    from vsedvr.zoo.cache import sha256_file

    script, plain = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    args = (str(script), "-o", str(out), "--workers", "1", "--segment", "20", "--keep")
    assert render_cli(*args, env=vs_env, timeout=120).returncode == 0
    assert manifest(work)["final"]["verified"] == "packets"
    out.unlink()
    seg = work / "seg-00001.mkv"
    foreign = tmp_path / "foreign.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-i", str(seg), "-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "9",
                    str(foreign)], check=True)
    foreign.replace(seg)
    data = manifest(work)
    extradata, packets = packet_hashes(FFMPEG, seg)
    data["segments"]["1"].update(size=seg.stat().st_size, sha256=sha256_file(seg), extradata=extradata,
                                 packets=packets)
    (work / "manifest.json").write_text(json.dumps(data))
    refused = render_cli(*args, env=vs_env, timeout=120)
    assert refused.returncode == 1
    assert "segment 1 (frames 20-39, rendered on " in refused.stderr
    assert "has other FFV1 codec parameters than segment 0" in refused.stderr
    assert not list(work.glob("final.partial.*"))
    seg.unlink()  # as the message says
    again = render_cli(*args, env=vs_env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert framemd5(out) == plain


# ------------------------------------------------------- --encode per segment (issue 36, item 1)


def logging_ffmpeg(tmp_path: Path) -> tuple[str, Path]:
    """An ffmpeg that appends "PARENT'S COMMAND LINE|ITS ARGUMENTS" to a log for every run, then is
    the real one: which process launched which encode."""
    log = tmp_path / "ffmpeg.log"
    wrapper = tmp_path / "ffmpeg-logged"
    wrapper.write_text(f"#!/bin/sh\necho \"$(tr '\\0' ' ' < /proc/$PPID/cmdline)|$*\" >> {shlex.quote(str(log))}\n"
                       f"exec {shlex.quote(FFMPEG)} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), log


def ffmpeg_runs(log: Path) -> list[tuple[str, str]]:
    """(who launched it: "worker", "driver", or "gone" for a parent killed as it started it, its
    arguments) for each ffmpeg in the log."""
    runs = []
    for line in log.read_text().splitlines() if log.exists() else []:
        parent, args = line.split("|", 1)
        who = "worker" if "vsedvr.render.worker" in parent else "driver" if "-m vsedvr render" in parent else "gone"
        runs.append((who, args))
    return runs


def render_with(ffmpeg: str, *args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*VSEDVR, "render", *args, "--ffmpeg", ffmpeg, "--progress-interval", "2"],
                          env=env, capture_output=True, text=True, **kw)


def chunk_packets(work: Path) -> list[str]:
    """The packets of the chunks in the work folder, read from their files now, in segment order."""
    from vsedvr.render.tools import packet_hashes

    return [p for chunk in sorted(work.glob("enc-*.mkv")) for p in packet_hashes(FFMPEG, chunk)[1]]


def test_encode_runs_on_the_workers_and_the_join_copies_the_chunks(fast_script, vs_env, tmp_path):
    """--encode used to be one ffmpeg on the driver encoding the whole video after the last segment
    (the serial tail); now each worker encodes its segments, and the driver joins the chunks with
    -c copy, checked against the chunks' packets."""
    from vsedvr.render.tools import packet_hashes

    script, _ = fast_script
    ffmpeg, log = logging_ffmpeg(tmp_path)
    sine = tmp_path / "sine.mka"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1.6", "-c:a", "flac",
                    str(sine)], check=True)
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    proc = render_with(ffmpeg, str(script), "-o", str(out), "--workers", "2", "--segment", "10", "--keep",
                       "--audio", str(sine), "--encode", "-c:v libx264 -crf 30 -c:a aac -b:a 64k", env=vs_env,
                       timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = ffmpeg_runs(log)
    encodes = [(who, args) for who, args in runs if "libx264" in args and "lavfi" not in args]
    assert sorted(args.split(" -i ")[1].split()[0].rsplit("/", 1)[1] for _, args in encodes) == \
        [f"seg-0000{i}.mkv" for i in range(4)], encodes  # one encode per segment, of its verified file
    assert {who for who, _ in encodes} == {"worker"}, encodes  # none on the driver
    joins = [args for who, args in runs if who == "driver" and "concat" in args]
    assert len(joins) == 1 and "-c:v copy" in joins[0] and "libx264" not in joins[0], joins
    assert "-c:a aac -b:a 64k" in joins[0]  # the audio options of --encode go to the join, where the audio is
    assert "joining 4 chunks with audio with -c copy" in proc.stderr, proc.stderr

    data = manifest(work)
    chunks = [data["segments"][str(i)]["chunk"] for i in range(4)]
    assert [len(c["packets"]) for c in chunks] == [10] * 4  # the frames, counted by packets
    assert all(c["args"] == ["-c:v", "libx264", "-crf", "30"] for c in chunks)
    assert data["final"]["verified"] == "packets"
    assert packet_hashes(FFMPEG, out)[1] == [p for c in chunks for p in c["packets"]] == chunk_packets(work)
    decoded = [h for chunk in sorted(work.glob("enc-*.mkv")) for h in framemd5(chunk)]
    assert len(decoded) == 40 and framemd5(out) == decoded  # the result decodes to the chunks' frames
    info = subprocess.run([FFMPEG, "-i", str(out)], capture_output=True, text=True).stderr
    assert "Video: h264" in info and "Audio: aac" in info, info


@pytest.mark.slow(reason="a render killed after two encoded segments, resumed, then encoded again: three renders")
def test_a_resume_reuses_the_encoded_chunks_and_a_new_encode_only_encodes(fast_script, vs_env, tmp_path):
    """The chunks verified before the driver was killed are joined as they are; a changed --encode
    (the segments kept) encodes every segment again on the workers, renders none, and never joins a
    chunk of the old arguments."""
    from vsedvr.render.tools import packet_hashes

    script, _ = fast_script
    ffmpeg, log = logging_ffmpeg(tmp_path)
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    args = [str(script), "-o", str(out), "--workers", "1", "--segment", "10", "--keep"]
    cmd = [*VSEDVR, "render", *args, "--encode", "-c:v libx264 -crf 30", "--ffmpeg", ffmpeg]
    proc = subprocess.Popen(cmd, env=dict(vs_env, RENDER_TEST_SLEEP="0.15"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = manifest(work)["segments"] if (work / "manifest.json").exists() else {}
        if "chunk" in done.get("1", {}):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.wait(timeout=60)
    kept = {i: (work / f"enc-0000{i}.mkv").stat() for i in (0, 1)}
    log.unlink()

    resumed = subprocess.run(cmd, env=vs_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 already verified" in resumed.stderr, resumed.stderr
    assert {i: n for i, n in attempts(work).items() if i < 2} == {0: 1, 1: 1}
    for i, st in kept.items():  # the same files, not encoded again
        now = (work / f"enc-0000{i}.mkv").stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
    encoded = sorted(a.split(" -i ")[1].split()[0].rsplit("/", 1)[1] for _, a in ffmpeg_runs(log)
                     if "libx264" in a and "lavfi" not in a)
    assert encoded == ["seg-00002.mkv", "seg-00003.mkv"], encoded
    old = packet_hashes(FFMPEG, out)[1]
    assert old == chunk_packets(work) and len(old) == 40

    before = attempts(work)
    again = render_with(ffmpeg, *args, "--encode", "-c:v libx264 -crf 40", env=vs_env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "0 to render, 4 to encode" in again.stderr, again.stderr
    assert "its chunk was encoded with other --encode arguments (-c:v libx264 -crf 30); encoding it again" \
        in again.stderr
    assert attempts(work) == before  # no segment rendered again
    new = packet_hashes(FFMPEG, out)[1]
    assert new == chunk_packets(work) and len(new) == 40 and new != old
    assert all(rec["chunk"]["args"][-1] == "40" for rec in manifest(work)["segments"].values())


def test_a_chunk_with_other_codec_parameters_is_named_and_encoded_again(fast_script, vs_env, tmp_path):
    """A chunk whose encoder chose other codec parameters (another x264 build on a node; here another
    profile, recorded as such a worker would) would join with -c copy and decode wrongly: it is
    named, and deleting it as the message says encodes it again."""
    from vsedvr.render.tools import packet_hashes
    from vsedvr.zoo.cache import sha256_file

    script, _ = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    args = (str(script), "-o", str(out), "--workers", "1", "--segment", "20", "--keep", "--encode", "-c:v libx264 -crf 30")
    assert render_cli(*args, env=vs_env, timeout=120).returncode == 0
    out.unlink()
    chunk = work / "enc-00001.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(work / "seg-00001.mkv"), "-c:v", "libx264", "-crf", "30",
                    "-profile:v", "high444", "-pix_fmt", "yuv444p", str(chunk)], check=True)
    data = manifest(work)
    extradata, packets = packet_hashes(FFMPEG, chunk)
    data["segments"]["1"]["chunk"].update(size=chunk.stat().st_size, sha256=sha256_file(chunk), extradata=extradata,
                                          packets=packets)
    (work / "manifest.json").write_text(json.dumps(data))
    refused = render_cli(*args, env=vs_env, timeout=120)
    assert refused.returncode == 1
    assert "the chunk of segment 1 (frames 20-39, encoded on " in refused.stderr, refused.stderr
    assert "has other codec parameters than the chunk of segment 0" in refused.stderr
    assert "delete enc-00001.mkv in the work folder" in refused.stderr
    assert not list(work.glob("final.partial.*"))
    chunk.unlink()  # as the message says
    again = render_cli(*args, env=vs_env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "segment 1 (frames 20-39): its chunk is missing; encoding it again" in again.stderr
    assert packet_hashes(FFMPEG, out)[1] == chunk_packets(work) and len(chunk_packets(work)) == 40


def test_without_keep_the_chunks_go_and_a_changed_encode_is_refused(fast_script, vs_env, tmp_path):
    """Without --keep the segments and their chunks are deleted once the result is verified; a new
    --encode then has nothing to encode from and is refused with its cost, as before chunks."""
    script, _ = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    args = (str(script), "-o", str(out), "--workers", "1", "--segment", "20")
    first = render_cli(*args, "--encode", "-c:v libx264 -crf 30", env=vs_env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert not list(work.glob("seg-*")) and not list(work.glob("enc-*")) and not list(work.glob(".*partial*"))
    assert len(framemd5(out)) == 40
    changed = render_cli(*args, "--encode", "-c:v libx264 -crf 40", env=vs_env, timeout=120)
    assert changed.returncode == 1, changed.stderr
    assert "the finish changed: --encode (-c:v libx264 -crf 30 -> -c:v libx264 -crf 40)" in changed.stderr
    assert "would render all 40 frames again" in changed.stderr and "--rerender" in changed.stderr
    assert attempts(work) == {0: 1, 1: 1}


def test_a_worker_killed_while_it_encodes_leaves_the_encode_to_a_worker(fast_script, vs_env, tmp_path):
    """The worker is killed as it starts segment 1 (frame 12 is first read there), while its thread
    checks and encodes segment 0: the driver checks segment 0's file itself, as before, but leaves
    its chunk to a worker (an encode in the driver's event loop would stall every worker's events)."""
    from vsedvr.render.tools import packet_hashes

    script, _ = fast_script
    ffmpeg, log = logging_ffmpeg(tmp_path)
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    env = dict(vs_env, RENDER_TEST_KILL=f"12:{tmp_path / 'killed'}")
    proc = render_with(ffmpeg, str(script), "-o", str(out), "--workers", "1", "--segment", "10", "--keep",
                       "--encode", "-c:v libx264 -crf 30", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "killed").exists() and "starting another" in proc.stderr, proc.stderr
    encodes = [(who, a) for who, a in ffmpeg_runs(log) if "libx264" in a and "lavfi" not in a]
    assert "driver" not in {who for who, _ in encodes}, encodes
    data = manifest(work)
    assert [len(data["segments"][str(i)]["chunk"]["packets"]) for i in range(4)] == [10] * 4
    assert packet_hashes(FFMPEG, out)[1] == chunk_packets(work)


def test_an_encode_that_drops_frames_ends_the_render_naming_encode(fast_script, vs_env, tmp_path):
    """A filter in --encode that changes the frame count (here fps=12 on 25 fps) would do it to every
    segment: the first chunk counted short by its packets ends the render, naming --encode."""
    script, _ = fast_script
    proc = render_cli(str(script), "-o", str(tmp_path / "out.mkv"), "--workers", "1", "--segment", "20",
                      "--encode", "-c:v libx264 -vf fps=12", env=vs_env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "--encode -c:v libx264 -vf fps=12 made 10 frames of the segment's 20" in proc.stderr, proc.stderr
    assert "retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.mkv").exists() and not list((tmp_path / "out.mkv.parts").glob(".*partial*"))


def test_encode_arguments_that_cannot_be_chunked_are_refused_with_a_fix(fast_script, vs_env, tmp_path):
    """Two-pass rate control needs the whole video in one encoder; trims and frame-rate changes
    would act on every segment; extra inputs and maps clash with vsedvr's own. Refused before
    anything starts, naming --encode and a fix."""
    script, _ = fast_script
    out = tmp_path / "out.mkv"
    proc = render_cli(str(script), "-o", str(out), "--encode", "-c:v libx264 -b:v 1M -pass 1", env=vs_env,
                      timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "--encode: -pass 1 is two-pass (or multi-pass) rate control" in proc.stderr
    assert '--encode "-c:v libx265 -crf 18"' in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any worker, folder or pass log

    from vsedvr.render import RenderError
    from vsedvr.render.encode import check_encode, chunk_spec, dry_encode, join_args

    for args, says in ((["-c:v", "libx265", "-x265-params", "crf=18:pass=2"], "two-pass"),
                       (["-c:v", "libx264", "-passlogfile", "x"], "two-pass"),
                       (["-c:v", "libx264", "-flags", "+pass2"], "two-pass"),
                       (["-c:v", "libx264", "-t", "10"], "trim in the script"),
                       (["-c:v", "libx264", "-frames:v", "10"], "trim in the script"),
                       (["-c:v", "libx264", "-r", "30"], "AssumeFPS"),
                       (["-map", "0:v"], "maps the script's video")):
        with pytest.raises(RenderError, match=f"^--encode: .*{says}"):
            check_encode(args)
    check_encode(["-c:v", "libx265", "-crf", "18", "-x265-params", "keyint=48:log-level=error", "-pix_fmt",
                  "yuv420p10le"])
    encode = ["-c:v", "libx264", "-crf", "18", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]
    assert chunk_spec(encode, Path("film.mp4")) == {"args": ["-c:v", "libx264", "-crf", "18", "-movflags",
                                                             "+faststart"], "suffix": ".mp4"}
    assert join_args(encode) == ["-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]
    # an encoder ffmpeg does not have: said before any segment, not by every segment on every worker
    with pytest.raises(RenderError, match="^--encode -c:v nosuchcodec: ffmpeg cannot encode with these arguments"):
        dry_encode(FFMPEG, chunk_spec(["-c:v", "nosuchcodec"], out), 64, 48, tmp_path)
    dry_encode(FFMPEG, chunk_spec(["-c:v", "libx264", "-crf", "30"], out), 64, 48, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow(reason="renders, damages and renders again: several renders")
def test_damaged_segment_files_are_rendered_again(fast_script, vs_env, tmp_path):
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    args = (str(script), "-o", str(out), "--workers", "2", "--segment", "10", "--keep")
    assert render_cli(*args, env=vs_env).returncode == 0
    work = tmp_path / "out.mkv.parts"
    out.unlink()
    seg1, seg2 = work / "seg-00001.mkv", work / "seg-00002.mkv"
    seg1.write_bytes(seg1.read_bytes()[: seg1.stat().st_size // 2])  # truncated
    data = bytearray(seg2.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped, same size
    seg2.write_bytes(bytes(data))
    (work / "seg-00003.mkv").unlink()  # gone

    proc = render_cli(*args, env=vs_env)
    assert proc.returncode == 0, proc.stderr
    assert "segment 1 (frames 10-19): file is" in proc.stderr
    assert "segment 2 (frames 20-29): file is corrupt" in proc.stderr
    assert "segment 3 (frames 30-39): file missing" in proc.stderr
    assert attempts(work) == {0: 1, 1: 2, 2: 2, 3: 2}
    assert framemd5(out) == plain


@pytest.mark.slow(reason="three driver runs with slowed frames")
def test_driver_interrupted_and_killed_then_resumed(fast_script, vs_env, tmp_path):
    """SIGINT after segment 0, SIGKILL (no clean-up at all) after segment 1; the third run finishes."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    work = tmp_path / "out.mkv.parts"
    env = dict(vs_env, RENDER_TEST_SLEEP="0.15")
    cmd = [*VSEDVR, "render", str(script), "-o", str(out), "--workers", "1", "--segment", "10", "--ffmpeg", FFMPEG]

    def run_until(segment: int, sig: int) -> subprocess.Popen:
        # Ctrl-C's default action in the driver even where this test runs as a background job (a
        # non-interactive shell's `cmd &` starts it with SIGINT ignored, which Python then keeps)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = manifest(work)["segments"] if (work / "manifest.json").exists() else {}
            if str(segment) in done and (work / "attempts" / f"{segment + 1:05d}").exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        return proc

    first = run_until(0, signal.SIGINT)
    assert first.returncode == 130
    assert "interrupted; the verified segments are kept" in first.stderr.read()
    assert not list(work.glob(".*.partial"))  # its vspipe and ffmpeg were stopped, the attempt removed
    run_until(1, signal.SIGKILL)
    last = subprocess.run(cmd, env=dict(vs_env), capture_output=True, text=True)
    assert last.returncode == 0, last.stderr
    assert "2 already verified" in last.stderr
    # the earlier runs' cut-off attempts are not this run's retries
    progress = [line for line in last.stderr.splitlines() if line.endswith(" retried")]
    assert progress and all(line.endswith(" 0 failed, 0 retried") for line in progress), last.stderr
    assert "2 segments rendered, 2 reused" in last.stderr
    # 0 and 1 were verified before an interruption and reused; 1 and 2 were each cut off once
    assert attempts(work) == {0: 1, 1: 2, 2: 2, 3: 1}
    assert framemd5(out) == plain


# ---------------------------------------------------------------------------------- errors


@pytest.mark.slow(reason="two renders and a refused third")
def test_changed_script_refuses_the_folder_until_fresh(fast_script, vs_env, tmp_path):
    script, plain = fast_script
    mine = tmp_path / "mine.vpy"
    mine.write_text(script.read_text())
    out = tmp_path / "out.mkv"
    args = (str(mine), "-o", str(out), "--segment", "20")
    assert render_cli(*args, env=vs_env).returncode == 0
    mine.write_text(script.read_text().replace("weights=[1, 2, 3, 2, 1]", "weights=[1, 1, 1]"))
    refused = render_cli(*args, env=vs_env)
    assert refused.returncode == 1
    assert "holds another render plan (changed: the script's contents)" in refused.stderr
    assert "Traceback" not in refused.stderr
    changed = render_cli(*args, "-a", "x=1", env=vs_env)
    assert "the -a arguments (none -> x=1)" in changed.stderr
    fresh = render_cli(*args, "--fresh", env=vs_env)
    assert fresh.returncode == 0, fresh.stderr
    assert framemd5(out) != plain and len(framemd5(out)) == 40


def test_errors_are_one_clean_message(fast_script, vs_env, tmp_path):
    script, _ = fast_script
    out = str(tmp_path / "out.mkv")

    def fails(*args: str, ffmpeg: str = FFMPEG) -> str:
        proc = subprocess.run([*VSEDVR, "render", *args, "--ffmpeg", ffmpeg], env=vs_env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert 'File "' + str(Path(__file__).parent.parent) not in proc.stderr  # no traceback of ours
        return proc.stderr

    assert "--ffmpeg /nonexistent/ffmpeg: no such executable" in fails(str(script), "-o", out,
                                                                        ffmpeg="/nonexistent/ffmpeg")
    broken = tmp_path / "broken.vpy"
    broken.write_text("import vapoursynth as vs\nraise vs.Error('the source file is missing')\n")
    assert "the source file is missing" in fails(str(broken), "-o", out)
    assert "cannot evaluate" in fails(str(broken), "-o", out)
    t0 = time.monotonic()
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in fails(str(script), "-o", out, "--ray", "127.0.0.1:1")
    assert time.monotonic() - t0 < 60
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.mkv").write_bytes(b"not ours")
    assert "is not a vsedvr render folder" in fails(str(script), "-o", out, "--work-dir", str(foreign))
    assert (foreign / "holiday.mkv").read_bytes() == b"not ours"
    assert "RGB, which yuv4mpeg cannot carry" in fails(*_rgb_script(tmp_path), "-o", out)


@pytest.mark.slow(reason="two renders (the refused one and the fixed one): about 5 s")
def test_variable_frame_rate_is_refused_at_the_plan(vs_env, tmp_path):
    """yuv4mpeg cannot carry it and ffmpeg would make it 25 fps: refused before any segment, with a
    fix that works when pasted."""
    vfr = tmp_path / "vfr.vpy"
    vfr.write_text("import vapoursynth as vs\ncore = vs.core\n"
                   "a = core.std.BlankClip(width=32, height=24, format=vs.YUV420P8, length=4, fpsnum=24)\n"
                   "b = core.std.BlankClip(width=32, height=24, format=vs.YUV420P8, length=4, fpsnum=30)\n"
                   "clip = core.std.Splice([a, b], mismatch=True)\n"
                   "FIX\n"
                   "clip.set_output()\n")
    script = vfr.read_text()
    vfr.write_text(script.replace("FIX\n", ""))
    out = tmp_path / "vfr.mkv"
    proc = render_cli(str(vfr), "-o", str(out), "--workers", "1", env=vs_env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "has a variable frame rate" in proc.stderr and "Traceback" not in proc.stderr
    fix = next(x for x in proc.stderr.split("e.g. ")[1].split(", or")[0:1])
    vfr.write_text(script.replace("FIX\n", fix + "\n"))
    fixed = render_cli(str(vfr), "-o", str(out), "--workers", "1", "--fresh", env=vs_env, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert len(framemd5(out)) == 8
    assert manifest(tmp_path / "vfr.mkv.parts")["plan"]["info"]["FPS"].startswith("24000/1001")


@pytest.mark.slow(reason="a render with an audio file muxed in, and a refused one")
def test_audio_is_muxed_and_a_file_without_audio_is_refused_at_once(fast_script, vs_env, tmp_path):
    script, plain = fast_script
    sine = tmp_path / "sine.mka"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1.6", "-c:a", "flac",
                    str(sine)], check=True)
    out = tmp_path / "out.mkv"
    proc = render_cli(str(script), "-o", str(out), "--workers", "1", "--segment", "20", "--audio", str(sine),
                      env=vs_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert framemd5(out) == plain
    info = subprocess.run([FFMPEG, "-i", str(out)], capture_output=True, text=True).stderr
    assert "Audio: flac" in info, info
    # a file without audio used to fail at the join, after every segment was rendered
    silent = tmp_path / "silent.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:duration=1", "-c:v", "ffv1",
                    str(silent)], check=True)
    refused = render_cli(str(script), "-o", str(tmp_path / "again.mkv"), "--workers", "1", "--audio", str(silent),
                         env=vs_env, timeout=120)
    assert refused.returncode == 1
    assert f"--audio {silent}: its audio cannot be muxed into again.mkv" in refused.stderr
    assert not (tmp_path / "again.mkv.parts" / "attempts").exists()  # before any segment


@pytest.mark.slow(reason="a render whose script trims its video and its audio")
def test_the_scripts_own_audio_follows_its_trim(vs_env, vspipe, tmp_path):
    """--audio-output N: the script's audio node (here a 2 s sine, cut like the video: its first 12
    frames, half a second, dropped) is rendered and muxed, sample for sample what the script says."""
    sine = tmp_path / "sine.wav"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2",
                    "-c:a", "pcm_s16le", str(sine)], check=True)
    script = tmp_path / "trimmed.vpy"
    script.write_text(FAST_SCRIPT.replace("length=40", "length=48").replace("(40, 48, 64)", "(48, 48, 64)") +
                      "import vapoursynth as vs\n"
                      "clip = vs.get_output(0)[0]\n"
                      "vs.clear_outputs()\n"
                      "clip[12:].set_output(0)\n"
                      f"vs.core.bs.AudioSource({str(sine)!r})[12 * 2000:].set_output(1)  # 48000 Hz / 24 fps\n")
    out = tmp_path / "out.mkv"
    proc = render_cli(str(script), "-o", str(out), "--workers", "1", "--segment", "18", "--audio-output", "1",
                      env=vs_env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "the script's audio: 1.500 s, 1 channel(s), 48000 Hz" in proc.stderr
    assert framemd5(out) == plain_render(script, vspipe, vs_env)

    def pcm_md5(*args: str) -> str:
        return subprocess.run([FFMPEG, "-v", "error", *args, "-map", "0:a", "-c:a", "pcm_s16le", "-f", "md5", "-"],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert pcm_md5("-i", str(out)) == pcm_md5("-i", str(sine), "-af", "atrim=start_sample=24000")


@pytest.mark.parametrize("fmt", ["YUV444PS", "GRAYS", "YUV420PH", "YUV440P8"])
def test_formats_yuv4mpeg_cannot_carry_are_refused_with_a_fix(fmt: str) -> None:
    """Float YUV (VapourSynth writes C444p32, which ffmpeg's reader refuses) and 4:4:0 (used to be a
    KeyError) are refused with a conversion that works when pasted."""
    import vapoursynth as vs
    from vsedvr.render import RenderError
    from vsedvr.render.worker import clip_info

    core = vs.core
    clip = core.std.BlankClip(width=32, height=24, length=2, format=getattr(vs, fmt))
    with pytest.raises(RenderError) as info:
        clip_info(clip)
    fix = str(info.value).split("e.g. ")[1]
    fixed = eval(fix, {"core": core, "vs": vs, "clip": clip})  # noqa: S307 - the message's own suggestion
    assert clip_info(fixed)["Frames"] == "2"


def _rgb_script(tmp_path: Path) -> list[str]:
    rgb = tmp_path / "rgb.vpy"
    rgb.write_text("import vapoursynth as vs\nvs.core.std.BlankClip(format=vs.RGB24, length=3).set_output()\n")
    return [str(rgb)]


def test_render_package_does_not_import_torch():
    code = ("import sys, vsedvr.render, vsedvr.cli; vsedvr.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_device_slots_show_one_gpu_each():
    from vsedvr.render import RenderError, cpu_slots, device_slots

    slots = device_slots(["cuda:0", "cuda:1"], visible="4,6")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["4", "6"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in device_slots(["cpu"])] == [""]
    with pytest.raises(RenderError, match="mixes the CPU with GPUs.*use --devices cuda:1$"):
        device_slots(["cuda:1", "cpu"])
    assert all(s["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2)) for s in cpu_slots(2))
    with pytest.raises(RenderError, match="names a GPU twice"):
        device_slots(["cuda:0", "cuda:0"])
    with pytest.raises(RenderError, match='"gpu0" is not a device'):
        device_slots(["gpu0"])


@pytest.mark.parametrize("args", [["--ray", "--workers", "2"], ["--workers", "2", "--devices", "cuda:0"],
                                  ["-a", "novalue"], ["--encode", "-c:v 'libx265"], [],
                                  ["--vspipe", "vspipe"], ["--stall-timeout", "0"],
                                  ["--audio", "a.wav", "--audio-output", "1"]])
def test_render_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from vsedvr.cli import main

    with pytest.raises(SystemExit) as info:
        main(["render", "film.vpy", *(["-o", "film.mkv"] if args else []), *args])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1].startswith("vsedvr") and "error:" in err.splitlines()[-1]


def test_ray_not_installed_is_one_clean_message(fast_script, vs_env, tmp_path):
    """A Python where `import ray` fails (a shadowing package that raises ImportError, as a missing one does)."""
    script, _ = fast_script
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = dict(vs_env, PYTHONPATH=str(fake.parent))
    proc = subprocess.run([*VSEDVR, "render", str(script), "-o", str(tmp_path / "o.mkv"), "--ray", "--ffmpeg", FFMPEG],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "--ray needs Ray, which is not installed here" in proc.stderr
    assert "pip install ray" in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_disk_is_named(tmp_path):
    from vsedvr.render import DiskFullError
    from vsedvr.render.tools import check_disk_full

    check_disk_full("Error writing trailer: Invalid argument", tmp_path)  # other errors: retried as usual
    # the hint must work: a new --work-dir alone would start from nothing, a moved folder resumes
    with pytest.raises(DiskFullError, match="is full .* move the work folder to a larger disk and pass --work-dir"):
        check_disk_full("[matroska @ 0x1] Error writing packet: No space left on device", tmp_path)


def test_a_script_failing_only_on_a_worker_shows_its_message(tmp_path, vs_env):
    """The driver's environment has a GPU, the worker's (no GPU visible) not: the script fails on the
    worker before a frame is written, and the error is the script's, not ffmpeg's empty input."""
    script = tmp_path / "worker_only.vpy"
    script.write_text("import os\nimport vapoursynth as vs\n"
                      "if os.environ.get('CUDA_VISIBLE_DEVICES') == '':\n"
                      "    raise vs.Error('no GPU on this worker')\n"
                      "vs.core.std.BlankClip(width=16, height=16, length=4, format=vs.YUV420P8).set_output()\n")
    env = {k: v for k, v in vs_env.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = render_cli(str(script), "-o", str(tmp_path / "out.mkv"), "--workers", "1", "--retries", "0",
                      env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "no GPU on this worker" in proc.stderr, proc.stderr
    assert "ffmpeg exited" not in proc.stderr, proc.stderr


def test_a_second_render_on_the_same_folder_is_refused(fast_script, vs_env, tmp_path):
    """Two drivers on one work folder would delete each other's attempts and manifest records:
    the second is refused while the first runs, and the first ends identical to one vspipe."""
    script, plain = fast_script
    out = tmp_path / "out.mkv"
    first = subprocess.Popen([*VSEDVR, "render", str(script), "-o", str(out), "--workers", "1", "--segment", "20",
                              "--ffmpeg", FFMPEG], env=dict(vs_env, RENDER_TEST_SLEEP="0.2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "out.mkv.parts" / "manifest.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        second = render_cli(str(script), "-o", str(out), "--workers", "1", "--segment", "20", env=vs_env, timeout=60)
        assert second.returncode == 1, second.stderr
        assert "another vsedvr render is using the work folder" in second.stderr, second.stderr
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert framemd5(out) == plain


# ------------------------------------------------------------------- what a worker writes

STREAM_SCRIPT = '''
import numpy as np
import vapoursynth as vs
core = vs.core
noise = np.load("noise.npy")  # relative: vspipe runs a script in its own folder
blank = core.std.BlankClip(width=40, height=30, length=20, format=vs.YUV420P10, fpsnum=30000, fpsden=1001)
def fill(n, f):
    out = f.copy()
    np.asarray(out[0])[:] = noise[n] * int(gain)  # -a gain=N arrives as a str, as from vspipe
    return out
clip = core.std.ModifyFrame(blank, blank, fill)
clip = core.std.AverageFrames(clip, weights=[1, 2, 1])  # reads outside a segment's range
core.std.SetFrameProps(clip, _Matrix=1, _Primaries=1, _Transfer=1, _Range=0).set_output(0 if __name__ == "__vapoursynth__" else 1)
'''

WORKER_STREAM = '''
import sys
from vsedvr.render.worker import SegmentWriter, clip_info, evaluate, segment_clip
script, start, end, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
clip = evaluate(script, ["gain=3"], 0)
print(clip_info(clip)["FPS"], file=sys.stderr)
props = {}
with open(out, "wb") as f:
    writer = SegmentWriter(lambda: f)
    segment_clip(clip, start, end, props).output(writer, y4m=True)
print(props, len(writer.hashes), file=sys.stderr)
'''


def test_a_worker_writes_the_stream_vspipe_writes(tmp_path, vspipe, vs_env):
    """A worker's segment (the script evaluated as vspipe does, VapourSynth's own y4m of
    clip[s:e+1]) is byte for byte what `vspipe -c y4m --start --end` writes."""
    import numpy as np

    folder = tmp_path / "film"
    folder.mkdir()
    np.save(folder / "noise.npy", np.random.default_rng(2).integers(0, 300, (20, 30, 40), dtype=np.uint16))
    script = folder / "stream.vpy"
    script.write_text(STREAM_SCRIPT)
    theirs = subprocess.run([vspipe, "-a", "gain=3", "-c", "y4m", "-s", "5", "-e", "12", str(script), "-"],
                            env=vs_env, capture_output=True, check=True).stdout
    mine = tmp_path / "mine.y4m"
    done = subprocess.run([sys.executable, "-P", "-c", WORKER_STREAM, str(script), "5", "12", str(mine)],
                          env=vs_env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert theirs.startswith(b"YUV4MPEG2 C420p10 W40 H30 F30000:1001") and len(theirs) > 8 * 40 * 30 * 3
    assert mine.read_bytes() == theirs
    assert "{'_Matrix': 1, '_Primaries': 1, '_Transfer': 1, '_Range': 0} 8" in done.stderr


def stream_line(path: Path) -> str:
    """The video stream line ffmpeg prints for a file (pixel format, range, colour)."""
    err = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in err.splitlines() if "Video:" in line)


def test_colour_tags_from_the_frame_properties(fast_script, vs_env, tmp_path):
    """_Matrix, _Primaries, _Transfer and _Range of the script's frames tag the segments, the
    lossless result and an --encode result (ffmpeg otherwise decodes BT.709 as BT.601)."""
    script, _ = fast_script
    tagged = tmp_path / "tagged.vpy"
    tagged.write_text(script.read_text().replace(
        ".set_output()", ".std.SetFrameProps(_Matrix=1, _Primaries=1, _Transfer=1, _Range=0).set_output()"))
    out = tmp_path / "out.mkv"
    proc = render_cli(str(tagged), "-o", str(out), "--segment", "40", "--keep", env=vs_env)
    assert proc.returncode == 0, proc.stderr
    assert "1 segment of 40 frames" in proc.stderr and "1 segment rendered" in proc.stderr  # not "1 segments"
    for path in (out, tmp_path / "out.mkv.parts" / "seg-00000.mkv"):
        assert "yuv420p(tv, bt709, progressive)" in stream_line(path), stream_line(path)
    encoded = tmp_path / "encoded.mkv"
    proc = render_cli(str(tagged), "-o", str(encoded), "--segment", "40", "--encode", "-c:v libx264 -crf 30",
                      "--work-dir", str(tmp_path / "out.mkv.parts"), env=vs_env)
    assert proc.returncode == 0, proc.stderr
    assert "yuv420p(tv, bt709, progressive)" in stream_line(encoded), stream_line(encoded)


@pytest.mark.slow(reason="EDVR at the default thread count in one vspipe against two workers: two full renders")
def test_workers_identical_to_a_default_vspipe(edvr_script, vspipe, vs_env, tmp_path):
    """--workers 2 (1 torch thread each here) against one plain vspipe with PyTorch's default threads
    (failed before nets/stable.py: 14 of 14 frames differed by one 16-bit step)."""
    script, _ = edvr_script
    env = {k: v for k, v in vs_env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    y4m = tmp_path / "default.y4m"
    subprocess.run([vspipe, "-c", "y4m", str(script), str(y4m)], env=env, check=True, capture_output=True)
    out = tmp_path / "out.mkv"
    proc = render_cli(str(script), "-o", str(out), "--workers", "2", "--segment", "8", env=env)
    assert proc.returncode == 0, proc.stderr
    assert framemd5(out) == framemd5(y4m)
