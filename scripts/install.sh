#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch pinned FIRST, then localflux.
# torch must come first: installed later as a dependency, pip would pick the newest build and
# pull several GB of CUDA wheels. Override the pin with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0"
# with an --index-url of your choice in PIP_INDEX_URL for a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev}"
STAMP="$VENV/.localflux-installed"

want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16) $TORCH_SPEC $EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import localflux, torch" 2>/dev/null; then
    exit 0  # already installed for this pyproject
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "install: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "install: $TORCH_SPEC (first, so nothing pulls another torch build)" >&2
"${PIP[@]}" "$TORCH_SPEC"
echo "install: localflux[$EXTRAS] (editable)" >&2
"${PIP[@]}" -e ".[$EXTRAS]"

# Check that installing the project did not replace torch.
pinned="${TORCH_SPEC#torch==}"
actual="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
case "$actual" in
    "$pinned"|"$pinned"+*) ;;
    *) echo "install: torch is $actual after installing localflux, expected $pinned; something pulled another build" >&2; exit 1 ;;
esac
echo "$want" > "$STAMP"
echo "install: done (torch $actual)" >&2
