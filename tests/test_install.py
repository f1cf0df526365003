"""Installing on your own machine as README.md and docs/install.md say: vsedvr is not on PyPI, so
they install it from a checkout or a wheel built in one; vspipe needs `vapoursynth config` or an
activated environment to find the Python."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import vsedvr

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL_MD = (ROOT / "docs" / "install.md").read_text()
OWN_MACHINE = INSTALL_MD.split("## Install on your own machine", 1)[1].split("\n## ", 1)[0]


def test_no_pip_install_from_the_index() -> None:
    """`pip install ... vsedvr` (the name, not a path) fails until vsedvr is published."""
    for name, text in [("README.md", (ROOT / "README.md").read_text()), ("docs/install.md", INSTALL_MD)]:
        lines = [line for line in text.splitlines() if re.search(r"pip install [^`#]*(?<![\w/.-])vsedvr(?![\w/.-])", line)]
        assert lines == [], f"{name}: {lines}"


def test_the_wheel_docs_install_md_builds_holds_the_plugin(tmp_path: Path) -> None:
    (command,) = [line.split("#")[0].strip() for line in OWN_MACHINE.splitlines() if line.startswith("pip wheel")]
    assert command == "pip wheel --no-deps -w dist ."
    out = tmp_path / "dist"
    # as documented, but into a temporary folder and from the packages already here (no index)
    subprocess.run([str(BIN / "pip"), "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = out.glob("*.whl")
    assert wheel.name == f"vsedvr-{vsedvr.__version__}-py3-none-linux_x86_64.whl"
    assert wheel.name in OWN_MACHINE  # the install line names the file the build writes
    names = zipfile.ZipFile(wheel).namelist()
    assert "vapoursynth/plugins/libvsedvr.so" in names, names  # platlib, at the root: where the core autoloads
    assert any("vsedvr/models/edvr_demo-" in n for n in names), names


def test_vspipe_finds_python_after_config_or_activation(tmp_path: Path) -> None:
    """Without `vapoursynth config` and outside the activated environment, vspipe cannot start
    Python; install.md says so, and either step fixes it."""
    assert "vapoursynth config" in OWN_MACHINE and "activated" in OWN_MACHINE
    script = tmp_path / "blank.vpy"
    script.write_text("import vapoursynth as vs\nvs.core.std.BlankClip(format=vs.YUV420P8, length=2).set_output()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "fresh-config")  # a machine where config never ran
    # the environment's bin folder off PATH, as in a new terminal (vspipe looks for a python on PATH)
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep) if Path(d) != BIN)

    def vspipe_info(shell_prefix: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", f"{shell_prefix}'{BIN / 'vspipe'}' --info '{script}'"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    bare = vspipe_info()
    assert bare.returncode != 0 and "vapoursynth config" in bare.stderr, bare.stderr
    activated = vspipe_info(f". '{BIN / 'activate'}' && ")
    assert activated.returncode == 0 and "Width: 640" in activated.stdout, activated.stderr
    configured = vspipe_info(f"'{BIN / 'vapoursynth'}' config >/dev/null && ")
    assert configured.returncode == 0 and "Width: 640" in configured.stdout, configured.stderr
