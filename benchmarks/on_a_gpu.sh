#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the tests that skip without one, the whole demo on the GPU in
# float32 and bfloat16, and the GPU benchmarks. Each step's stdout (JSON) goes to $1/STEP.json (default folder
# gpu-results), every step's stderr and exit status to $1/log.txt. Every step has its own time limit, so one hang
# leaves the others' results.
#
#     bash benchmarks/on_a_gpu.sh [OUTDIR]
#
# Runs from the repository root with the python on PATH (PYTHON overrides), which must hold torch with CUDA and
# flexaudit's dependencies; flexaudit itself is read from the checkout.
set -u
out=${1:-gpu-results}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$out/log.txt"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name: $*" >>"$log"
    timeout "$limit" "$@" >"$out/$name.json" 2>>"$log"
    echo "=== $name: exit $? in $((SECONDS - t0)) s" | tee -a "$log"
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c 'import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))'
    nproc
} >"$log" 2>&1
step tests 150 "$py" -m pytest -q -p no:cacheprovider -rs tests/core/test_precision.py tests/attacks/test_batching.py \
    tests/distributed/test_world.py
step real_size 240 "$py" benchmarks/real_size.py --device cuda --layers 4 --vocab 50304 --texts 64 --seq-len 512 \
    --batch-size 16
step demo_quick_cuda 200 "$py" -m flexaudit demo --quick --device cuda --workdir "/tmp/demo-cuda" --json
step attack_throughput 120 "$py" benchmarks/attack_throughput.py --device cuda
step scaling 120 "$py" benchmarks/scaling.py --device cuda --processes 1
step demo_quick_cuda_bf16 150 "$py" -m flexaudit demo --quick --device cuda --dtype bfloat16 --workdir "/tmp/demo-bf16" --json
