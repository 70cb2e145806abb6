#!/usr/bin/env bash
# QaTa-COV19 gpu profile in ONE device-tool call: install Keras, train U-Net/DenseNet-121 on the
# train split (paper's setting, time-boxed), score the validation split, bring back metrics,
# gallery and the weights in parts. See bench/device/README.md for the preparation and the call.
#
#   BACKEND=torch (default) or jax;  extra arguments go to bench/qata_benchmark.py
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=${BACKEND:-torch}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import keras, numpy, PIL; print("keras", keras.__version__, keras.config.backend(), "numpy", numpy.__version__, "Pillow", PIL.__version__)'
  python3 bench/device/qata_gpu.py --pack var/qata-pack --work /tmp/qata-gpu --out "$OUT" -- "$@"
} 2>&1 | tee "$OUT/log.txt"
