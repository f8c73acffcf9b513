#!/usr/bin/env bash
# One benchmark mode on the GPU machine, from the repository root, in one command (docs/speed.md):
#   bash scripts/bench-gpu.sh dev fast          # FLUX.1-dev 1024x1024 28 steps, lossless fast path
#   bash scripts/bench-gpu.sh schnell fast      # schnell 1024x1024 4 steps
#   bash scripts/bench-gpu.sh dev cap24-auto    # under a 24 GiB cap, vs diffusers' model offload
# Installs the carried wheels from .whl/ (scripts/bench-wheels.sh), runs `localflux bench`, appends the
# record to benchmarks/results/results.json and copies it to $OUT when that is set. Each mode fits in
# 10 minutes; run modes as separate calls and commit the results file after each.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench-gpu.sh dev|schnell MODE [extra localflux bench flags]}
mode=${2:?usage: bench-gpu.sh dev|schnell MODE [extra localflux bench flags]}
shift 2
if [[ -d .whl ]] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m localflux bench --dry-run
python3 -m localflux bench --model "$model" --mode "$mode" "$@"
if [[ -n "${OUT:-}" ]]; then cp benchmarks/results/results.json "$OUT/results.json"; fi
