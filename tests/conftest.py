"""Shared fixtures: a VapourSynth environment that does not depend on the user's HOME."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


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
