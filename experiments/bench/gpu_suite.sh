#!/bin/bash
# The GPU benchmarks whose results are committed as experiments/results/bench/*_gpu.json.
#
#   bash experiments/bench/gpu_suite.sh [OUT_DIR]     # default: experiments/results/bench
#
# Needs a GPU jax, flax, optax, tensorflow-datasets and MNIST in $TFDS_DATA_DIR
# (default ../shared/tfds). Runs from the repository root; about 2 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-experiments/results/bench}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# The experiments' YNNPACK switch only touches XLA:CPU; off here so XLA_FLAGS stays empty.
export ADMMJAX_FAST_CPU_KERNELS=0
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY experiments/bench/bench_projection.py --budget 6 --out "$OUT/projection_gpu.json"
$PY experiments/bench/bench_alexnet.py --out "$OUT/alexnet_gpu.json"
$PY experiments/bench/bench_wstep.py --steps 500 --repeats 11 --out "$OUT/wstep_gpu.json"
