"""Builds the native VapourSynth plugin into the wheel at vapoursynth/plugins/.

The plugin is a plain shared library (no libpython at link time), placed in the folder the
VapourSynth core autoloads: libvsedvr.so (Linux), libvsedvr.dylib (macOS), vsedvr.dll (Windows).
VSEDVR_TARGET=win_amd64 cross-compiles the Windows DLL with MinGW-w64 (x86_64-w64-mingw32-gcc,
statically linked: it needs only Windows system DLLs) and tags the wheel win_amd64; `make wheels`
(tools/build_wheels.py) uses it. Everything else is declared in setup.cfg.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools._distutils.ccompiler import new_compiler
from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent
SOURCES = sorted((ROOT / "native").glob("*.c"))
TARGET = os.environ.get("VSEDVR_TARGET", "")  # "win_amd64": cross-compile with MinGW-w64
MINGW = "x86_64-w64-mingw32-gcc"


def plugin_name() -> str:
    if TARGET == "win_amd64" or sys.platform == "win32":
        return "vsedvr.dll"
    return "libvsedvr.dylib" if sys.platform == "darwin" else "libvsedvr.so"


def vapoursynth_include() -> str:
    """VapourSynth4.h's folder: $VAPOURSYNTH_INCLUDE, else the installed vapoursynth package's."""
    if os.environ.get("VAPOURSYNTH_INCLUDE"):
        return os.environ["VAPOURSYNTH_INCLUDE"]
    spec = importlib.util.find_spec("vapoursynth")  # no import: that would start a core
    for folder in (spec.submodule_search_locations or []) if spec else []:
        include = Path(folder) / "include"
        if (include / "VapourSynth4.h").exists():
            return str(include)
    sys.exit("setup.py: VapourSynth4.h not found: install vapoursynth (R74 or newer) first, "
             "or set VAPOURSYNTH_INCLUDE to the folder that holds it")


def package_version() -> str:
    text = (ROOT / "vsedvr" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


class BuildPyWithPlugin(build_py):
    """build_py, plus the native plugin compiled into build_lib/vapoursynth/plugins."""

    def run(self) -> None:
        super().run()
        version = package_version()
        major, minor = (int(x) for x in version.split(".")[:2])
        out_dir = Path(self.build_lib) / "vapoursynth" / "plugins"
        out_dir.mkdir(parents=True, exist_ok=True)
        # the version as bare tokens (a pp-number), made a string in C: quotes do not survive every
        # compiler's command line (MSVC's through spawn)
        macros = [("VSEDVR_VERSION_TOKENS", version), ("VSEDVR_VERSION_MAJOR", str(major)),
                  ("VSEDVR_VERSION_MINOR", str(minor))]
        target = out_dir / plugin_name()
        if TARGET == "win_amd64":
            build_with_mingw(macros, target)
            return
        if TARGET:
            sys.exit(f"setup.py: VSEDVR_TARGET={TARGET!r} is not a target (win_amd64, or unset for this machine)")
        cc = new_compiler()
        msvc = cc.compiler_type == "msvc"
        flags = ["/O2", "/std:c11", "/W3"] if msvc else ["-O2", "-fPIC", "-std=c11", "-Wall", "-Wextra",
                                                          "-fvisibility=hidden"]
        objects = cc.compile([str(s) for s in SOURCES], output_dir=str(Path(self.build_lib).parent / "temp-native"),
                             include_dirs=[vapoursynth_include()], macros=macros, extra_postargs=flags)
        libraries = [] if msvc else ["dl", "pthread"]
        cc.link_shared_object(objects, str(target), libraries=libraries)


def build_with_mingw(macros: list[tuple[str, str]], target: Path) -> None:
    """The Windows DLL, cross-compiled: static libgcc and C runtime pieces, only system DLLs imported."""
    defines = [f"-D{name}={value}" for name, value in macros]
    subprocess.run([MINGW, "-shared", "-O2", "-std=c11", "-Wall", "-Wextra", "-static", "-static-libgcc",
                    f"-I{vapoursynth_include()}", *defines, *map(str, SOURCES), "-o", str(target),
                    "-Wl,--no-insert-timestamp", "-s"], check=True)


class PluginDistribution(Distribution):
    """Native code, so the wheel's root is platlib (auditwheel and pip's layout need it)."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: the plugin is native code but does not depend on the Python ABI."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", "win_amd64" if TARGET == "win_amd64" else plat


setup(distclass=PluginDistribution, cmdclass={"build_py": BuildPyWithPlugin, "bdist_wheel": PlatformWheel})
