#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with an NVIDIA GPU (CI has none):
#   FEDLEDGER_MNIST_DIR=DIR [OUT=DIR] bash benchmarks/cuda.sh
# 1. tests/fl/test_cuda.py (training, bit-exact replay, CUDA-recorded PoL verified on CUDA
#    and CPU) and tests/fl/test_train.py; 2. training throughput on the GPU against a
#    hand-written loop; 3. CUDA-trained, CPU-replayed PoL distances; 4. the 50-round MNIST
#    FedAvg campaign on the GPU. Needs torch (CUDA build), numpy, msgpack, pytest, hypothesis.
set -uo pipefail
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
PY=${PY:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)' | tee -a "$OUT/gpu.txt"
timeout 150 $PY -m pytest -q -s -p no:cacheprovider -o addopts="" tests/fl/test_cuda.py tests/fl/test_train.py 2>&1 | tee "$OUT/pytest.log"
timeout 120 $PY benchmarks/training.py --device cuda --repeats 5 --agg-sizes "" 2>&1 | tee "$OUT/training.log"
timeout 150 $PY benchmarks/pol.py --cross-device-only 2>&1 | tee "$OUT/pol.log"
timeout 240 $PY benchmarks/fl_mnist.py --device cuda --runs fedavg --json "$OUT/mnist.json" 2>&1 | tee "$OUT/mnist.log"
