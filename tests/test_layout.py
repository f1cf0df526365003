"""The layout table of docs/development.md against the tree, and the direction of imports in the package."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vsedvr"

#: What each part of the package may import of vsedvr: the data path runs downwards
#: (command line and render on top, then the filter, then the networks and the zoo).
MAY_IMPORT = {
    "nets": set(),
    "zoo": {"nets"},
    "filter": {"nets", "zoo"},
    "render": {"zoo"},  # drives vspipe (its workers load the plugin); the zoo only for sha256_file
    "models": set(),
}


def _layout_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "development.md").read_text()
    section = text[text.index("## Layout"):]
    section = section[:section.index("\n## ", 1)]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (.+?) \| (.+) \|$", section, re.M)}


def _named_paths() -> set[str]:
    """Every path the table's first column names; ``a/b.c``, ``d.c`` names ``a/d.c`` too."""
    named = set()
    for where, what in _layout_rows().items():
        folder = ""
        for path in re.findall(r"`([^`]+)`", where):
            if "/" in path and not path.endswith("/"):
                folder = path.rsplit("/", 1)[0] + "/"
            named.add(path if "/" in path else folder + path)
            if path.endswith("/"):  # a folder's modules are named in its description
                named.update(path + name for name in re.findall(r"`([\w.]+\.(?:py|c|h|sh|txt))`", what))
    return named


def test_every_named_path_exists() -> None:
    missing = [path for path in _named_paths() if not (ROOT / path).exists()]
    assert not missing, f"docs/development.md names paths that do not exist: {missing}"


@pytest.mark.parametrize("folder, pattern", [
    ("vsedvr", "*.py"), ("vsedvr/filter", "*.py"), ("vsedvr/nets", "*.py"), ("vsedvr/zoo", "*.py"),
    ("vsedvr/render", "*.py"), ("native", "*.c"), ("tools", "*"), ("bench", "*.py"),
])
def test_every_file_is_in_the_table(folder: str, pattern: str) -> None:
    named = _named_paths()
    rows = " ".join(f"{where} {what}" for where, what in _layout_rows().items())
    for path in sorted((ROOT / folder).glob(pattern)):
        relative = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" and folder != "vsedvr" or path.name == "py.typed" or path.is_dir():
            continue
        assert relative in named or f"`{path.name}`" in rows, f"{relative} is not in docs/development.md's layout"


def _imported_parts(path: Path) -> set[str]:
    """The parts of vsedvr (nets, zoo, filter, ...) that a module imports, relative or absolute."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for vsedvr/x.py, 1 for vsedvr/filter/x.py
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("vsedvr."):
                parts.add(node.module.split(".")[1])
            elif node.level > depth:  # reaches the package root: ``from ..zoo import``
                if node.module:
                    parts.add(node.module.split(".")[0])
                else:
                    parts.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            parts.update(a.name.split(".")[1] for a in node.names if a.name.startswith("vsedvr."))
    return parts


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_imports_run_down_the_data_path(part: str) -> None:
    for path in sorted((PACKAGE / part).rglob("*.py")):
        wrong = _imported_parts(path) - MAY_IMPORT[part] - {part}
        assert not wrong, f"{path.relative_to(ROOT)} imports vsedvr.{', vsedvr.'.join(sorted(wrong))}"
