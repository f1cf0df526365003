#!/usr/bin/env bash
# The CUDA checks in one prepared run, for a session that is lent a GPU machine (the project's own
# machines have none). Three commands:
#
#   bash tools/gpu_check.sh prepare     here: wheels for the GPU machine's Python 3.12 into .whl/
#                                       (VapourSynth R81, vsutil, vsedvr with its plugin)
#   bash tools/gpu_check.sh plan        here: the steps, their time limits and the files, nothing run
#   bash tools/gpu_check.sh run         there, through the device tool:
#                                       run(command="bash tools/gpu_check.sh run", carry=[".whl"], timeout_s=540)
#
# The machine it is written for returns at most 8 files from $OUT and runs one command for at most
# 600 s, out of about 15 minutes of device time in all (its start included). So `run` works to a
# budget of BUDGET seconds from its start, installs included: each step gets at most its own limit
# and never more than what is left, the most important first (tests/test_cuda.py, EDVR-M fp16 at
# 180x320 and 540x960 against naive fp32, the precision table); torch.compile last and optional
# (GPU_CHECK_COMPILE=0 skips it). It leaves 7 files in $OUT, numbered in that order; what a killed
# run has written comes back all the same. vspipe is not used there (the a variant is timed through
# Python's frames(), which measured within 2% of vspipe on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=480
INSTALL_LIMIT=40
# NAME|LIMIT (s)|OUTPUT|COMMAND (run with "$OUT" and the bench prefix expanded)
BENCH='python3 bench/bench_restore.py --device cuda --precision fp16 --models edvrm'
STEPS=(
    "test_cuda|170|02-test_cuda.log|python3 -P -m pytest -q -p no:cacheprovider -rs --durations=8 tests/test_cuda.py"
    "bench_180x320|60|07-steps.log|$BENCH --size 180x320 --frames 30 --variants a_python,b_naive,c_modify --json \$OUT/03-bench_180x320.json"
    "bench_540x960|80|07-steps.log|$BENCH --size 540x960 --frames 20 --variants a_python,b_naive --json \$OUT/04-bench_540x960.json"
    "precision|40|05-precision.log|python3 bench/precision_error.py --device cuda --size 180x320"
    "bench_compile|90|07-steps.log|$BENCH --size 180x320 --frames 30 --variants a_python,a_compile --json \$OUT/06-bench_compile.json"
)
FILES=(01-summary.txt 02-test_cuda.log 03-bench_180x320.json 04-bench_540x960.json 05-precision.log
       06-bench_compile.json 07-steps.log)

plan() {
    local total=$INSTALL_LIMIT entry name limit output command
    echo "budget ${BUDGET}s for one run (the device tool allows 600 s a command)"
    echo "step install limit ${INSTALL_LIMIT}s -> 01-summary.txt"
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name limit output command <<< "$entry"
        total=$((total + limit))
        echo "step $name limit ${limit}s -> $output: $command"
    done
    echo "total of the limits ${total}s"
    echo "files ${#FILES[@]}: ${FILES[*]}"
}

prepare() {
    set -e
    local python=.venv/bin/python
    # git's own path: in a worktree .git is a file and info/exclude lives in the main repository
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qsx '/.whl/' "$exclude" || echo '/.whl/' >> "$exclude"
    rm -rf .whl && mkdir .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl vapoursynth==81 vsutil
    "$python" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
    ls -l .whl
}

run() {
    : "${OUT:=/tmp/gpu-check}"
    mkdir -p "$OUT"
    local start=$SECONDS summary="$OUT/01-summary.txt" entry name limit output command left
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 OUT
    # one pip call, so that vsedvr's vapoursynth/plugins/ lands inside VapourSynth's own folder
    timeout "$INSTALL_LIMIT" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >> "$summary" 2>&1 || { echo "install failed" | tee -a "$summary"; exit 1; }
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >> "$summary" 2>&1
    python3 -c "import torch, torchvision, vapoursynth as vs; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'VapourSynth', vs.core.core_version.release_major, vs.core.edvr)" \
        >> "$summary" 2>&1 || { echo "imports failed" | tee -a "$summary"; exit 1; }
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name limit output command <<< "$entry"
        left=$((BUDGET - (SECONDS - start)))
        if [ "$name" = bench_compile ] && [ "${GPU_CHECK_COMPILE:-1}" = 0 ]; then
            echo "=== $name: skipped (GPU_CHECK_COMPILE=0)" | tee -a "$summary"; continue
        fi
        if [ "$left" -lt 15 ]; then
            echo "=== $name: skipped (${left}s of the budget left)" | tee -a "$summary"; continue
        fi
        [ "$limit" -gt "$left" ] && limit=$left
        echo "=== $name (limit ${limit}s): $command" | tee -a "$summary" >> "$OUT/$output"
        local t0=$SECONDS
        timeout "$limit" bash -c "$command" >> "$OUT/$output" 2>&1
        local rc=$?
        echo "=== $name: exit $rc after $((SECONDS - t0))s ($(tail -n 1 "$OUT/$output"))" | tee -a "$summary"
    done
    echo "total $((SECONDS - start))s of ${BUDGET}s" | tee -a "$summary"
}

case "${1:-}" in
    prepare) prepare ;;
    plan) plan ;;
    run) run ;;
    *) echo "usage: $0 prepare|plan|run" >&2; exit 2 ;;
esac
