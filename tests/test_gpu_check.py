"""tools/gpu_check.sh fits the GPU machine it is written for (one command of at most 300 s, installs
included, at most 8 files back from $OUT, the questions in the order of issue 31: frames right at
size, the CUDA tests, steady throughput fp16/fp32, a profile, precision, the DCN, compile with what
is left), checked through its dry run (`plan`), and runs end to end here in its CPU mode: `prepare`,
then every step with tiny sizes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def _plan(*which: str) -> tuple[int, list[tuple[str, ...]], int, list[str], str]:
    done = subprocess.run(["bash", str(SCRIPT), "plan", *which], capture_output=True, text=True, timeout=30,
                          check=True)
    lines = done.stdout.splitlines()
    budget = int(re.search(r"budget (\d+)s", lines[0]).group(1))
    steps = [re.match(r"step (\S+) limit (\d+s|left) -> (\S+)(?:: (.*))?$", line).groups()
             for line in lines if line.startswith("step ")]
    total = int(re.search(r"total of the limits (\d+)s", done.stdout).group(1))
    names = re.search(r"files (\d+): (.*)", done.stdout).group(2).split()
    return budget, steps, total, names, done.stdout


REQUIRED = ["correctness", "test_cuda", "bench_small", "bench_large", "profile", "precision", "dcn"]


def test_plan_fits_one_run_and_eight_files() -> None:
    budget, steps, total, names, text = _plan()
    limits = [int(s[1][:-1]) for s in steps if s[1] != "left"]
    assert budget <= 300 and total == sum(limits) <= budget, text
    assert len(names) <= 8, text
    assert [s[0] for s in steps] == ["install", *REQUIRED, "compile"]
    assert steps[-1][1] == "left"  # compile gets what the others left
    # everything a step writes is one of the listed files
    written = {s[2] for s in steps} | {Path(p).name for s in steps for p in re.findall(r"\$OUT/(\S+)", s[3] or "")}
    assert written <= set(names), written - set(names)
    by_name = {s[0]: s[3] for s in steps}
    # correctness at size first, on its own, with a timeout that prints every thread's stack
    assert "frames_are_right_at_540x960 or test_gpu_" in by_name["correctness"]
    assert "tests/test_deform_triton.py" in by_name["correctness"]  # the Triton DCN at 540x960
    assert "not frames_are_right_at_540x960" in by_name["test_cuda"]
    assert all("--timeout-method=thread" in by_name[s] for s in ("correctness", "test_cuda"))
    # steady throughput, vsedvr and the naive loop, both precisions, at both sizes
    for step, size in (("bench_small", "180x320"), ("bench_large", "540x960")):
        assert f"--size {size}" in by_name[step] and "--precision fp16,fp32" in by_name[step], by_name[step]
        assert "--variants a_python,b_naive" in by_name[step] and "--warmup" not in by_name[step]
    assert "--profile" in by_name["profile"] and "--size 540x960" in by_name["profile"]
    assert "--precision fp16" in by_name["profile"]
    assert "bench/bench_dcn.py" in by_name["dcn"] and "a_compile" in by_name["compile"]
    assert "--device cuda --size 540x960" in by_name["dcn"]


def test_second_call_measures_the_fast_paths_against_the_plain_path() -> None:
    budget, steps, total, names, text = _plan("fastpaths")
    assert total <= budget <= 300 and len(names) <= 8, text
    assert [s[0] for s in steps] == ["install", "frames", "fast_small", "fast_large"], text
    by_name = {s[0]: s[3] for s in steps}
    assert "tests/test_cuda.py -k fast_paths" in by_name["frames"]
    for step, size in (("fast_small", "180x320"), ("fast_large", "540x960")):
        assert f"--size {size}" in by_name[step] and "--precision fp16" in by_name[step], by_name[step]
        assert "--variants a_python,a_channelslast,a_graphs,a_fast" in by_name[step], by_name[step]


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
                          timeout=2400, env=env)
    summary = (tmp_path / "out" / "01-summary.txt").read_text()
    assert done.returncode == 0, summary
    steps = re.findall(r"=== (\S+): (?:exit (\d+)|skipped)", summary)
    assert [name for name, _ in steps] == [*REQUIRED, "compile"], summary
    assert all(rc == "0" for name, rc in steps if name != "compile"), summary
    assert steps[-1][1] in ("0", "124", ""), summary  # compile: done, cut at the budget's end, or skipped
    for name in ("04-bench_small.json", "05-bench_large.json", "06-profile.txt", "07-precision.log"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert "steady frames of Restore" in (tmp_path / "out" / "06-profile.txt").read_text()
    # the second call, the fast paths: the same plumbing (on the CPU the switches change nothing)
    fast = subprocess.run(["bash", str(SCRIPT), "run", "fastpaths"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env=dict(env, OUT=str(tmp_path / "fast")))
    summary = (tmp_path / "fast" / "01-summary.txt").read_text()
    assert fast.returncode == 0, summary
    assert re.findall(r"=== (\S+): exit (\d+)", summary) == [("frames", "0"), ("fast_small", "0"), ("fast_large", "0")]
    report = json.loads((tmp_path / "fast" / "03-fast_small.json").read_text())
    rows = report["models"]["edvrm"]["precisions"]["fp32"]["variants"]
    assert set(rows) == {"a_python", "a_channelslast", "a_graphs", "a_fast"}, rows
