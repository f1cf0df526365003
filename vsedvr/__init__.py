"""vsedvr: EDVR video restoration for VapourSynth.

Scripts use the autoloaded plugin, ``core.edvr.Restore(clip, ...)``. From Python,
:func:`restore` is the same call (it loads the plugin first if the core has not), and
:func:`load_model` gives the network itself.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "restore", "plugin_path", "MODELS"]

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .zoo import MODELS, load_model

if TYPE_CHECKING:
    import vapoursynth as vs

PLUGIN_NAME = "libvsedvr.so"


def plugin_path() -> Path | None:
    """Where the native plugin is installed (``vapoursynth/plugins/libvsedvr.so``), or None."""
    import importlib.util

    spec = importlib.util.find_spec("vapoursynth")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "plugins" / PLUGIN_NAME
        if candidate.exists():
            return candidate
    return None


def restore(clip: vs.VideoNode, model: str | os.PathLike = "edvrm", **kwargs: Any) -> vs.VideoNode:
    """``core.edvr.Restore`` for Python callers; see README for every parameter.

    :param clip: RGBS (computes in fp32) or RGBH clip of constant format and size.
    :param model: a zoo name (``python -m vsedvr models``) or a checkpoint path.
    """
    import vapoursynth as vs

    core = vs.core
    if not hasattr(core, "edvr"):
        path = plugin_path()
        if path is None:
            raise vs.Error("edvr: the native plugin libvsedvr.so is not installed next to VapourSynth; "
                           "reinstall vsedvr with `pip install .` (not editable)")
        core.std.LoadPlugin(str(path))
    return core.edvr.Restore(clip, model=os.fspath(model), **kwargs)
