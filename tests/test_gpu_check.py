"""tools/gpu_check.sh fits the GPU machine it is written for: one command of at most 480 s (the
device tool allows 600 s, installs included), at most 8 files back from $OUT, the most important
measurements first, torch.compile last. Checked through its dry run (`plan`)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def test_plan_fits_one_run_and_eight_files() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "plan"], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stdout.splitlines()
    budget = int(re.search(r"budget (\d+)s", lines[0]).group(1))
    steps = [re.match(r"step (\S+) limit (\d+)s -> (\S+)(?:: (.*))?$", line).groups()
             for line in lines if line.startswith("step ")]
    total = int(re.search(r"total of the limits (\d+)s", done.stdout).group(1))
    files = re.search(r"files (\d+): (.*)", done.stdout)
    names = files.group(2).split()
    assert budget <= 480 and total == sum(int(s[1]) for s in steps) <= budget, done.stdout
    assert int(files.group(1)) == len(names) <= 8, done.stdout
    assert [s[0] for s in steps][:5] == ["install", "test_cuda", "bench_180x320", "bench_540x960", "precision"]
    assert steps[-1][0] == "bench_compile", done.stdout
    # everything a step writes is one of the listed files
    written = {s[2] for s in steps} | {Path(p).name for s in steps for p in re.findall(r"\$OUT/(\S+)", s[3] or "")}
    assert written <= set(names), written - set(names)
    # 540x960 against naive fp32, EDVR-M fp16
    assert "--size 540x960" in steps[3][3] and "b_naive" in steps[3][3] and "--precision fp16 --models edvrm" in steps[3][3]


def test_run_skips_compile_when_asked_and_respects_the_budget() -> None:
    text = SCRIPT.read_text()
    assert 'GPU_CHECK_COMPILE:-1}" = 0' in text and 'limit=$left' in text
