"""Restore's options table (vsedvr/filter/options.py) against every other place that lists them:
the native plugin's registration string, ``vsedvr.restore()``, the stubs, README and docs/usage.md."""
from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

import vsedvr
from vsedvr.filter import options
from vsedvr.filter.options import NAMES, OPTIONS, ArgumentError, parse, tiling
from vsedvr.zoo import DEFAULT_MODEL, MODELS

ROOT = Path(__file__).resolve().parent.parent


def _c_string_after(source: str, marker: str) -> str:
    """The C string literal (adjacent literals joined) that follows ``marker``."""
    rest = source[source.index(marker) + len(marker):]
    match = re.match(r'\s*,?\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', rest)
    assert match, f"no string literal after {marker!r}"
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(1)))


def test_native_registration_is_the_table() -> None:
    source = (ROOT / "native" / "edvr_filter.c").read_text()
    assert _c_string_after(source, "registerFunction(FILTER_NAME,") == options.registration()


def test_native_padding_names_are_the_table() -> None:
    source = (ROOT / "native" / "frame_window.c").read_text()
    block = source[source.index("paddingNames[PADDING_COUNT] ="):]
    names = re.findall(r'"(\w+)"', block[:block.index(";")])
    assert tuple(names) == options.PADDINGS == typing.get_args(vsedvr.Padding)


def test_restore_signature_is_the_table() -> None:
    parameters = list(inspect.signature(vsedvr.restore).parameters.values())
    assert [p.name for p in parameters] == ["clip", *NAMES]
    for parameter, option in zip(parameters[1:], OPTIONS):
        assert parameter.default == option.default, option.name
        assert parameter.annotation == option.annotation, option.name
    documented = re.findall(r":param (\w+):", vsedvr.restore.__doc__ or "")
    assert documented == ["clip", *NAMES]


def test_model_names_come_from_the_zoo() -> None:
    model = OPTIONS[NAMES.index("model")]
    assert model.default == DEFAULT_MODEL
    assert set(re.findall(r'"(\w+)"', model.stub)) == set(MODELS)


def _table_names(text: str, heading: str) -> list[str]:
    """First-column parameter names of the first Markdown table after ``heading``."""
    section = text[text.index(heading):]
    rows = re.findall(r"^\| ([^|]+) \|", section[section.index("\n|"):].split("\n\n")[0], re.M)
    return [name for row in rows[2:] for name in re.findall(r"`(\w+)`", row)]


def _call_names(text: str, heading: str) -> list[str]:
    """Keyword names of the first ``core.edvr.Restore(clip, ...)`` call shown after ``heading``."""
    section = text[text.index(heading):]
    call = section[section.index("core.edvr.Restore(clip"):]
    return ["clip", *re.findall(r"(\w+)=", call[:call.index(")\n")])]


@pytest.mark.parametrize("doc, heading", [("docs/usage.md", "## `core.edvr.Restore` parameters"),
                                          ("README.md", "## Parameters")])
def test_docs_list_every_option_in_order(doc: str, heading: str) -> None:
    text = (ROOT / doc).read_text()
    assert _table_names(text, heading) == ["clip", *NAMES]
    assert _call_names(text, heading) == ["clip", *NAMES]


@pytest.mark.parametrize("given, message", [
    ({"padding": "mirror"}, '"padding" must be one of reflection_circle, replicate, reflection, circle'),
    ({"precision": "fp8"}, '"precision" must be one of auto, fp32, fp16, bf16'),
    ({"scenechange": (2,)}, '"scenechange" must be 0 or 1'),
    ({"compile": (1, 0)}, '"compile" takes one value, got 2'),
    ({"tile": (64.5,)}, '"tile" takes whole numbers of input pixels, got 64.5'),
    ({"tiles": (64,)}, "unknown argument 'tiles'; Restore takes model, device, padding"),
])
def test_parse_names_the_parameter(given: dict, message: str) -> None:
    with pytest.raises(ArgumentError, match=re.escape(message)):
        parse(given)


def test_tiling_defaults_and_multiples() -> None:
    assert tiling(parse({}), 4, 16) == (None, 0)
    assert tiling(parse({"tile": (64.0,)}), 4, 16) == ((64, 64), 16)
    assert tiling(parse({"tile": (64, 32), "tile_overlap": 8.0}), 4, 16) == ((64, 32), 8)
    with pytest.raises(ArgumentError, match="positive multiples of 16 for this model, got \\[72\\]"):
        tiling(parse({"tile": (72,)}), 16, 16)
    with pytest.raises(ArgumentError, match='"tile_overlap" must be a non-negative multiple of 4'):
        tiling(parse({"tile_overlap": (-4,)}), 4, 16)
