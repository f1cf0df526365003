"""make wheels: the binary wheels this machine can build, into dist/.

* vsedvr-<v>-py3-none-manylinux_<glibc>_x86_64.whl: the plugin built here (gcc), its tag the
  oldest manylinux policy auditwheel finds its symbols in (``auditwheel show``: the plugin
  links only glibc, so there is nothing to graft and ``auditwheel repair``, which needs patchelf,
  is not needed), retagged with ``wheel tags``;
* vsedvr-<v>-py3-none-win_amd64.whl: the plugin cross-compiled with MinGW-w64
  (Debian's gcc-mingw-w64-x86-64), linked statically; its import table is checked to name only
  Windows system DLLs.

Both hold the pure-Python package and the plugin at vapoursynth/plugins/. macOS wheels and
MSVC-built Windows wheels come from .github/workflows/wheels.yml on hosted runners.
Run with .venv's Python (make wheels does): it needs setuptools, wheel, auditwheel and the
VapourSynth headers of the installed vapoursynth package.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
BIN = Path(sys.executable).parent
#: What a Windows DLL of this plugin may import: system DLLs present on every Windows x64.
WINDOWS_SYSTEM_DLLS = {"kernel32.dll", "msvcrt.dll", "ucrtbase.dll"}


def log(msg: str) -> None:
    print(f"[wheels] {msg}", file=sys.stderr, flush=True)


def build_wheel(out: Path, env: dict[str, str]) -> Path:
    """`pip wheel .` from a clean build folder (the two targets would share build/)."""
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    try:
        subprocess.run([str(BIN / "pip"), "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
                       cwd=ROOT, env=env, check=True)
    finally:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def manylinux_wheel(work: Path, dest: Path = DIST) -> Path:
    """The Linux wheel, tagged manylinux, into dest."""
    wheel = build_wheel(work / "linux", {k: v for k, v in os.environ.items() if k != "VSEDVR_TARGET"})
    shown = subprocess.run([str(BIN / "auditwheel"), "show", str(wheel)], capture_output=True, text=True, check=True)
    policy = re.search(r'consistent with the\s+following platform tag:\s*"([^"]+)"', shown.stdout)
    if not policy or not policy.group(1).startswith("manylinux_"):
        sys.exit(f"build_wheels: auditwheel finds no manylinux policy for the plugin:\n{shown.stdout}")
    log(f"Linux plugin: {policy.group(1)} (auditwheel show)")
    tagged = subprocess.run([sys.executable, "-m", "wheel", "tags", "--remove", "--platform-tag", policy.group(1),
                             str(wheel)], capture_output=True, text=True, check=True).stdout.strip()
    return Path(shutil.copy2(wheel.parent / tagged, dest / tagged))


def dll_imports(dll: Path) -> set[str]:
    """The DLLs named in a PE file's import table."""
    dump = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", str(dll)], capture_output=True, text=True,
                          check=True).stdout
    return {name.lower() for name in re.findall(r"DLL Name: (\S+)", dump)}


def windows_wheel(work: Path, dest: Path = DIST) -> Path:
    """The win_amd64 wheel, its DLL cross-compiled with MinGW-w64, into dest."""
    if not shutil.which("x86_64-w64-mingw32-gcc"):
        sys.exit("build_wheels: x86_64-w64-mingw32-gcc not found: apt-get install gcc-mingw-w64-x86-64")
    wheel = build_wheel(work / "windows", {**os.environ, "VSEDVR_TARGET": "win_amd64"})
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("vapoursynth/plugins/vsedvr.dll", work)
    imports = dll_imports(work / "vapoursynth" / "plugins" / "vsedvr.dll")
    if not imports <= WINDOWS_SYSTEM_DLLS:
        sys.exit(f"build_wheels: vsedvr.dll imports DLLs that are not Windows system DLLs: "
                 f"{sorted(imports - WINDOWS_SYSTEM_DLLS)}")
    log(f"Windows plugin imports only {sorted(imports)}")
    return Path(shutil.copy2(wheel, dest / wheel.name))


def main() -> None:
    DIST.mkdir(exist_ok=True)
    for old in DIST.glob("vsedvr-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in (manylinux_wheel(Path(tmp)), windows_wheel(Path(tmp))):
            log(f"{wheel.relative_to(ROOT)} ({wheel.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
