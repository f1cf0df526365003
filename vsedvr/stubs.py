"""Editor stubs for the ``edvr`` namespace: ``core.edvr.Restore(...)`` and ``clip.edvr.Restore(...)``.

VapourSynth ships ``vapoursynth/vapoursynth.pyi`` as a template: plugin namespaces go where it
says ``#include <plugins/implementations>`` (one ``_Plugin_<ns>_Core_Bound`` class per plugin)
and ``#include <plugins/bound/Core>`` / ``<plugins/bound/VideoNode>`` (one property per plugin).
Stub generators (vsrepo's genstubs, vsstubs) fill those places between ``# <...>`` / ``# </...>``
marker comments. :func:`add_edvr` does the same for this plugin only, so it works on the pristine
template and on a file a generator already filled, and running it twice changes nothing.
"""
from __future__ import annotations

import re
from pathlib import Path

from .filter.options import OPTIONS

__all__ = ["add_edvr", "remove_edvr", "installed_stub_path", "install"]

NAMESPACE = "edvr"


def _parameters() -> str:
    """Restore's parameters after ``clip``, typed as VapourSynth's binding takes them, and their help
    (both from vsedvr/filter/options.py)."""
    lines = [f"        {o.name}: {o.stub} | None = None,\n" for o in OPTIONS]
    helps = [f"        {o.name}: {o.help}.\n" for o in OPTIONS]
    return ("".join(lines) + '    ) -> "VideoNode":\n'
            '        """EDVR video restoration: each output frame from a window of 5 (7) input frames.\n\n'
            "        clip: RGBS (fp32) or RGBH (fp16 on CUDA).\n" + "".join(helps) + '        """\n')


_PARAMS = _parameters()

IMPLEMENTATION = f"""\
# <implementation/{NAMESPACE}>
class _Plugin_{NAMESPACE}_Core_Bound(Plugin):
    \"\"\"This class implements the module definitions for the "{NAMESPACE}" VapourSynth plugin.\\n\\n*This class cannot be imported.*\"\"\"
    def Restore(
        self,
        clip: "VideoNode",
{_PARAMS}
    def Version(self) -> Dict[str, Any]: ...


class _Plugin_{NAMESPACE}_VideoNode_Bound(Plugin):
    \"\"\"This class implements the module definitions for the "{NAMESPACE}" VapourSynth plugin.\\n\\n*This class cannot be imported.*\"\"\"
    def Restore(
        self,
{_PARAMS}
# </implementation/{NAMESPACE}>
"""


def _bound(owner: str) -> str:
    return (
        f"# <attribute/{owner}_bound/{NAMESPACE}>\n"
        "    @property\n"
        f"    def {NAMESPACE}(self) -> _Plugin_{NAMESPACE}_{owner}_Bound:\n"
        '        """EDVR video restoration (vsedvr)."""\n'
        f"# </attribute/{owner}_bound/{NAMESPACE}>\n"
    )


def _markers() -> list[tuple[str, str]]:
    return [(f"# <implementation/{NAMESPACE}>", f"# </implementation/{NAMESPACE}>")] + [
        (f"# <attribute/{owner}_bound/{NAMESPACE}>", f"# </attribute/{owner}_bound/{NAMESPACE}>")
        for owner in ("Core", "VideoNode")]


def remove_edvr(stub_text: str) -> str:
    """Return *stub_text* without what :func:`add_edvr` put in."""
    for start, end in _markers():
        stub_text = re.sub(re.escape(start) + r".*?" + re.escape(end) + r"\n?", "", stub_text, flags=re.S)
    return stub_text


def _insert(text: str, section: str, block: str) -> str:
    """Put *block* at the end of *section* (``plugins/implementations`` etc.)."""
    filled_end = f"# </{section}>"
    if filled_end in text:  # a generator's output
        return text.replace(filled_end, block + filled_end, 1)
    include = f"#include <{section}>\n"
    if include in text:  # the pristine template: keep the include line for later generators
        return text.replace(include, include + block, 1)
    raise ValueError(f"no '{include.strip()}' or '{filled_end}' in the stub file: not a VapourSynth stub template")


def add_edvr(stub_text: str) -> str:
    """Return *stub_text* (a ``vapoursynth.pyi``) with the ``edvr`` namespace in it (idempotent)."""
    text = _insert(remove_edvr(stub_text), "plugins/implementations", IMPLEMENTATION)
    for owner in ("Core", "VideoNode"):
        text = _insert(text, f"plugins/bound/{owner}", _bound(owner))
    return text


def installed_stub_path() -> Path:
    """The ``vapoursynth.pyi`` that editors read for the installed VapourSynth."""
    import importlib.util

    spec = importlib.util.find_spec("vapoursynth")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the vapoursynth package is not installed in this Python")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "vapoursynth.pyi"
        if path.is_file():
            return path
    raise FileNotFoundError("the installed vapoursynth package has no vapoursynth.pyi")


def install(source: Path | None = None, target: Path | None = None) -> Path:
    """Add the ``edvr`` namespace to *source* (default: the installed stub) and write *target*
    (default: *source*, replaced atomically). Returns the path written."""
    source = source or installed_stub_path()
    target = target or source
    text = add_edvr(source.read_text(encoding="utf-8"))
    tmp = target.with_name(target.name + ".vsedvr-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
