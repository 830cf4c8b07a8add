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
# torch (training and the ONNX export: the `train` extra) first, as the CPU build. From PyPI, torch==2.13.0 on Linux
# x86_64 is the CUDA build (15 nvidia-* wheels, several GB); the PyTorch CPU index serves 2.13.0+cpu (~180 MB).
# When that index cannot be reached, the plain requirement is installed from whatever pip is configured with.
TORCH_VERSION=2.13.0
TORCH_INDEX=${ESSAYSCORE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
torch_build() {  # "2.13.0+cpu cpu", "2.13.0 cuda-12.8", or nothing when torch is not installed
  .venv/bin/python -c "import torch; print(torch.__version__, 'cuda-' + torch.version.cuda if torch.version.cuda else 'cpu')" 2>/dev/null || true
}
reachable() {  # a quick HEAD request (10 s), through the proxy settings of the environment
  .venv/bin/python - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=10).close()
except Exception as exc:  # DNS, proxy, TLS or HTTP errors alike: the index is not usable from here
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}
installed="$(torch_build)"
if [[ "$installed" == "$TORCH_VERSION"*" cpu" ]]; then
  echo "setup: torch $installed build already installed"
elif why="$(reachable "${TORCH_INDEX%/}/torch/" 2>&1)"; then
  echo "setup: torch==$TORCH_VERSION from the PyTorch CPU index $TORCH_INDEX"
  .venv/bin/python -m pip install -q --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
else
  echo "setup: $TORCH_INDEX cannot be reached (${why:-no answer}): falling back to" \
       "torch==$TORCH_VERSION from pip's configured index (a CPU build only if that index or a find-links folder has one)"
  .venv/bin/python -m pip install -q "torch==$TORCH_VERSION"
fi
installed="$(torch_build)"
echo "setup: torch $installed"
[[ "$installed" == *" cpu" ]] || echo "setup: WARNING: this torch is not the CPU build (several GB of CUDA libraries)" >&2
# the project with the serving set and every extra the development loop and CI use (the Bento installs the serving
# set only: pyproject.toml)
.venv/bin/python -m pip install -q -e '.[train,export,dev,backfill,triton-models]'
# Triton's server binary (python backend + ensembles) from nvidia-pytriton, installed without its numpy<2 pin.
if [ -f scripts/install_triton.sh ]; then
  bash scripts/install_triton.sh "$PWD/.venv"
fi
echo "$inputs" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/essayscore --help >/dev/null && echo 'essayscore CLI installed'))"
