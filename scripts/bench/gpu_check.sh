#!/usr/bin/env bash
# Item 8 on a CUDA machine: the GPU tests, then the accelerator timings at two sizes with GPU
# sharing. Needs torch, torchvision, numpy, scikit-learn, matplotlib, rich and pytest (no Ray or
# MLflow: trial processes are started directly, as Ray's trial workers would be).
#   scripts/bench/gpu_check.sh [OUT_DIR]   (default .lrsweep/bench/gpu; ~6 minutes on an H200)
# scripts/bench/gpu_check.sh scripts/bench/gpu_results replaces the GPU results BENCHMARKS.md
# shows (python scripts/bench/run_all.py --render rewrites it without rerunning anything).
set -u
cd "$(dirname "$0")/../.."
out=${1:-.lrsweep/bench/gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi -L
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"
$py -m pytest -q -p no:cacheprovider -o addopts="-ra --durations=10" \
    tests/trainers/test_accelerator_cuda.py "tests/trainers/test_accelerator.py::test_fp16_on_cuda_scales_gradients_and_checkpoints_the_scaler" \
    2>&1 | tee "$out/pytest.log"
# small trials (64 px, batch 64): the case GPU sharing is for
$py scripts/bench/bench_accelerator.py --out "$out/accel_64.json" 2>&1 | tee "$out/accel_64.txt"
# larger images (224 px, batch 128): where bf16 and channels_last pay
$py scripts/bench/bench_accelerator.py --image-size 224 --batch-size 128 --n-per-class 400 \
    --reps 3 --out "$out/accel_224.json" 2>&1 | tee "$out/accel_224.txt"
