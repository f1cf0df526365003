"""The plugin in real native hosts: one without Python, and a VSScript host as previewers are.

tests/native/vsscript_host.c is built on VSScript4 like vsedit: libvsscript embeds Python and
never finalises it, frames are asked for with getFrameAsync, and the host has its own log
handler on the core. docs/hosts.md says what such a host gets.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

TESTS = Path(__file__).resolve().parent
HOST_SOURCE = TESTS / "native" / "host_without_python.c"
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
