#!/usr/bin/env bash
# The CUDA checks in one prepared run, for a session that is lent a GPU machine (the project's own
# machines have none). Two steps:
#
#   bash tools/gpu_check.sh prepare     here: wheels for the GPU machine's Python 3.12 into .whl/
#                                       (VapourSynth R81, vsutil, vsedvr with its plugin)
#   bash tools/gpu_check.sh run         there, through the device tool:
#                                       run(command="bash tools/gpu_check.sh run", carry=[".whl"], timeout_s=600)
#
# `run` installs the wheels beside the machine's own torch/torchvision (no network there), then
# runs tests/test_cuda.py and the README's GPU measurements, each under its own time limit, and
# leaves the logs and JSON reports in $OUT. About 6-9 minutes on an H200, the machine's start not
# counted. vspipe is not used there (the a variant is timed through Python's frames(), which
# measured within 2% of vspipe on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    set -e
    local python=.venv/bin/python
    grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl vapoursynth==81 vsutil
    "$python" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
    ls -l .whl
}

step() {  # step NAME SECONDS COMMAND...: one measurement, its output in $OUT/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (limit ${seconds}s): $*"
    timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
    echo "=== $name: exit $? ($(tail -n 1 "$OUT/$name.log"))"
}

run() {
    : "${OUT:=/tmp/gpu-check}"
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    # one pip call, so that vsedvr's vapoursynth/plugins/ lands inside VapourSynth's own folder
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
    python3 -c "import torch, torchvision, vapoursynth as vs; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'VapourSynth', vs.core.core_version.release_major, vs.core.edvr)" || exit 1

    local bench=(python3 bench/bench_restore.py --device cuda --precision fp16 --models edvrm)
    # -P: the installed vsedvr, not the checkout's folder (which has no bundled model)
    step test_cuda 240 python3 -P -m pytest -q -p no:cacheprovider tests/test_cuda.py
    step bench_180x320 150 "${bench[@]}" --size 180x320 --frames 30 --variants a_python,b_naive,c_modify \
        --json "$OUT/bench_180x320.json"
    step bench_540x960 150 "${bench[@]}" --size 540x960 --frames 20 --variants a_python,b_naive \
        --json "$OUT/bench_540x960.json"
    step precision 60 python3 bench/precision_error.py --device cuda --size 180x320
    step bench_compile 150 "${bench[@]}" --size 180x320 --frames 30 --variants a_python,a_compile \
        --json "$OUT/bench_compile.json"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
