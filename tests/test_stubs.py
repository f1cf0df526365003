"""Editor stubs: ``vsedvr stubs`` adds the edvr namespace to VapourSynth's vapoursynth.pyi.

Checked with a real type checker (mypy) over the real installed template, and against the
signature the native plugin actually registers, so the stub cannot drift from the filter.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import vapoursynth as vs

from vsedvr import stubs
from vsedvr.filter.options import PRECISIONS

VENV_BIN = Path(sys.executable).parent


def _method_params(tree: ast.Module, cls: str, method: str) -> list[ast.arg]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    return item.args.args[1:] + item.args.kwonlyargs  # without self
    raise AssertionError(f"{cls}.{method} not in the stub")


@pytest.fixture(scope="module")
def stub_text() -> str:
    return stubs.add_edvr(stubs.installed_stub_path().read_text(encoding="utf-8"))


def test_stub_has_the_registered_parameters(stub_text: str) -> None:
    registered = list(vs.core.edvr.Restore.__signature__.parameters)
    tree = ast.parse(stub_text)
    core_bound = [a.arg for a in _method_params(tree, "_Plugin_edvr_Core_Bound", "Restore")]
    node_bound = [a.arg for a in _method_params(tree, "_Plugin_edvr_VideoNode_Bound", "Restore")]
    assert core_bound == registered
    assert node_bound == registered[1:]  # clip.edvr.Restore(...) binds the clip
    params = {a.arg: a for a in _method_params(tree, "_Plugin_edvr_Core_Bound", "Restore")}

    def literal(name: str) -> set[str]:
        return {c.value for c in ast.walk(params[name].annotation)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)}

    assert literal("padding") == set(vs.core.edvr.Version()["paddings"])
    assert literal("precision") == set(PRECISIONS)  # what the filter accepts


def test_adding_twice_changes_nothing_and_generator_output_works(stub_text: str) -> None:
    assert stubs.add_edvr(stub_text) == stub_text
    pristine = stubs.remove_edvr(stub_text)
    assert "edvr" not in pristine and stubs.add_edvr(pristine) == stub_text
    # A stub generator's output has filled sections between marker comments instead of #include.
    filled = pristine
    for section in ("plugins/implementations", "plugins/bound/VideoNode", "plugins/bound/AudioNode",
                    "plugins/bound/Core"):
        filled = filled.replace(f"#include <{section}>\n", f"# <{section}>\n# </{section}>\n")
    once = stubs.add_edvr(filled)
    assert "#include" not in once and once.count("class _Plugin_edvr_Core_Bound") == 1
    assert once.index("# <implementation/edvr>") < once.index("# </plugins/implementations>")
    assert stubs.add_edvr(once) == once
    with pytest.raises(ValueError, match="not a VapourSynth stub template"):
        stubs.add_edvr("x: int\n")


def _mypy(folder: Path, script: str) -> subprocess.CompletedProcess[str]:
    (folder / "script.py").write_text(textwrap.dedent(script))
    return subprocess.run(
        [str(VENV_BIN / "mypy"), "--no-incremental", "--no-error-summary", "script.py"],
        cwd=folder, env={"MYPYPATH": str(folder / "stubs"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300)


GOOD = """\
    import vapoursynth as vs
    core = vs.core

    def restore(clip: vs.VideoNode) -> vs.VideoNode:
        a = core.edvr.Restore(clip, model="edvrm", tile=[64, 64], padding="replicate", precision="fp32")
        b = clip.edvr.Restore(model="edvrl", scenechange=False, tile_overlap=16, device="cpu")
        return a if a.num_frames > b.num_frames else b
    """

BAD = """\
    import vapoursynth as vs
    core = vs.core

    def restore(clip: vs.VideoNode) -> None:
        core.edvr.Restore(clip, modle="edvrm")
        core.edvr.Restore(clip, padding="reflect")
        clip.edvr.Restore(tile="64")
    """


def test_cli_writes_stubs_that_mypy_checks(tmp_path: Path) -> None:
    (tmp_path / "stubs").mkdir()
    target = tmp_path / "stubs" / "vapoursynth.pyi"
    done = subprocess.run([str(VENV_BIN / "vsedvr"), "stubs", "--output", str(target)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target)

    good = _mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout
    bad = _mypy(tmp_path, BAD)
    assert bad.returncode == 1
    assert 'Unexpected keyword argument "modle"' in bad.stdout and 'did you mean "model"' in bad.stdout
    assert 'Argument "padding" to "Restore"' in bad.stdout
    assert 'Argument "tile" to "Restore"' in bad.stdout

    # Without vsedvr's addition the same good script does not type-check: the stub does the work.
    target.write_text(stubs.remove_edvr(target.read_text()))
    without = _mypy(tmp_path, GOOD)
    assert without.returncode == 1 and 'has no attribute "edvr"' in without.stdout


def test_cli_refuses_a_file_that_is_not_a_stub(tmp_path: Path) -> None:
    other = tmp_path / "other.pyi"
    other.write_text("x: int\n")
    done = subprocess.run([str(VENV_BIN / "vsedvr"), "stubs", "--source", str(other)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("vsedvr: error: no '#include <plugins/implementations>'")
    assert other.read_text() == "x: int\n"
