"""Shared fixtures: a VapourSynth environment that does not depend on the user's HOME."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SLOW_WITHOUT_REASON = pytest.StashKey[list[str]]()  # node ids, for tests/test_tiers.py


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Notes the tests marked slow without a reason (tests/test_tiers.py fails on them)."""
    config.stash[SLOW_WITHOUT_REASON] = [item.nodeid for item in items
                                         if (mark := item.get_closest_marker("slow")) and not mark.kwargs.get("reason")]


@pytest.fixture(scope="session")
def vs_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for vspipe subprocesses: its own XDG_CONFIG_HOME, configured by `vapoursynth config`."""
    config_home = tmp_path_factory.mktemp("xdg-config")
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(config_home)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VSEDVR_HOME"] = str(tmp_path_factory.mktemp("vsedvr-home"))
    subprocess.run([str(VENV_BIN / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
    assert (config_home / "vapoursynth" / "vapoursynth.toml").exists()
    return env


@pytest.fixture(scope="session")
def vspipe() -> str:
    return str(VENV_BIN / "vspipe")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small EDVR (8 channels, TSA, 5 frames, x4) with random weights, in BasicSR's layout.

    The conv weights are doubled from PyTorch's default init: with the default init every frame
    but the centre changes the output by ~1e-5 only, too little for a test to tell windows apart.
    """
    import torch

    from vsedvr.nets import EDVR

    torch.manual_seed(0)
    net = EDVR(num_feat=8, num_frame=5, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.dim() == 4 and "conv_offset" not in name:
                param.mul_(2.0)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_edvr.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module: faster than two on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def server() -> Iterator[object]:
    """A real HTTP server on 127.0.0.1 (tests/loopback_server.py), closed after the test."""
    from loopback_server import Server

    s = Server()
    yield s
    s.close()
