#!/usr/bin/env bash
# Create .venv/ at the repo root and install essayscore (CLI included) with everything it needs, offline-safe.
# Idempotent and quick when nothing changed (a stamp keyed on the install inputs skips the pip work).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.essayscore-setup
inputs=$(cat pyproject.toml scripts/setup.sh scripts/install_triton.sh 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch, pinned first: a plain 'torch' requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[export,dev]'
# Triton's server binary (python backend + ensembles) from nvidia-pytriton, installed without its numpy<2 pin.
if [ -f scripts/install_triton.sh ]; then
  bash scripts/install_triton.sh "$PWD/.venv"
fi
echo "$inputs" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/essayscore --help >/dev/null && echo 'essayscore CLI installed'))"
