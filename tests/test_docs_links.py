"""No dead links: every relative link in README.md, docs/ and examples/ Markdown names a file of the
checkout, and its ``#fragment`` a heading of that file (GitHub's anchors); every Markdown file that
a code file or the prose of a document names exists in the checkout. Pure file reading."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Markdown files of other projects, by the file that names them: mmediting's model zoo page and BasicSR's.
OTHER_PROJECTS = {
    "vsedvr/zoo/registry.py": {"configs/edvr/README.md", "docs/ModelZoo.md"},
    "docs/usage.md": {"configs/edvr/README.md", "docs/ModelZoo.md"},
}
CODE_SUFFIXES = {".py", ".c", ".h", ".sh", ".vpy", ".cfg", ".toml", ".yml", ".yaml"}
CODE_FOLDERS = ("vsedvr", "native", "tools", "bench", "tests", "examples", ".ci", ".github")

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
#: The folder beside the checkout; only the optional vsedit test builds something from it (hosts.md).
_OUTSIDE = re.compile(r"\.\./shared/(?!vsedit\b)")
_MD_NAME = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w./-]*[\w-]\.md)(?!\w)(#[\w-]+)?")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Line number and line of everything outside fenced code blocks, inline code spans removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"(`+).*?\1", "", line)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower-case, punctuation but '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            base = slug(match.group(2))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def _dead(target: Path, fragment: str) -> str | None:
    """Why a link to ``target#fragment`` is dead, or None."""
    if not target.resolve().is_relative_to(ROOT):
        return "points outside the repository"
    if not target.exists():
        return "no such file"
    if fragment and target.suffix == ".md" and fragment not in anchors(target):
        return f"no heading #{fragment} in {target.resolve().relative_to(ROOT)}"
    return None


def test_markdown_links_name_existing_files_and_headings() -> None:
    dead = []
    for md in markdown_files():
        for number, line in _prose_lines(md.read_text(encoding="utf-8")):
            for target in _LINK.findall(line):
                if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|//", target):  # http:, mailto:, ...
                    continue
                path, _, fragment = target.partition("#")
                why = _dead(md.parent / path if path else md, fragment)
                if why:
                    dead.append(f"{md.relative_to(ROOT)}:{number}: ({target}) {why}")
    assert not dead, "\n".join(dead)


def code_files() -> Iterator[Path]:
    for name in ("Makefile", "setup.py", "setup.cfg", "pyproject.toml"):
        if (ROOT / name).exists():
            yield ROOT / name
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and (path.suffix in CODE_SUFFIXES or path.parent.name == ".ci") \
                    and "data" not in path.relative_to(ROOT).parts and path != Path(__file__).resolve():
                yield path


def test_code_and_prose_name_only_existing_markdown_files() -> None:
    dead = []
    for path in [*code_files(), *markdown_files()]:
        rel = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                dead.append(f"{rel}:{number}: names a file beside the checkout")
            for name, fragment in _MD_NAME.findall(line):
                if name in OTHER_PROJECTS.get(rel, ()):
                    continue
                # "docs/x.md" from the checkout's root or the file's folder, a bare "x.md" also in docs/
                candidates = [ROOT / name, path.parent / name] + ([ROOT / "docs" / name] if "/" not in name else [])
                found = next((c for c in candidates if c.exists()), candidates[0])
                why = _dead(found, fragment.lstrip("#"))
                if why:
                    dead.append(f"{rel}:{number}: {name}{fragment} {why}")
    assert not dead, "\n".join(dead)


def test_the_anchor_rule() -> None:
    assert slug("Half precision (`precision=\"fp16\"` / `\"bf16\"`, RGBH on CUDA)") == \
        "half-precision-precisionfp16--bf16-rgbh-on-cuda"
    assert slug("Round 2 (issue 22), item by item") == "round-2-issue-22-item-by-item"
    assert slug("State-dict keys") == "state-dict-keys"
    assert slug("`make setup` and [the venv](install.md)") == "make-setup-and-the-venv"
