#!/usr/bin/env bash
# One benchmark mode on the GPU machine, from the repository root, in one command (docs/speed.md):
#   bash scripts/bench-gpu.sh dev fast          # FLUX.1-dev 1024x1024 28 steps, lossless fast path
#   bash scripts/bench-gpu.sh schnell fast      # schnell 1024x1024 4 steps
#   bash scripts/bench-gpu.sh dev cap24-auto    # under a 24 GiB cap, vs diffusers' model offload
#   bash scripts/bench-gpu.sh upscale           # Real-ESRGAN x4plus 1024 -> 4096 in fp16
# Installs the carried wheels from .whl/ (scripts/bench-wheels.sh), runs `localflux bench`, appends the
# record to benchmarks/results/results.json and copies it to $OUT when that is set. Each mode fits in
# 10 minutes; run modes as separate calls and commit the results file after each.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bench-gpu.sh dev|schnell MODE [extra localflux bench flags] | bench-gpu.sh upscale [flags]"
model=${1:?$usage}
if [[ "$model" == upscale ]]; then
  mode=upscale
  shift 1
else
  mode=${2:?$usage}
  shift 2
fi
if [[ -d .whl ]] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [[ "$mode" == upscale ]]; then
  weights=.whl/realesrgan-x4plus.safetensors
  [[ -f "$weights" ]] || { echo "no $weights: run scripts/bench-wheels.sh here first" >&2; exit 2; }
  python3 -m localflux bench --mode upscale --upscaler "$weights" "$@"
else
  python3 -m localflux bench --dry-run
  python3 -m localflux bench --model "$model" --mode "$mode" "$@"
fi
if [[ -n "${OUT:-}" ]]; then cp benchmarks/results/results.json "$OUT/results.json"; fi
