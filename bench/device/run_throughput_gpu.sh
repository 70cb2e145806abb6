#!/usr/bin/env bash
# Inference and training throughput of the twelve paper networks at 224 x 224 on the device
# GPU, ms per sample against the paper's Table 8 (2.53-5.58 ms, RTX 2080 Ti). One call, about
# 4 minutes. BACKEND=torch (default) or jax; extra arguments go to bench/throughput.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 bench/throughput.py --backends "${BACKEND:-torch}" --seconds 3 --json "$OUT/throughput.json" "$@" 2>&1 | tee "$OUT/throughput.txt"
