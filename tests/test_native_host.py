"""The plugin in real native hosts: one without Python, and a VSScript host as previewers are.

tests/native/vsscript_host.c is built on VSScript4 like vsedit: libvsscript embeds Python and
never finalises it, frames are asked for with getFrameAsync, and the host has its own log
handler on the core. docs/hosts.md says what such a host gets.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

TESTS = Path(__file__).resolve().parent
# the host the Windows test builds too: no Python in it; it calls Restore on a BlankClip and prints the error
HOST_SOURCE = TESTS / "native" / "plugin_report_host.c"
VSSCRIPT_HOST_SOURCE = TESTS / "native" / "vsscript_host.c"
PACKAGE = Path(vs.__file__).resolve().parent


def _compiler() -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the test host")
    return compiler


def test_restore_in_a_host_without_python_is_a_clear_error(tmp_path: Path) -> None:
    host = tmp_path / "host"
    subprocess.run([_compiler(), "-std=c11", "-O1", f"-I{PACKAGE / 'include'}", str(HOST_SOURCE), "-o", str(host),
                    f"-L{PACKAGE}", "-l:libvapoursynth.so.4", f"-Wl,-rpath,{PACKAGE}"], check=True)
    assert "libpython" not in subprocess.run(["ldd", str(host)], capture_output=True, text=True).stdout
    done = subprocess.run([str(host)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Restore: needs a Python interpreter in the host process" in done.stdout
    assert done.stdout.rstrip().endswith("core freed"), done.stdout


@pytest.fixture(scope="module")
def vsscript_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    host = tmp_path_factory.mktemp("vsscript-host") / "host"
    subprocess.run([_compiler(), "-std=c11", "-D_DEFAULT_SOURCE", "-O1", "-Wall", f"-I{PACKAGE / 'include'}",
                    str(VSSCRIPT_HOST_SOURCE), "-o", str(host), f"-L{PACKAGE}", "-l:libvsscript.so",
                    f"-Wl,-rpath,{PACKAGE}", "-lpthread"], check=True)
    return host


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(f"""\
        import sys
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        """) + textwrap.dedent(body))
    return path


@pytest.mark.slow(reason="twelve host runs of EDVR at 96x64 (minutes); make test keeps one host exit with frames in "
                         "flight (test_host_that_frees_its_core_at_exit_still_exits_within_the_bound)")
@pytest.mark.parametrize("how", ["exit", "exit-thread"])
def test_vsscript_host_exits_cleanly_with_frames_in_flight(vsscript_host: Path, tmp_path: Path,
                                                           vs_env: dict[str, str], how: str) -> None:
    """A previewer closed mid-render: libvsscript never finalises Python, so only the plugin's own
    exit handler can stop the frames before PyTorch is torn down (was SIGSEGV in most runs)."""
    script = _script(tmp_path, "exit.vpy", """\
        clips.moving_pattern(96, 64, 30).edvr.Restore(model="edvr_demo", device="cpu").set_output()
        """)
    results = []
    for _ in range(6):
        done = subprocess.run([str(vsscript_host), how, str(script), "8"], env=vs_env, capture_output=True,
                              text=True, timeout=120)
        assert "requested 8" in done.stdout, done.stdout + done.stderr
        results.append(done.returncode)
    crashes = [f"signal {signal.Signals(-rc).name}" if rc < 0 else f"rc {rc}" for rc in results if rc != 0]
    assert not crashes, f"{len(crashes)} of {len(results)} runs: {crashes}"


@pytest.mark.slow(reason="the host exits while inductor compiles (tens of seconds)")
def test_vsscript_host_exits_cleanly_while_compiling(vsscript_host: Path, tmp_path: Path,
                                                      vs_env: dict[str, str]) -> None:
    """compile=True under a VSScript host: the host exits while inductor compiles the first frame
    (in Python, for tens of seconds): within the exit bound, without a crash."""
    script = _script(tmp_path, "compile.vpy", """\
        clips.moving_pattern(48, 32, 12).edvr.Restore(model="edvr_demo", device="cpu", compile=True).set_output()
        """)
    start = time.monotonic()
    done = subprocess.run([str(vsscript_host), "exit", str(script), "4"], env=vs_env, capture_output=True,
                          text=True, timeout=180)
    took = time.monotonic() - start
    assert "requested 4" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert took < 60, took


def _restores(count: int, length: int) -> str:
    """Script lines: `count` edvr_demo Restores side by side as output 0."""
    return textwrap.dedent(f"""\
        restored = [clips.moving_pattern(48, 32, {length}, seed=k).edvr.Restore(model="edvr_demo", device="cpu")
                    for k in range({count})]
        vs.core.std.StackHorizontal(restored).set_output()
        """)


@pytest.mark.slow(reason="vsedit's teardown at three moments, with 1 and 3 Restores: six host runs (minutes)")
@pytest.mark.parametrize("restores", [1, 3])
def test_vsedit_closed_during_playback_exits_cleanly(vsscript_host: Path, tmp_path: Path, vs_env: dict[str, str],
                                                      restores: int) -> None:
    """vsedit's own teardown: its finalize() gives up while frames are in process, the window
    deletes the script processor (the frames' receiver) anyway, and main returns. No frame may
    come back to the deleted receiver (vsedit: SIGSEGV in invokeMethod), and PyTorch must not be
    torn down under a running frame. Closed at several moments of the playback."""
    script = _script(tmp_path, "close.vpy", _restores(restores, 300))
    outcomes = []
    for delay_ms in (200, 1500, 4000):
        done = subprocess.run([str(vsscript_host), "close", str(script), "4", str(delay_ms)], env=vs_env,
                              capture_output=True, text=True, timeout=180)
        assert "closed with" in done.stdout, done.stdout + done.stderr
        if done.returncode != 0:
            how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else f"rc {done.returncode}"
            last_line = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            outcomes.append(f"closed after {delay_ms} ms: {how}: {last_line}")
    assert not outcomes, "\n".join(outcomes)


#: A source with no Python function in the graph, for hosts that free or use their core while exiting.
NATIVE_SOURCE_SCRIPT = textwrap.dedent("""\
    import vapoursynth as vs
    core = vs.core

    def cell(n, i, j):
        colour = [(n + 3 * i + 5 * j) % 7 / 7, (n + i + j) % 5 / 5, (n + i * j) % 3 / 3]
        return core.std.BlankClip(width=1, height=1, length=1, format=vs.RGBS, color=colour)

    frames = [core.resize.Bilinear(core.std.StackVertical([core.std.StackHorizontal([cell(n, i, j)
              for i in range(6)]) for j in range(4)]), 96, 64) for n in range(30)]
    core.std.Splice(frames).edvr.Restore(model="edvr_demo", device="cpu").set_output()
    """)


def _host_output_survived(stdout: str) -> list[str]:
    """What of the host's own exit output is missing: its 100 unflushed lines, its earlier atexit work."""
    lines = stdout.splitlines()
    missing = [f"line {k}" for k in range(100) if f"line {k}" not in lines]
    summary = [f"{len(missing)} of its 100 buffered lines"] if missing else []
    if "host atexit work done" not in lines:
        summary.append("its earlier atexit work")
    return summary


def _exit_after_main_returned(host: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str, float]:
    """Reads up to "exiting", then waits for the host; (stdout after it, stderr, seconds it took)."""
    try:
        assert host.stdout.readline().startswith("requested"), host.stderr.read()
        assert host.stdout.readline() == "exiting\n", host.stderr.read()
        started = time.monotonic()
        try:
            stdout, stderr = host.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the host still runs {timeout:.0f} s after main returned (a hang)")
        took = time.monotonic() - started
        print(f"host {' '.join(map(str, host.args[1:2]))}: exit took {took:.2f} s after main returned")  # pytest -s
        return stdout, stderr, took
    finally:
        host.kill()
        host.communicate()


@pytest.mark.slow(reason="a frame held for the 10 s bound, after the host loads PyTorch")
def test_exit_waits_once_for_all_restores(vsscript_host: Path, tmp_path: Path, vs_env: dict[str, str]) -> None:
    """A frame that does not stop holds the exit for the promised bound (10 s) once, not once per
    Restore created plus twice (was 50 s with 3 Restores), and the exit status stays 0. The guard
    then ends the process itself, but first flushes the host's buffered stdout (lost in about half
    the runs when a parked thread could end it first), and a C exit handler registered after the
    plugin's (as PyTorch registers at its first use of a binding) does not run under the stuck frame."""
    script = _script(tmp_path, "stuck.vpy", _restores(3, 30) + textwrap.dedent("""\
        import ctypes
        import threading
        import time
        from vsedvr.filter import engine

        to_host, once, stuck = engine.WindowEngine._to_host, threading.Lock(), threading.Event()

        @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        def late_handler(_):
            print(f"late handler ran, frame stuck: {stuck.is_set()}", file=sys.stderr, flush=True)

        def register_late():  # after the plugin's registration at the first finished frame (atexit's own call)
            ctypes.CDLL(None).__cxa_atexit(late_handler, None, None)
            print("late handler registered", file=sys.stderr, flush=True)

        def stuck_once(self, *args, **kwargs):
            if once.acquire(blocking=False):
                stuck.set()
                print("a frame is stuck", file=sys.stderr, flush=True)
                threading.Timer(2.0, register_late).start()
                time.sleep(120)
                stuck.clear()
            return to_host(self, *args, **kwargs)

        engine.WindowEngine._to_host = stuck_once
        """))
    host = subprocess.Popen([str(vsscript_host), "exit", str(script), "8", "5000"], env=vs_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr, took = _exit_after_main_returned(host)
    assert "a frame is stuck" in stderr and "late handler registered" in stderr, \
        "the frame did not get stuck before the exit: " + stderr
    assert host.returncode == 0, (host.returncode, stderr[-2000:])
    assert took < 15, f"exit took {took:.1f} s after main returned"
    assert "late handler ran, frame stuck: True" not in stderr, stderr[-2000:]
    lost = _host_output_survived(stdout)
    assert not [m for m in lost if "lines" in m], f"the host lost {lost}"


@pytest.mark.slow(reason="each run loads PyTorch in a native host (about 10 s)")
@pytest.mark.parametrize("how", ["exit", "exit-thread"])
def test_host_output_and_exit_work_survive_the_guard(vsscript_host: Path, tmp_path: Path, vs_env: dict[str, str],
                                                     how: str) -> None:
    """With frames that stop in time the guard only delays the host's exit: its buffered stdout and
    its earlier atexit handler are there, with its status."""
    script = _script(tmp_path, "out.vpy", """\
        clips.moving_pattern(96, 64, 30).edvr.Restore(model="edvr_demo", device="cpu").set_output()
        """)
    host = subprocess.Popen([str(vsscript_host), how, str(script), "8", "1500"], env=vs_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr, _ = _exit_after_main_returned(host)
    assert host.returncode == 0, (host.returncode, stderr[-2000:])
    assert not _host_output_survived(stdout), (_host_output_survived(stdout), stderr[-2000:])


@pytest.mark.slow(reason="the host waits the 10 s bound for its parked worker threads")
@pytest.mark.parametrize("how", ["exit-free", "exit-free-late"])
def test_host_that_frees_its_core_at_exit_still_exits_within_the_bound(vsscript_host: Path, tmp_path: Path,
                                                                       vs_env: dict[str, str], how: str) -> None:
    """An atexit handler of the host frees the core while frames are stopped at exit: the core waits
    for its worker threads, and those with a stopped frame are parked. At the bound one parked
    thread ends the process with exit()'s status, stdout flushed first (it was not: the host's
    buffered lines were lost; its earlier exit work is still skipped, docs/hosts.md).
    exit-free-late registers the freeing handler after the first frame, as a host author would, so
    that it runs before the plugin's on_exit entries: it hung (the main-thread hook waited without
    the status, then the parked threads waited for a status that the handler behind the host's
    never delivered).

    The source is native (no Python function in the graph): VapourSynth forbids freeing a core with
    requests in flight, and a Python function computed in a core being freed crashed in 1 of 3
    runs (std.ModifyFrame)."""
    script = tmp_path / "free.vpy"
    script.write_text(NATIVE_SOURCE_SCRIPT)
    host = subprocess.Popen([str(vsscript_host), how, str(script), "8", "1500" if how == "exit-free" else "200"],
                            env=vs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr, took = _exit_after_main_returned(host)
    assert host.returncode == 0, (host.returncode, stderr[-2000:])
    assert took < 15, f"exit took {took:.1f} s after main returned"
    assert "lines" not in " ".join(_host_output_survived(stdout)), (_host_output_survived(stdout), stderr[-2000:])


@pytest.mark.slow(reason="the host waits the 10 s bound for a parked frame")
def test_without_exit_status_a_host_waiting_for_a_frame_at_exit_gets_an_error(vsscript_host: Path, tmp_path: Path,
                                                                              vs_env: dict[str, str]) -> None:
    """The guard as macOS, musl and Windows get it (VSEDVR_EXIT_WITHOUT_STATUS=1: atexit only, no
    status): a host's exit handler asks for a frame synchronously while the process exits. The
    frame parks, and at the bound it comes back as an error; the host's exit goes on, its earlier
    exit work and buffered output are there. It hung: parked threads waited for a status that only
    glibc's on_exit delivers (killed after 60 s)."""
    script = tmp_path / "wait.vpy"
    script.write_text(NATIVE_SOURCE_SCRIPT)
    host = subprocess.Popen([str(vsscript_host), "exit-wait", str(script), "8", "200"],
                            env={**vs_env, "VSEDVR_EXIT_WITHOUT_STATUS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout, stderr, took = _exit_after_main_returned(host)
    assert host.returncode == 0, (host.returncode, stderr[-2000:])
    assert took < 15, f"exit took {took:.1f} s after main returned"
    assert "frame 8 at exit: Restore: the process is exiting; frame not computed" in stdout, stdout[-2000:]
    assert not _host_output_survived(stdout), (_host_output_survived(stdout), stderr[-2000:])


@pytest.mark.slow(reason="a Python host that loads PyTorch (about 10 s)")
def test_exit_from_a_thread_holding_the_gil_does_not_wait_for_frames(tmp_path: Path, vs_env: dict[str, str]) -> None:
    """exit() called with the GIL held (a C extension, ctypes.PyDLL) while frames are in flight: the
    frames need the GIL to leave Python, so the guard ends the process at once with the status
    instead of waiting for its full 10 s bound for nothing (it took 10 s)."""
    script = tmp_path / "gil.py"
    script.write_text(textwrap.dedent(f"""\
        import ctypes
        import sys
        import time
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        clip = clips.moving_pattern(96, 64, 30).edvr.Restore(model="edvr_demo", device="cpu")
        pending = [clip.get_frame_async(n) for n in range(8)]
        time.sleep(1.5)
        print("exiting", flush=True)
        ctypes.PyDLL(None).exit(3)  # PyDLL: called without releasing the GIL
        """))
    host = subprocess.Popen([sys.executable, str(script)], env=vs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert host.stdout.readline() == "exiting\n", host.stderr.read()
        started = time.monotonic()
        _, stderr = host.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        host.kill()
        host.communicate()
    assert host.returncode == 3, (host.returncode, stderr[-2000:])
    assert took < 6, f"exit took {took:.1f} s after exit() was called"


@pytest.mark.slow(reason="two host runs of two EDVR Restores at 48x32 (about a minute on a shared machine); "
                         "test_thread_count keeps thread-count independence in make test")
def test_two_restores_at_once_equal_one_after_the_other(vsscript_host: Path, tmp_path: Path,
                                                         vs_env: dict[str, str]) -> None:
    """Two Restores rendering together in one host give the frames each gives alone: neither
    changes the other's thread count (the banded deformable convolution used to set the
    process-wide one while it ran)."""
    script = _script(tmp_path, "two.vpy", """\
        clips.moving_pattern(48, 32, 8, seed=1).edvr.Restore(model="edvr_demo", device="cpu").set_output(0)
        clips.moving_pattern(48, 32, 8, seed=2).edvr.Restore(model="edvr_demo", device="cpu").set_output(1)
        """)
    runs = {}
    for how in ("frames-apart", "frames"):
        done = subprocess.run([str(vsscript_host), how, str(script), "8"], env=vs_env, capture_output=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        runs[how] = np.frombuffer(done.stdout, dtype=np.float32).reshape(8, 2, 3, 128, 192)
    differing = [(n, k) for n in range(8) for k in range(2)
                 if not np.array_equal(runs["frames"][n, k], runs["frames-apart"][n, k])]
    assert not differing, f"{len(differing)} of 16 frames differ (frame, output): {differing}"


def test_frame_time_warnings_reach_the_hosts_log_handler(vsscript_host: Path, tmp_path: Path,
                                                         vs_env: dict[str, str]) -> None:
    """The NaN warning is raised on a core worker thread while a frame is computed; the host's log
    handler (a previewer's log pane) gets it, and it is not also on stderr."""
    script = _script(tmp_path, "nan.vpy", """\
        clip = vs.core.std.BlankClip(width=32, height=24, length=6, format=vs.RGBS, color=[0.5, 0.5, 0.5])
        clip = vs.core.std.Expr(clip, ["x 0 * 0 /", "", ""])  # 0/0: NaN in the R plane
        clip.edvr.Restore(model="edvr_demo", device="cpu").set_output()
        """)
    done = subprocess.run([str(vsscript_host), "log", str(script), "3"], env=vs_env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    messages = done.stdout.splitlines()[1:]
    assert [m for m in messages if "NaN or infinite samples" in m], (done.stdout, done.stderr)
    assert "NaN or infinite" not in done.stderr
