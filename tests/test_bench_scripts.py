"""Every script in bench/ starts and explains itself (``--help``), as README tells users to run them
(``bench_common.py``, what they share, is no script)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_every_bench_script_answers_help() -> None:
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name != "bench_common.py")
    assert {p.name for p in scripts} >= {"bench_restore.py", "bench_flops.py", "bench_dcn.py", "tiling_error.py",
                                         "demo_quality.py", "precision_error.py", "soak.py"}
    # side by side: most of each one's time is importing torch
    running = {p.name: subprocess.Popen([sys.executable, str(p), "--help"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for p in scripts}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
        assert out.startswith("usage: ") and "--" in out, (name, out)
