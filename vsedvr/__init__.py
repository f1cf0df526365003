"""vsedvr: EDVR video restoration for VapourSynth.

Scripts use the autoloaded plugin, ``core.edvr.Restore(clip, ...)``. From Python,
:func:`restore` is the same call (it loads the plugin first if the core has not), and
:func:`load_model` gives the network itself.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "restore", "plugin_path", "MODELS", "Padding", "Precision"]

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .filter.options import Padding, Precision, wrong_type
from .zoo import MODELS, load_model

if TYPE_CHECKING:
    import vapoursynth as vs

#: The native plugin's file name on this platform, in vapoursynth/plugins/.
PLUGIN_NAME = {"win32": "vsedvr.dll", "darwin": "libvsedvr.dylib"}.get(sys.platform, "libvsedvr.so")


def plugin_path() -> Path | None:
    """Where the native plugin is installed (``vapoursynth/plugins/``, :data:`PLUGIN_NAME`), or None."""
    import importlib.util

    spec = importlib.util.find_spec("vapoursynth")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "plugins" / PLUGIN_NAME
        if candidate.exists():
            return candidate
    return None


def restore(
    clip: vs.VideoNode,
    model: str | os.PathLike[str] = "edvrm",
    *,
    device: str = "auto",
    padding: Padding | None = None,
    scenechange: bool = True,
    tile: int | tuple[int, int] | None = None,
    tile_overlap: int | None = None,
    precision: Precision | None = None,
    compile: bool = False,
) -> vs.VideoNode:
    """Restore *clip* with EDVR: ``core.edvr.Restore`` with typed keyword parameters.

    Loads the native plugin first when the core has not autoloaded it (editable installs).
    Every output frame is computed from a window of ``T`` input frames (5, or 7 for the
    Vimeo-90K model) centred on it.

    :param clip: RGBS or RGBH clip of constant format and size, values in [0, 1]. RGBS computes
        in fp32; RGBH computes in fp16 on CUDA (fp32 on the CPU) and returns RGBH. Convert YUV
        first, e.g. ``core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")``.
    :param model: a zoo name (``python -m vsedvr models``; downloaded into the cache on first use
        where it can be) or the path of an EDVR checkpoint from mmediting/mmagic or BasicSR.
        Default ``"edvrm"``: EDVR-M, 4x super-resolution.
    :param device: ``"auto"`` (the first CUDA device if PyTorch sees one, else the CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    :param padding: how windows are completed at the clip's ends and at scene changes:
        ``"reflection_circle"``, ``"replicate"``, ``"reflection"`` or ``"circle"``. ``None``: the
        model's own (``"replicate"`` for the deblurring models, else ``"reflection_circle"``).
    :param scenechange: treat frames whose ``_SceneChangePrev``/``_SceneChangeNext`` property is 1
        as scene edges, so that no window mixes two scenes.
    :param tile: process each frame in tiles of this many input pixels, ``(width, height)`` or one
        size for both, to bound memory on large frames; multiples of 4 (16 for deblurring models).
        ``None``: whole frames.
    :param tile_overlap: input pixels shared by neighbouring tiles (default 16 with tiles); a
        multiple of 4 (16 for deblurring models).
    :param precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (the last two on CUDA only). ``None`` or
        ``"auto"``: fp16 for RGBH clips on CUDA, else fp32.
    :param compile: run the network through ``torch.compile``. The first frame of each tile
        shape then waits for the compilation (about a minute); see docs/cuda.md for what it buys.
    :return: the restored clip: 4x the size (1x for deblurring models), same format, frame count
        and frame properties.
    :raises vapoursynth.Error: a wrong argument, an unusable clip or model; the message names it.
    """
    import vapoursynth as vs

    # tests/test_options.py holds this signature to the table (vsedvr/filter/options.py)
    wrong = wrong_type(model=model, device=device, padding=padding, scenechange=scenechange, tile=tile,
                       tile_overlap=tile_overlap, precision=precision, compile=compile)
    if wrong:
        raise vs.Error(f"Restore: {wrong}")
    core = vs.core
    if not hasattr(core, "edvr"):
        path = plugin_path()
        if path is None:
            raise vs.Error(f"edvr: the native plugin {PLUGIN_NAME} is not installed next to VapourSynth; "
                           "reinstall vsedvr with `pip install .` (not editable)")
        core.std.LoadPlugin(str(path))
    options: dict[str, Any] = {"model": os.fspath(model), "device": device, "scenechange": int(bool(scenechange)),
                               "compile": int(bool(compile))}
    optional = {"padding": padding, "tile": tile, "tile_overlap": tile_overlap, "precision": precision}
    options.update({name: value for name, value in optional.items() if value is not None})
    return core.edvr.Restore(clip, **options)
