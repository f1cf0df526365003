"""Restore's options: one table, and the checks that need neither PyTorch nor a model.

:data:`OPTIONS` is the one place a parameter of ``core.edvr.Restore`` is described: its name, the
type the native plugin registers it with, its Python type, default, allowed values and help. The
plugin's argument checks (:func:`parse`), :func:`vsedvr.restore`'s type checks
(:func:`wrong_type`), the editor stubs (vsedvr/stubs.py) and the plugin's registration string
(:func:`registration`, which tests compare with native/edvr_filter.c) are made from it; tests check
``restore()``'s signature and docs/usage.md's table against it. A new parameter: a row here, the
C string, and the code that uses it.

No PyTorch here: ``vsedvr.restore`` and ``vsedvr stubs`` import this module.
"""
from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..zoo.registry import DEFAULT_MODEL, MODELS
from .windows import PADDINGS, Padding

__all__ = ["ArgumentError", "Arguments", "DEVICE_KINDS", "DeviceKind", "OPTIONS", "Option", "PADDINGS", "PRECISIONS",
           "Padding", "Precision", "parse", "registration", "tiling", "wrong_type"]

#: The values of ``precision``.
Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
#: The kinds of ``device`` (besides ``"cuda:N"``, the N-th CUDA device).
DeviceKind = Literal["auto", "cpu", "cuda"]
DEVICE_KINDS: tuple[str, ...] = typing.get_args(DeviceKind)


class ArgumentError(ValueError):
    """A Restore argument is wrong; the message names it and says what is allowed."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_flag(value: object) -> bool:
    return isinstance(value, bool) or (_is_int(value) and value in (0, 1))


def _is_tile(value: object) -> bool:
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    return value is None or (1 <= len(sizes) <= 2 and all(_is_int(v) for v in sizes))


@dataclass(frozen=True)
class Option:
    """One parameter of Restore besides ``clip``."""

    name: str
    registered: str  # its type in the plugin's registration string: data, int, float, float[]
    annotation: str  # its type in vsedvr.restore()
    stub: str  # its type in the editor stubs of core.edvr.Restore (what VapourSynth's binding takes)
    default: Any  # vsedvr.restore()'s default; None: decided when the filter is created (see help)
    allowed: str  # what is allowed, in the words of the error messages
    accepts: Callable[[Any], bool]  # restore()'s type check
    help: str


def _literal(values: Sequence[str]) -> str:
    return "Literal[" + ", ".join(f'"{value}"' for value in values) + "]"


OPTIONS: tuple[Option, ...] = (
    Option("model", "data", "str | os.PathLike[str]", f"{_literal(sorted(MODELS))} | str | bytes", DEFAULT_MODEL,
           "a zoo name (`vsedvr models`) or the path of an EDVR checkpoint",
           lambda v: isinstance(v, (str, os.PathLike)),
           f'a zoo name or a checkpoint path (mmediting or BasicSR layout); default "{DEFAULT_MODEL}" (EDVR-M, 4x SR)'),
    Option("device", "data", "str", f"{_literal(DEVICE_KINDS)} | str | bytes", "auto",
           '"auto", "cpu", "cuda" or "cuda:N"', lambda v: isinstance(v, str),
           '"auto": the first CUDA device if PyTorch sees one, else the CPU'),
    Option("padding", "data", "Padding | None", f"{_literal(PADDINGS)}", None,
           "a padding name (str) or None", lambda v: v is None or isinstance(v, str),
           "how windows are filled at the clip's and scenes' ends; default: the model's own"),
    Option("scenechange", "int", "bool", "int", True, "True or False", _is_flag,
           "no window mixes two scenes (_SceneChangePrev / _SceneChangeNext frame properties)"),
    Option("tile", "float[]", "int | tuple[int, int] | None", "int | Sequence[int]", None,
           "one size or [width, height] in input pixels, whole numbers (int)", _is_tile,
           "process frames in tiles of [w, h] input pixels; default: whole frames (on CUDA: planned)"),
    Option("tile_overlap", "float", "int | None", "int", None, "a whole number of input pixels (int)",
           lambda v: v is None or _is_int(v), "input pixels shared by neighbouring tiles; default 16 with tiles"),
    Option("precision", "data", "Precision | None", _literal(PRECISIONS), None,
           '"auto", "fp32", "fp16", "bf16" or None', lambda v: v is None or isinstance(v, str),
           '"auto" (None): fp16 for RGBH clips on CUDA, else fp32; half precision needs CUDA'),
    Option("compile", "int", "bool", "int", False, "True or False", _is_flag,
           "run the network through torch.compile (the first frame of each tile shape waits for it)"),
)
NAMES: tuple[str, ...] = tuple(option.name for option in OPTIONS)


def registration() -> str:
    """Restore's argument string as the native plugin registers it (native/edvr_filter.c)."""
    return "clip:vnode;" + "".join(f"{o.name}:{o.registered}:opt;" for o in OPTIONS)


def wrong_type(**arguments: object) -> str | None:
    """What is wrong with the type of one of ``vsedvr.restore()``'s arguments, or None.

    ``core.edvr.Restore`` cannot say it: VapourSynth's binding converts a value to the registered
    type before the plugin runs (``tile="big"`` raises float()'s ValueError, which names no parameter).
    """
    for option in OPTIONS:
        value = arguments[option.name]
        if not option.accepts(value):
            return f'"{option.name}" must be {option.allowed}, got {value!r} ({type(value).__name__})'
    return None


@dataclass(frozen=True)
class Arguments:
    """Restore's arguments as the plugin passed them, checked as far as no model is needed."""

    model: str
    device: str  # not yet resolved (see plugin.resolve_device)
    padding: str | None  # None: the model's own
    scenechange: bool
    precision: str
    compile: bool
    tile: tuple[int, ...] | None  # as given, whole numbers; tiling() checks the rest
    tile_overlap: int | None  # None: not given


def _single(options: Mapping[str, Any], name: str, default: Any) -> Any:
    """The value of a scalar option (the plugin passes numbers as tuples)."""
    value = options.get(name, default)
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ArgumentError(f'"{name}" takes one value, got {len(value)}')
        value = value[0]
    return value


def _whole(name: str, values: Sequence[Any]) -> list[int]:
    """Pixel counts as ints. ``tile`` and ``tile_overlap`` are registered as floats, so that a
    fractional value reaches this check (an int registration would truncate it without a word)."""
    whole = []
    for value in values:
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer() and abs(value) < 2**63):
                raise ArgumentError(f'"{name}" takes whole numbers of input pixels, got {value!r}; '
                                    f'divide with // (e.g. clip.width // 2)')
            value = int(value)
        whole.append(value)
    return whole


def _flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = _single(options, name, int(default))
    if value not in (0, 1):
        raise ArgumentError(f'"{name}" must be 0 or 1 (False or True), got {value}')
    return bool(value)


def parse(options: Mapping[str, Any]) -> Arguments:
    """Checks the plugin's arguments (a dict of what the script gave) against :data:`OPTIONS`."""
    unknown = sorted(set(options) - set(NAMES))
    if unknown:
        raise ArgumentError(f"unknown argument {unknown[0]!r}; Restore takes {', '.join(NAMES)}")
    padding = _single(options, "padding", None)
    if padding is not None and padding not in PADDINGS:
        raise ArgumentError(f'"padding" must be one of {", ".join(PADDINGS)}, got "{padding}"')
    scenechange = _flag(options, "scenechange", True)
    compile_network = _flag(options, "compile", False)
    precision = _single(options, "precision", "auto")
    if precision not in PRECISIONS:
        raise ArgumentError(f'"precision" must be one of {", ".join(PRECISIONS)}, got "{precision}"')
    tile = options.get("tile")
    if tile is not None:
        tile = tuple(_whole("tile", list(tile)))
    overlap = options.get("tile_overlap")
    if overlap is not None:
        overlap = _whole("tile_overlap", [_single(options, "tile_overlap", None)])[0]
    return Arguments(model=_single(options, "model", DEFAULT_MODEL), device=_single(options, "device", "auto"),
                     padding=padding, scenechange=scenechange, precision=precision, compile=compile_network,
                     tile=tile, tile_overlap=overlap)


def tiling(arguments: Arguments, multiple: int, default_overlap: int) -> tuple[tuple[int, int] | None, int]:
    """Checked (tile, tile_overlap) for a model whose input sizes are multiples of ``multiple``;
    ``default_overlap`` applies with tiles when none was given (0 without tiles)."""
    given = arguments.tile
    tile = None
    if given is not None:
        sizes = given * 2 if len(given) == 1 else given
        if len(sizes) != 2 or any(v <= 0 or v % multiple for v in sizes):
            raise ArgumentError(f'"tile" must be [width, height] (or one size for both), positive multiples of '
                                f'{multiple} for this model, got {list(given)}')
        tile = (sizes[0], sizes[1])
    overlap = arguments.tile_overlap
    if overlap is None:
        overlap = default_overlap if tile is not None else 0
    if overlap < 0 or overlap % multiple:
        raise ArgumentError(f'"tile_overlap" must be a non-negative multiple of {multiple} (input pixels), '
                            f'got {overlap}')
    return tile, overlap
