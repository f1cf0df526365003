#!/usr/bin/env bash
# The CUDA checks in one prepared run, for a session that is lent a GPU machine (the project's own
# machines have none). Three commands:
#
#   bash tools/gpu_check.sh prepare     here: wheels for the GPU machine's Python 3.12 into .whl/
#                                       (VapourSynth R81, vsedvr with its plugin)
#   bash tools/gpu_check.sh plan        here: the steps, their time limits and the files, nothing run
#   bash tools/gpu_check.sh run         there, through the device tool:
#                                       run(command="bash tools/gpu_check.sh run", carry=[".whl"], timeout_s=360)
#
# GPU_CHECK_CPU=1 runs the same steps here on the CPU with tiny sizes and this checkout's .venv
# (no install: the .whl set is only checked), so that `prepare` and `run` are exercised end to end by
# `make test-all` before a GPU machine ever runs them (tests/test_gpu_check.py).
#
# The machine it is written for returns at most 8 files from $OUT and runs one command for at most
# 600 s, out of about 15 minutes of device time in all (its start included, a minute or more). So
# `run` works to a budget of BUDGET seconds from its start, installs included, leaving time for a
# second try: each step gets at most its own limit and never more than what is left, the most
# important first (tests/test_cuda.py, torch.compile's correctness included). Each pytest test has its
# own timeout, so a stuck test prints its traceback instead of eating the step. It leaves 6 files in
# $OUT, numbered in that order; what a killed run has written comes back all the same.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=300
INSTALL_LIMIT=30
CPU_MODE=${GPU_CHECK_CPU:-0}
if [ "$CPU_MODE" = 1 ]; then
    PY=.venv/bin/python DEVICE=cpu PRECISION=fp32 SMALL=32x48 LARGE=48x64 FRAMES=5 LARGE_FRAMES=5
    LIMIT_SCALE=3  # a loaded 2-core machine starts Python and torch far slower than the GPU machine
    PRECISION_CHECK="--models edvr_demo --size 16x16"  # half precision on the CPU is slow
else
    PY=python3 DEVICE=cuda PRECISION=fp16 SMALL=180x320 LARGE=540x960 FRAMES=30 LARGE_FRAMES=20
    LIMIT_SCALE=1
    PRECISION_CHECK="--size 64x112"  # the held-out pictures hold HR clips up to 256x448
fi
PYTEST="$PY -P -m pytest -v --tb=short -p no:cacheprovider -rs --timeout=60"
BENCH="$PY bench/bench_restore.py --device $DEVICE --precision $PRECISION --models edvrm"
# NAME|LIMIT (s)|OUTPUT|COMMAND (run with "$OUT" expanded)
STEPS=(
    "test_cuda|150|02-test_cuda.log|$PYTEST -s --durations=8 tests/test_cuda.py"
    "bench_small|50|06-steps.log|$BENCH --size $SMALL --frames $FRAMES --variants a_python,a_cudnnsearch,b_naive --json \$OUT/03-bench_small.json"
    "bench_large|45|06-steps.log|$BENCH --size $LARGE --frames $LARGE_FRAMES --variants a_python,b_naive --json \$OUT/04-bench_large.json"
    "precision|25|05-precision.log|$PY bench/precision_error.py --device $DEVICE $PRECISION_CHECK"
)
FILES=(01-summary.txt 02-test_cuda.log 03-bench_small.json 04-bench_large.json 05-precision.log 06-steps.log)

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
        -d .whl vapoursynth==81 pytest-timeout
    "$python" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
    ls -l .whl
}

check_wheels() {
    # what the install step relies on: VapourSynth's core, vsedvr's plugin beside it, the test plugin
    local wheel
    for wheel in 'vapoursynth-81-*.whl' 'vsedvr-*.whl' 'pytest_timeout-*.whl'; do
        compgen -G ".whl/$wheel" > /dev/null || { echo "missing .whl/$wheel: run prepare"; return 1; }
    done
    "$PY" -m zipfile -l .whl/vsedvr-*.whl | grep 'vapoursynth/plugins/libvsedvr' > /dev/null \
        || { echo "the vsedvr wheel holds no plugin"; return 1; }
    "$PY" -m zipfile -l .whl/vapoursynth-81-*.whl | grep 'vapoursynth/libvapoursynth' > /dev/null \
        || { echo "the vapoursynth wheel holds no core"; return 1; }
}

run() {
    : "${OUT:=/tmp/gpu-check}"
    mkdir -p "$OUT"
    local start=$SECONDS summary="$OUT/01-summary.txt" entry name limit output command left
    local budget=$((BUDGET * LIMIT_SCALE))
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 OUT
    check_wheels >> "$summary" 2>&1 || { echo "wheels incomplete" | tee -a "$summary"; exit 1; }
    if [ "$CPU_MODE" = 1 ]; then
        echo "CPU mode: $PY, no install, tiny sizes" >> "$summary"
    else
        # one pip call, so that vsedvr's vapoursynth/plugins/ lands inside VapourSynth's own folder
        timeout "$INSTALL_LIMIT" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl >> "$summary" 2>&1 \
            || { echo "install failed" | tee -a "$summary"; exit 1; }
        export PYTHONPATH=/tmp/site
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >> "$summary" 2>&1
    fi
    "$PY" -c "import torch, torchvision, vapoursynth as vs; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'VapourSynth', vs.core.core_version.release_major, vs.core.edvr)" \
        >> "$summary" 2>&1 || { echo "imports failed" | tee -a "$summary"; exit 1; }
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name limit output command <<< "$entry"
        left=$((budget - (SECONDS - start)))
        limit=$((limit * LIMIT_SCALE))
        if [ "$left" -lt 10 ]; then
            echo "=== $name: skipped (${left}s of the budget left)" | tee -a "$summary"; continue
        fi
        [ "$limit" -gt "$left" ] && limit=$left
        echo "=== $name (limit ${limit}s): $command" | tee -a "$summary" >> "$OUT/$output"
        local t0=$SECONDS
        timeout "$limit" bash -c "$command" >> "$OUT/$output" 2>&1
        local rc=$?
        echo "=== $name: exit $rc after $((SECONDS - t0))s ($(tail -n 1 "$OUT/$output"))" | tee -a "$summary"
    done
    echo "total $((SECONDS - start))s of ${budget}s" | tee -a "$summary"
}

case "${1:-}" in
    prepare) prepare ;;
    plan) plan ;;
    run) run ;;
    *) echo "usage: $0 prepare|plan|run" >&2; exit 2 ;;
esac
