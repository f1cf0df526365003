"""Builds the native VapourSynth plugin into the wheel as vapoursynth/plugins/libvsedvr.so.

The plugin is a plain shared library (no libpython at link time), placed in the folder the
VapourSynth core autoloads. Everything else is declared in setup.cfg.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools._distutils.ccompiler import new_compiler
from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "native" / "edvr_filter.c"
PLUGIN = "libvsedvr.so"


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
        cc = new_compiler()
        objects = cc.compile(
            [str(SOURCE)], output_dir=str(Path(self.build_lib).parent / "temp-native"),
            include_dirs=[vapoursynth_include()],
            macros=[("VSEDVR_VERSION", f'"{version}"'), ("VSEDVR_VERSION_MAJOR", str(major)),
                    ("VSEDVR_VERSION_MINOR", str(minor))],
            extra_postargs=["-O2", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"])
        cc.link_shared_object(objects, str(out_dir / PLUGIN), libraries=["dl", "pthread"])


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: the plugin is native code but does not depend on the Python ABI."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPyWithPlugin, "bdist_wheel": PlatformWheel})
