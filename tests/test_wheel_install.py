"""The manylinux wheel `make wheels` builds installs without a compiler and works.

A fresh virtual environment gets VapourSynth the way tools/bootstrap.py installs it on this Python
and the wheel, with no C compiler reachable (CC and PATH point at none). PyTorch is not
downloaded again: once both are installed, a .pth file puts .venv's site-packages after the fresh
environment's own, so vsedvr, VapourSynth and the plugin all come from the fresh environment.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import bootstrap  # noqa: E402
import build_wheels  # noqa: E402

pytestmark = pytest.mark.slow(reason="builds the manylinux wheel (auditwheel) and installs it into a fresh venv")


def test_manylinux_wheel_installs_without_a_compiler_and_the_core_autoloads_it(tmp_path: Path) -> None:
    wheel = build_wheels.manylinux_wheel(tmp_path, tmp_path)
    assert wheel.name.startswith("vsedvr-") and "-py3-none-manylinux_2_" in wheel.name, wheel.name
    fresh = tmp_path / "fresh-venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    no_compiler = tmp_path / "no-compiler"
    no_compiler.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
           "CC": str(no_compiler / "cc"), "PATH": f"{fresh / 'bin'}:{no_compiler}",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    # .venv's pip, run for the fresh environment: no pip download either
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", bootstrap.vapoursynth_requirement(), str(wheel)],
                   env=env, check=True, capture_output=True, timeout=600)
    assert (site / "vapoursynth" / "plugins" / "libvsedvr.so").exists()
    (site / "zz-reuse-dot-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after pip: see above
    info = subprocess.run([str(fresh / "bin" / "vsedvr"), "info"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert info.returncode == 0, info.stdout + info.stderr
    plugin_line = next(line for line in info.stdout.splitlines() if line.startswith("plugin"))
    assert f"{site / 'vapoursynth' / 'plugins' / 'libvsedvr.so'}" in plugin_line, info.stdout
