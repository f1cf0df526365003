"""``vsedvr render --ray`` on a real two-node Ray cluster on this machine (``ray start --head`` and a
second ``ray start --address``, loopback only, one CPU each), with token authentication, as a user
would run it. The cluster is started once per test session, with its own HOME (the token in
``HOME/.ray/auth_token``) and temp dir, so nothing depends on the user's ~/.ray; at the end its
processes (found by that temp dir in their command lines) are killed by pid.

The tests run in file order: the last one kills the second node's raylet.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.slow(reason="a real two-node Ray cluster (ray start twice, then a raylet killed): minutes")

# 40 frames of noise averaged over a window. The fault comes with the script's arguments (a Ray
# worker has its node's environment, not the driver's): -a kill=PID:MARKER kills that raylet (the
# second node) from the first frame >= 5 rendered under it, once; -a sleep=SECONDS per frame.
SCRIPT = '''
import os, signal, time
import numpy as np
import vapoursynth as vs
core = vs.core
def fault(n):
    kill = globals().get("kill")
    if kill and n >= 5:
        raylet, marker = kill.split(":")
        pid = os.getpid()
        while pid > 1 and pid != int(raylet):
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        if pid == int(raylet) and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(pid, signal.SIGKILL)
    time.sleep(float(globals().get("sleep", "0")))
noise = np.random.default_rng(1).integers(0, 256, (40, 48, 64), dtype=np.uint8)
blank = core.std.BlankClip(width=64, height=48, length=40, format=vs.YUV420P8, fpsnum=25, fpsden=1)
def fill(n, f):
    fault(n)
    out = f.copy()
    np.asarray(out[0])[:] = noise[n]
    return out
clip = core.std.ModifyFrame(blank, blank, fill)
core.std.AverageFrames(clip, weights=[1, 2, 3, 2, 1]).set_output()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the cluster's private temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class Cluster:
    def __init__(self, root: Path, env: dict[str, str], address: str, second_raylet: int) -> None:
        self.root, self.env, self.address, self.second_raylet = root, env, address, second_raylet


@pytest.fixture(scope="session")
def cluster(vs_env: dict[str, str]) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = dict(vs_env, HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(80 * 2**20),
              "--disable-usage-stats"]

    def node_ports() -> list[str]:
        return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    started = []
    try:
        for cmd in ([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                     "--temp-dir", str(root / "ray"), *common, *node_ports()],
                    [RAY, "start", "--address", f"127.0.0.1:{port}", *common, *node_ports()]):
            before = set(ours(str(root)))
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, start_new_session=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            started.append(set(ours(str(root))) - before)
        raylets = [p for p in started[1] if b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]]
        assert len(raylets) == 1, raylets
        yield Cluster(root, env, f"127.0.0.1:{port}", raylets[0])
    finally:
        for _ in range(3):
            for pid in ours(str(root)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory, vspipe: str, vs_env: dict[str, str]) -> tuple[Path, list[str]]:
    from test_render import framemd5

    path = tmp_path_factory.mktemp("cluster") / "noise.vpy"
    path.write_text(SCRIPT)
    y4m = path.with_suffix(".y4m")
    subprocess.run([vspipe, "-c", "y4m", str(path), str(y4m)], env=vs_env, check=True, capture_output=True)
    return path, framemd5(y4m)


def render(cluster: Cluster, *args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vsedvr", "render", *args, "--ray", cluster.address, "--ffmpeg",
                           FFMPEG, "--progress-interval", "2"], env=env or cluster.env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_driver_without_the_token_is_told_why(cluster, script, tmp_path):
    """Token authentication on, the driver without RAY_AUTH_MODE=token and without the token."""
    env = dict(cluster.env, HOME=str(tmp_path / "other-home"))
    env.pop("RAY_AUTH_MODE")
    proc = render(cluster, str(script[0]), "-o", str(tmp_path / "out.mkv"), env=env, timeout=240)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "token authentication" in last and "RAY_AUTH_MODE=token" in last and "auth_token" in last, proc.stderr
    assert proc.stdout == ""


def test_more_cpus_per_task_than_any_node_fails_at_once(cluster, script, tmp_path):
    """Two nodes of one CPU: two CPUs in all, but no node can run a 2-CPU worker."""
    proc = render(cluster, str(script[0]), "-o", str(tmp_path / "out.mkv"), "--cpus-per-task", "2", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "--cpus-per-task 2: no node of the Ray cluster has that many CPUs (its nodes have 1, 1)" in proc.stderr
    assert proc.stdout == ""


def test_a_node_killed_mid_render(cluster, script, tmp_path):
    """The second node's raylet is killed while its worker renders: the render ends on the head node
    with the frames of one vspipe, Ray's messages about the dead node stay off stdout, and the dead
    node's partial file is gone from the work folder."""
    path, plain = script
    out = tmp_path / "out.mkv"
    proc = render(cluster, str(path), "-o", str(out), "--segment", "10", "-a", "sleep=0.1",
                  "-a", f"kill={cluster.second_raylet}:{tmp_path / 'killed'}")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "killed").exists(), proc.stderr  # the second node did render, and died
    assert proc.stdout == ""
    assert "2 1-CPU workers" in proc.stderr, proc.stderr
    from test_render import framemd5

    assert framemd5(out) == plain
    assert not list((tmp_path / "out.mkv.parts").glob(".*.partial"))
