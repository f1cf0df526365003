"""The real vsedit closed while it plays Restore (tools/vsedit_close.py drives it).

Runs only where a built vsedit is named by VSEDVR_VSEDIT (../shared/vsedit/build.sh builds one in
about six minutes) and Xvfb and xdotool are installed; skipped otherwise. docs/hosts.md has the
manual procedure and its results; tests/test_native_host.py reproduces vsedit's teardown in CI.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSEDIT = os.environ.get("VSEDVR_VSEDIT", "")

pytestmark = pytest.mark.skipif(
    not (VSEDIT and os.access(VSEDIT, os.X_OK) and shutil.which("Xvfb") and shutil.which("xdotool")),
    reason="needs VSEDVR_VSEDIT (a built vsedit), Xvfb and xdotool")


@pytest.mark.parametrize("restores, play", [(1, 4), (1, -1), (3, 4)])
def test_real_vsedit_exits_cleanly_when_closed_while_playing(restores: int, play: float) -> None:
    """File > Exit during playback (play seconds) or while frame 0 is computed (-1): status 0."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "vsedit_close.py"), "--vsedit", VSEDIT, "--runs", "1",
                           "--restores", str(restores), "--play", str(play)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
