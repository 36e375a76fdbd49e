#!/usr/bin/env bash
# Item 8 on a CUDA machine: the GPU tests, then the accelerator timings at two sizes with GPU
# sharing. Needs torch, torchvision, numpy, scikit-learn, matplotlib, rich and pytest (no Ray or
# MLflow: trial processes are started directly, as Ray's trial workers would be).
#   scripts/bench/gpu_check.sh [OUT_DIR]   (default .lrsweep/bench/gpu; ~6 minutes on an H200)
# scripts/bench/gpu_check.sh scripts/bench/gpu_results replaces the GPU results BENCHMARKS.md
# shows (then python scripts/bench/run_all.py --render, on a machine that ran the CPU
# benchmarks, rewrites it without rerunning them).
# Without a CUDA device it stops at once (exit 1) and writes nothing. Every step's output goes
# to a fresh folder that replaces OUT_DIR's files only when every step succeeded: a failed or
# partial run never overwrites the results kept there.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.lrsweep/bench/gpu}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if ! $py -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False): nothing to" \
        "time; run it on a machine with an NVIDIA GPU. Nothing was written to $out." >&2
    exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)  # in $TMPDIR
trap 'rm -rf "$work"' EXIT
nvidia-smi -L || true  # the driver's own listing, when its tool is installed
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"
$py -m pytest -q -p no:cacheprovider -o addopts="-ra --durations=10" \
    tests/trainers/test_accelerator_cuda.py "tests/trainers/test_accelerator.py::test_fp16_on_cuda_scales_gradients_and_checkpoints_the_scaler" \
    2>&1 | tee "$work/pytest.log"
# small trials (64 px, batch 64): the case GPU sharing is for
$py scripts/bench/bench_accelerator.py --out "$work/accel_64.json" 2>&1 | tee "$work/accel_64.txt"
# larger images (224 px, batch 128): where bf16 and channels_last pay
$py scripts/bench/bench_accelerator.py --image-size 224 --batch-size 128 --n-per-class 400 \
    --reps 3 --out "$work/accel_224.json" 2>&1 | tee "$work/accel_224.txt"
cp "$work"/* "$out"/
echo "gpu_check.sh: results in $out"
