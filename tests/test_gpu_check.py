"""tools/gpu_check.sh fits the GPU machine it is written for (one command of at most 300 s, installs
included, at most 8 files back from $OUT, the most important first), checked through its dry run
(`plan`), and runs end to end here in its CPU mode: `prepare`, then every step with tiny sizes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def _plan() -> tuple[int, list[tuple[str, ...]], int, list[str], str]:
    done = subprocess.run(["bash", str(SCRIPT), "plan"], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stdout.splitlines()
    budget = int(re.search(r"budget (\d+)s", lines[0]).group(1))
    steps = [re.match(r"step (\S+) limit (\d+)s -> (\S+)(?:: (.*))?$", line).groups()
             for line in lines if line.startswith("step ")]
    total = int(re.search(r"total of the limits (\d+)s", done.stdout).group(1))
    names = re.search(r"files (\d+): (.*)", done.stdout).group(2).split()
    return budget, steps, total, names, done.stdout


def test_plan_fits_one_run_and_eight_files() -> None:
    budget, steps, total, names, text = _plan()
    assert budget <= 300 and total == sum(int(s[1]) for s in steps) <= budget, text
    assert len(names) <= 8, text
    assert [s[0] for s in steps] == ["install", "test_cuda", "bench_small", "bench_large", "precision"]
    # everything a step writes is one of the listed files
    written = {s[2] for s in steps} | {Path(p).name for s in steps for p in re.findall(r"\$OUT/(\S+)", s[3] or "")}
    assert written <= set(names), written - set(names)
    # EDVR-M fp16 at 540x960 against naive fp32; each test with its own timeout and a traceback
    assert "--size 540x960" in steps[3][3] and "b_naive" in steps[3][3] and "--precision fp16 --models edvrm" in steps[3][3]
    assert "--timeout=" in steps[1][3] and "--tb=short" in steps[1][3]


@pytest.mark.slow(reason="gpu_check.sh's prepare and every step in CPU mode: wheels downloaded and built, the CUDA "
                         "tests and benches run (minutes)")
def test_prepare_and_run_end_to_end_in_cpu_mode(tmp_path: Path) -> None:
    """What the GPU machine will run, here: the wheels from `prepare` (checked, not installed: the
    VapourSynth wheel is for Python 3.12), every step on the CPU, every step's exit status 0."""
    if shutil.which("git") is None:
        pytest.skip("prepare needs git")
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_CPU="1")
    prepared = subprocess.run(["bash", str(SCRIPT), "prepare"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=env)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    done = subprocess.run(["bash", str(SCRIPT), "run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env=env)
    summary = (tmp_path / "out" / "01-summary.txt").read_text()
    assert done.returncode == 0, summary
    steps = re.findall(r"=== (\S+): exit (\d+)", summary)
    assert [name for name, _ in steps] == ["test_cuda", "bench_small", "bench_large", "precision"], summary
    assert all(rc == "0" for _, rc in steps), summary
    for name in ("03-bench_small.json", "04-bench_large.json", "05-precision.log"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
