#!/usr/bin/env bash
# The CUDA checks in one prepared run, for a session that is lent a GPU machine (the project's own
# machines have none). Three commands:
#
#   bash tools/gpu_check.sh prepare     here: wheels for the GPU machine's Python 3.12 into .whl/
#                                       (VapourSynth R81, vsedvr with its plugin)
#   bash tools/gpu_check.sh plan        here: the steps, their time limits and the files, nothing run
#   bash tools/gpu_check.sh run         there, through the device tool:
#                                       run(command="bash tools/gpu_check.sh run", carry=[".whl"], timeout_s=360)
#                                       (the lease's files come back even if a step is cut short)
#   bash tools/gpu_check.sh run fastpaths   there, the second call, once the first has passed: the fast
#                                       paths that are off until measured (channels-last, CUDA graphs:
#                                       vsedvr/filter/gpu.py), their frames and their speed against the
#                                       plain path in one run (timeout_s=300)
#
# GPU_CHECK_CPU=1 runs the same steps here on the CPU with tiny sizes and this checkout's .venv
# (no install: the .whl set is only checked), so that `prepare` and `run` are exercised end to end by
# `make test-all` before a GPU machine ever runs them (tests/test_gpu_check.py).
#
# The machine it is written for returns at most 8 files from $OUT and runs one command for at most
# 600 s, out of about 15 minutes of device time in all (its start included, a minute or more). So
# `run` works to a budget of BUDGET seconds from its start, installs included, leaving time for a
# second try: each step gets at most its own limit and never more than what is left, in the order
# of the questions (docs/cuda.md#the-gpu-check):
#   1. are the frames right at a real size (Restore at 540x960 against net(x) on the default stream,
#      fp32 and fp16, and the same bytes with CUDA_LAUNCH_BLOCKING=1; the Triton DCN against
#      torchvision fp32 at 540x960 and the fenced torchvision op: tests/test_deform_triton.py -k test_gpu_)
#   2. does every CUDA test pass (tests/test_cuda.py, the rest)
#   3. the steady throughput of vsedvr and the naive loop, fp16 and fp32, at 180x320 and 540x960
#   4. where the time goes: a torch.profiler view of three steady 540x960 fp16 frames
#   5. precision against fp32; 6. the deformable convolution alone (bench/bench_dcn.py)
#   7. compile=True's first frame and steady speed, with what is left of the budget (limit "left")
# Each pytest test has its own timeout (thread method: a test stuck inside VapourSynth's C code
# prints every thread's stack), and the benchmarks write their JSON after each part, so a step killed
# by its limit still leaves what it measured. It leaves 8 files in $OUT, numbered in that order.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=300
INSTALL_LIMIT=25
CPU_MODE=${GPU_CHECK_CPU:-0}
if [ "$CPU_MODE" = 1 ]; then
    PY=.venv/bin/python DEVICE=cpu PRECISIONS=fp32 PROFILED=fp32 SMALL=32x48 LARGE=48x64 FRAMES=5 WARMUP=1
    # a loaded 2-core machine runs far slower than the GPU machine, and unevenly: every step may take
    # what is left of a budget 6x the GPU's, but compile (inductor's C++ on 2 cores) at most LEFT_CAP
    LIMIT_SCALE=6 LEFT_CAP=180
    PRECISION_CHECK="--models edvr_demo --size 16x16"  # half precision on the CPU is slow
    DCN_ARGS="--device cpu --triton --size 8x12 --channels 16 --repeats 1"  # the Triton kernel interpreted
else
    PY=python3 DEVICE=cuda PRECISIONS=fp16,fp32 PROFILED=fp16 SMALL=180x320 LARGE=540x960 FRAMES=10 WARMUP=
    LIMIT_SCALE=1 LEFT_CAP=600
    PRECISION_CHECK="--size 64x112"  # the held-out pictures hold HR clips up to 256x448
    DCN_ARGS="--device cuda --size 540x960 --repeats 20"  # Triton kernel against torchvision, per shape
fi
PYTEST="$PY -P -m pytest -v --tb=short -p no:cacheprovider -rs --timeout=60 --timeout-method=thread"
# warm-up: 2 x core.num_threads frames of the same clip on CUDA (bench_restore.py's default)
BENCH="$PY bench/bench_restore.py --device $DEVICE --models edvrm --frames $FRAMES ${WARMUP:+--warmup $WARMUP}"
# NAME|LIMIT (s, or "left": what is left of the budget)|OUTPUT|COMMAND (run with "$OUT" expanded)
STEPS=(
    "correctness|95|02-correctness.log|$PYTEST --timeout=70 -s tests/test_cuda.py tests/test_deform_triton.py -k 'frames_are_right_at_540x960 or test_gpu_'"
    "test_cuda|65|03-test_cuda.log|$PYTEST -s --durations=8 tests/test_cuda.py -k 'not frames_are_right_at_540x960'"
    "bench_small|25|08-steps.log|$BENCH --precision $PRECISIONS --size $SMALL --variants a_python,b_naive --json \$OUT/04-bench_small.json"
    "bench_large|45|08-steps.log|$BENCH --precision $PRECISIONS --size $LARGE --variants a_python,b_naive --json \$OUT/05-bench_large.json"
    "profile|15|08-steps.log|$BENCH --precision $PROFILED --size $LARGE --profile \$OUT/06-profile.txt"
    "precision|10|07-precision.log|$PY bench/precision_error.py --device $DEVICE $PRECISION_CHECK"
    "dcn|15|08-steps.log|$PY bench/bench_dcn.py $DCN_ARGS"
    "compile|left|08-steps.log|$BENCH --precision $PROFILED --size $SMALL --variants a_compile"
)
FILES=(01-summary.txt 02-correctness.log 03-test_cuda.log 04-bench_small.json 05-bench_large.json 06-profile.txt
       07-precision.log 08-steps.log)
FAST_VARIANTS=a_python,a_channelslast,a_graphs,a_fast
FAST_STEPS=(
    "frames|75|02-frames.log|$PYTEST -s tests/test_cuda.py -k fast_paths"
    "fast_small|40|05-steps.log|$BENCH --precision $PROFILED --size $SMALL --variants $FAST_VARIANTS --json \$OUT/03-fast_small.json"
    "fast_large|80|05-steps.log|$BENCH --precision $PROFILED --size $LARGE --variants $FAST_VARIANTS --json \$OUT/04-fast_large.json"
)
FAST_FILES=(01-summary.txt 02-frames.log 03-fast_small.json 04-fast_large.json 05-steps.log)
if [ "${2:-}" = fastpaths ]; then
    STEPS=("${FAST_STEPS[@]}") FILES=("${FAST_FILES[@]}") BUDGET=240
fi

plan() {
    local total=$INSTALL_LIMIT entry name limit output command
    echo "budget ${BUDGET}s for one run (the device tool allows 600 s a command)"
    echo "step install limit ${INSTALL_LIMIT}s -> 01-summary.txt"
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name limit output command <<< "$entry"
        if [ "$limit" = left ]; then
            echo "step $name limit left -> $output: $command"
        else
            total=$((total + limit))
            echo "step $name limit ${limit}s -> $output: $command"
        fi
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
        if [ "$limit" = left ]; then limit=$((left < LEFT_CAP ? left : LEFT_CAP))
        elif [ "$CPU_MODE" = 1 ]; then limit=$left
        else limit=$((limit * LIMIT_SCALE)); fi
        if [ "$left" -lt 10 ]; then
            echo "=== $name: skipped (${left}s of the budget left)" | tee -a "$summary"; continue
        fi
        [ "$limit" -gt "$left" ] && limit=$left
        echo "=== $name (limit ${limit}s): $command" | tee -a "$summary" >> "$OUT/$output"
        local t0=$SECONDS
        timeout "$limit" bash -c "$command" >> "$OUT/$output" 2>&1
        local rc=$?
        local note=""
        [ "$rc" = 124 ] && note=" (cut at its limit)"
        echo "=== $name: exit $rc$note after $((SECONDS - t0))s ($(tail -n 1 "$OUT/$output"))" | tee -a "$summary"
    done
    echo "total $((SECONDS - start))s of ${budget}s" | tee -a "$summary"
}

case "${1:-}" in
    prepare) prepare ;;
    plan) plan ;;
    run) [ -z "${2:-}" ] || [ "$2" = fastpaths ] || { echo "usage: $0 run [fastpaths]" >&2; exit 2; }; run ;;
    *) echo "usage: $0 prepare|plan|run" >&2; exit 2 ;;
esac
