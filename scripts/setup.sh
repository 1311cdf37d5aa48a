#!/usr/bin/env bash
# Create the project's virtual environment: torch first (so nothing pulls another build), then sfv.
#   bash scripts/setup.sh [VENV]        (default .venv; TORCH="torch==X [pip options]" to choose another torch)
# On these CPU machines `torch==2.13.0` resolves to the local CPU wheel; on a GPU machine the same pin
# resolves to the CUDA build from PyPI. Every other version comes from constraints.txt. Extras: dev (tests) and
# serve (`sfv serve`, whose page the tests drive); the browser for that test is scripts/setup-browser.sh's.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"
torch_spec="${TORCH:-torch==2.13.0}"
"$python" -m venv "$venv"
# shellcheck disable=SC2086  # TORCH may carry pip options (e.g. an index URL)
# --no-compile: no bytecode for every installed file up front (it halves the setup here); Python compiles the
# modules it imports on first use.
"$venv/bin/python" -m pip install --quiet --no-compile $torch_spec
"$venv/bin/python" -m pip install --quiet --no-compile -c constraints.txt -e ".[dev,serve]"
if "$venv/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "setup: note: CUDA packages were installed (nvidia-*); expected only on GPU machines" >&2
fi
"$venv/bin/python" -c "import torch, diffusers, sfv; print(f'setup: sfv {sfv.__version__}, torch {torch.__version__}, diffusers {diffusers.__version__}')"
