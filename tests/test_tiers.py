"""The two test commands of README.md: `make test` (the fast tier: tests marked slow deselected)
and `make test-all` (the whole suite, what CI runs through .ci/run); a slow test says why."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SLOW_WITHOUT_REASON

ROOT = Path(__file__).resolve().parent.parent


def _recipe(target: str) -> list[str]:
    """The command lines of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert body, f"no target {target} in the Makefile"
    return [line.strip() for line in body.group(1).splitlines()]


def test_every_slow_test_says_why(pytestconfig: pytest.Config) -> None:
    bare = pytestconfig.stash.get(SLOW_WITHOUT_REASON, [])
    assert not bare, ('mark these @pytest.mark.slow(reason="...why it belongs to the whole suite only..."):\n'
                      + "\n".join(bare))


def test_make_test_deselects_slow_tests_and_ci_runs_everything() -> None:
    assert _recipe("test") == ['$(VENV)/bin/pytest -q -m "not slow"']
    assert _recipe("test-all") == ["$(VENV)/bin/pytest -q"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test-all"
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test +#", readme, re.MULTILINE) and re.search(r"^make test-all +#", readme, re.MULTILINE)
