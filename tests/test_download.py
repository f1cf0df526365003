"""fetch(): real HTTP server on 127.0.0.1, real files, real subprocesses."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopback_server import Server
from vsedvr.zoo import ModelError, ModelSpec, cache_dir, fetch, verify
from vsedvr.zoo.cache import _file_lock
from vsedvr.zoo.registry import MMEDIT_BASE_URL

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"num_feat": 8, "num_frame": 3}
PAYLOAD = os.urandom(200_000) + b"end"
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("VSEDVR_HOME", str(d))
    monkeypatch.delenv("VSEDVR_BASE_URL", raising=False)
    return d


def make_spec(filename: str, url: str | None, name: str = "test") -> ModelSpec:
    return ModelSpec(name=name, task="sr", scale=4, num_frames=3, arch=ARCH, filename=filename, url=url)


def leftovers(d: Path) -> list[str]:
    """The files in the cache folder, lock files included: a fetch leaves no lock file behind."""
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("VSEDVR_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vsedvr"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vsedvr"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cache_dir() == tmp_path / "torch" / "vsedvr"
    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_good_download_then_cached(server: Server, home: Path) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    spec = make_spec(name, server.add(f"/m/{name}", PAYLOAD))
    path = fetch(spec, progress=False)
    assert path == home / name and path.read_bytes() == PAYLOAD
    assert fetch(spec, progress=False) == path
    assert server.gets[f"/m/{name}"] == 1
    assert verify(spec) is True
    assert leftovers(home) == [name]


def test_base_url_override(server: Server, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edvr_test-{SHA[:10]}.pth"
    server.add(f"/restorers/edvr/{name}", PAYLOAD)
    monkeypatch.setenv("VSEDVR_BASE_URL", server.base + "/")
    spec = make_spec(name, f"{MMEDIT_BASE_URL}restorers/edvr/{name}")
    assert fetch(spec, progress=False).read_bytes() == PAYLOAD
    assert server.gets[f"/restorers/edvr/{name}"] == 1


def test_wrong_hash(server: Server, home: Path) -> None:
    name = "tiny-deadbeef.pth"
    url = server.add(f"/{name}", PAYLOAD)
    with pytest.raises(ModelError) as info:
        fetch(make_spec(name, url), progress=False)
    msg = str(info.value)
    assert url in msg and SHA in msg and "deadbeef" in msg and str(home / name) in msg
    assert not (home / name).exists()
    assert leftovers(home) == []


def test_truncated_transfer(server: Server, home: Path) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    url = server.add(f"/{name}", PAYLOAD, mode="short")
    with pytest.raises(ModelError) as info:
        fetch(make_spec(name, url), progress=False)
    msg = str(info.value)
    assert url in msg and ("cut short" in msg or "IncompleteRead" in msg) and str(home / name) in msg
    assert leftovers(home) == []


def test_server_down(home: Path) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"tiny-{SHA[:8]}.pth"
    url = f"http://127.0.0.1:{port}/{name}"
    with pytest.raises(ModelError) as info:
        fetch(make_spec(name, url), progress=False, timeout=5)
    msg = str(info.value)
    assert url in msg and str(home / name) in msg and "place it at" in msg
    assert leftovers(home) == []


def test_http_404(server: Server, home: Path) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    with pytest.raises(ModelError, match="HTTP 404"):
        fetch(make_spec(name, server.base + "/missing.pth"), progress=False)
    assert leftovers(home) == []


def test_corrupt_cached_file_is_replaced(server: Server, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    home.mkdir()
    (home / name).write_bytes(b"garbage")
    spec = make_spec(name, server.add(f"/{name}", PAYLOAD))
    with caplog.at_level(logging.WARNING, logger="vsedvr"):
        assert fetch(spec, progress=False).read_bytes() == PAYLOAD
    assert "downloading it again" in caplog.text
    (home / name).write_bytes(b"garbage again!")  # changed after verification: re-hashed
    assert verify(spec) is False


def test_manual_file_without_url(home: Path) -> None:
    name = f"handmade-{SHA[:8]}.pth"
    spec = ModelSpec(name="hand", task="sr", scale=4, num_frames=3, arch=ARCH, filename=name,
                     source="the moon")
    with pytest.raises(ModelError) as info:
        fetch(spec)
    assert "not downloaded automatically" in str(info.value) and "the moon" in str(info.value)
    assert str(home / name) in str(info.value)
    with pytest.raises(ModelError, match="not present"):
        verify(spec)
    home.mkdir()
    (home / name).write_bytes(PAYLOAD[:-1])
    with pytest.raises(ModelError, match="not the expected file"):
        fetch(spec)
    (home / name).write_bytes(PAYLOAD)
    assert fetch(spec) == home / name


def test_progress_goes_to_stderr_only(server: Server, home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    spec = make_spec(name, server.add(f"/{name}", PAYLOAD))
    fetch(spec, progress=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert name in err and "100.0%" in err


def test_progress_callable(server: Server, home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    spec = make_spec(name, server.add(f"/{name}", PAYLOAD))
    calls: list[tuple[int, int | None]] = []
    fetch(spec, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert capfd.readouterr() == ("", "")


CHILD = """
import json, sys
from vsedvr.zoo import ModelSpec, fetch
a = json.loads(sys.argv[1])
spec = ModelSpec(name="t", task="sr", scale=4, num_frames=3, arch={"num_frame": 3},
                 filename=a["filename"], url=a["url"])
print("ready", flush=True)
print(fetch(spec, progress=False), flush=True)
"""


def test_two_processes_fetch_at_once(server: Server, home: Path) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    url = server.add(f"/{name}", PAYLOAD, mode="slow")
    home.mkdir()
    env = dict(os.environ, VSEDVR_HOME=str(home), PYTHONPATH=str(ROOT))
    arg = json.dumps({"filename": name, "url": url})
    # Hold the lock so that both children reach it before either can download.
    with _file_lock(home / f"{name}.lock"):
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, arg], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert out.splitlines()[-1] == str(home / name)
    assert server.gets[f"/{name}"] == 1
    assert (home / name).read_bytes() == PAYLOAD
    assert leftovers(home) == [name]


def test_stale_part_files_are_removed(server: Server, home: Path) -> None:
    name = f"tiny-{SHA[:8]}.pth"
    home.mkdir()
    (home / f"{name}.k1ll3d.part").write_bytes(b"left by a killed process")
    (home / "other.pth.x.part").write_bytes(b"someone else's")
    path = fetch(make_spec(name, server.add(f"/{name}", PAYLOAD)), progress=False)
    assert leftovers(home) == sorted([name, "other.pth.x.part"])
    assert path.stat().st_mode & 0o777 == 0o644
