"""The Windows build of the plugin, in the real Windows VapourSynth core, under wine.

The win_amd64 wheel is built as `make wheels` builds it (MinGW-w64 cross-compiler), the Windows
core comes from the vapoursynth==81 win_amd64 wheel on the package index, and a small host
(tests/native/plugin_report_host.c) is cross-compiled and run under wine. The same host, built
for Linux, runs against the Linux core and plugin: both must report the same. There is no
Windows CPython here, so the Python side of Restore on Windows is built but never run: this host
has no Python, as a Windows host without Python would not.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import vapoursynth as vs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_wheels  # noqa: E402

HOST_SOURCE = ROOT / "tests" / "native" / "plugin_report_host.c"
WINDOWS_CORE_CACHE = ROOT / ".cache" / "windows"  # the downloaded wheel, kept between sessions
VS_RELEASE = 81
MINGW = "x86_64-w64-mingw32-gcc"

pytestmark = pytest.mark.slow(reason="cross-compiles the win_amd64 wheel and boots a wine prefix (a minute or more); "
                                     "needs MinGW-w64 and wine")


def _wine() -> str:
    wine = shutil.which("wine64") or shutil.which("wine")
    if not shutil.which(MINGW):
        pytest.skip(f"no MinGW-w64 cross-compiler ({MINGW}): apt-get install gcc-mingw-w64-x86-64")
    if not wine or not shutil.which("wineboot"):
        pytest.skip("no wine: apt-get install wine64")
    return wine


@pytest.fixture(scope="session")
def wine_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One wine prefix for the session (creating one takes seconds to a minute)."""
    _wine()
    prefix = tmp_path_factory.mktemp("wine-prefix")
    env = {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml=",
           "WINEARCH": "win64", "DISPLAY": ""}
    subprocess.run(["wineboot", "-i"], env=env, capture_output=True, timeout=300, check=True)
    yield env
    subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60)


def _windows_core_wheel() -> Path:
    wheels = sorted(WINDOWS_CORE_CACHE.glob(f"vapoursynth-{VS_RELEASE}-*-win_amd64.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", "--platform", "win_amd64", "--python-version", "3.12", "-d",
                        str(WINDOWS_CORE_CACHE), f"vapoursynth=={VS_RELEASE}"], check=True, capture_output=True)
        wheels = sorted(WINDOWS_CORE_CACHE.glob(f"vapoursynth-{VS_RELEASE}-*-win_amd64.whl"))
    return wheels[0]


@pytest.fixture(scope="session")
def windows_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The win_amd64 wheel of this checkout, built as `make wheels` builds it."""
    _wine()
    work = tmp_path_factory.mktemp("windows-wheel")
    return build_wheels.windows_wheel(work, work)


@pytest.fixture(scope="session")
def windows_site(tmp_path_factory: pytest.TempPathFactory, windows_wheel: Path) -> Path:
    """site-packages as pip lays it out on Windows: both wheels unpacked into one folder."""
    site = tmp_path_factory.mktemp("windows-site")
    with zipfile.ZipFile(_windows_core_wheel()) as zf:
        zf.extractall(site, [n for n in zf.namelist() if n.startswith("vapoursynth/") and not n.endswith(".pdb")])
    with zipfile.ZipFile(windows_wheel) as zf:
        zf.extractall(site)
    return site


def _host_report(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout.splitlines()


def test_windows_wheel_holds_the_dll_and_imports_only_system_dlls(windows_wheel: Path) -> None:
    assert windows_wheel.name.endswith("-py3-none-win_amd64.whl")
    names = zipfile.ZipFile(windows_wheel).namelist()
    assert "vapoursynth/plugins/vsedvr.dll" in names and "vsedvr/filter/plugin.py" in names, names
    assert not [n for n in names if n.endswith(".so")], names
    dll = windows_wheel.parent / "vsedvr.dll"
    dll.write_bytes(zipfile.ZipFile(windows_wheel).read("vapoursynth/plugins/vsedvr.dll"))
    imports = build_wheels.dll_imports(dll)
    assert imports <= build_wheels.WINDOWS_SYSTEM_DLLS, imports  # no libgcc, libwinpthread, python3XY.dll
    assert "kernel32.dll" in imports


def test_windows_core_loads_the_plugin_as_the_linux_core_does(windows_site: Path, wine_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    """Namespace, functions and argument strings, and Restore without Python: the Windows DLL in the
    real Windows core reports what the Linux plugin reports in the Linux core; both cores are freed
    without a warning."""
    core_folder = windows_site / "vapoursynth"
    host_exe = core_folder / "plugin_report_host.exe"  # next to libvapoursynth.dll, where Windows finds it
    subprocess.run([MINGW, "-std=c11", "-O1", "-Wall", f"-I{core_folder / 'include'}", str(HOST_SOURCE),
                    str(core_folder / "libvapoursynth.dll"), "-o", str(host_exe)], check=True)
    windows = _host_report(subprocess.run([_wine(), str(host_exe)], env=wine_env, capture_output=True, text=True,
                                          timeout=300))

    linux_package = Path(vs.__file__).resolve().parent
    linux_host = tmp_path / "plugin_report_host"
    subprocess.run([shutil.which("cc") or "gcc", "-std=c11", "-O1", "-Wall", f"-I{linux_package / 'include'}",
                    str(HOST_SOURCE), "-o", str(linux_host), f"-L{linux_package}", "-l:libvapoursynth.so.4",
                    f"-Wl,-rpath,{linux_package}"], check=True)
    linux = _host_report(subprocess.run([str(linux_host)], capture_output=True, text=True, timeout=120))

    assert "namespace: edvr" in windows
    assert any(line.startswith("function: Restore(clip:vnode;model:data:opt;") for line in windows), windows
    assert "Restore: Restore: needs a Python interpreter in the host process" in "\n".join(windows)
    assert windows[-1] == "core freed" and not [line for line in windows if line.startswith("log while freeing")]
    assert windows == linux
