#!/usr/bin/env bash
# Install a real Triton Inference Server (CPU) into a virtual environment, from the nvidia-pytriton wheel.
#
#   scripts/install_triton.sh [VENV]        # default VENV: /work/main/.venv
#
# nvidia-pytriton 0.7.0 pins numpy<2, which clashes with the rest of the stack. Only its bundled server binary
# (pytriton/tritonserver, server 2.51) and shared libraries (nvidia_pytriton.libs) are used, so it is installed
# with --no-deps. The client side is tritonclient[http,grpc], installed with the project's "export" extra.
# It then prepares (once) the server tree under the project cache and the python backend "stub env": the server
# 2.51 python backend stub needs numpy 1.x (under numpy 2 it returns empty outputs), so python-backend models run
# on a small venv holding numpy==1.26.4 that chains to VENV's site-packages (see devtools/triton_launcher.py).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

VERSION="0.7.0"
VENV="${1:-/work/main/.venv}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "install_triton.sh: no Python interpreter at $PY" >&2
    exit 2
fi

installed="$("$PY" - <<'PY'
import importlib.metadata as m
try:
    print(m.version("nvidia-pytriton"))
except m.PackageNotFoundError:
    print("")
PY
)"

server_bin() {
    "$PY" - <<'PY'
import sysconfig, pathlib
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "pytriton" / "tritonserver" / "bin" / "tritonserver")
PY
}

if [[ "$installed" == "$VERSION" && -f "$(server_bin)" ]]; then
    echo "nvidia-pytriton $VERSION already installed in $VENV"
else
    "$PY" -m pip install --no-deps "nvidia-pytriton==$VERSION"
fi

bin="$(server_bin)"
if [[ ! -f "$bin" ]]; then
    echo "install_triton.sh: nvidia-pytriton installed but $bin is missing" >&2
    exit 1
fi
echo "tritonserver binary: $bin"

# devtools/ is a development package of this checkout: run it from the repository root (importable from there
# whether or not the project is installed editable).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (cd "$ROOT" && "$PY" -c "import devtools.triton_launcher") 2>/dev/null; then
    (cd "$ROOT" && "$PY" -m devtools.triton_launcher --prepare-stub-env)
else
    echo "devtools.triton_launcher is not importable from $PY: skipped the stub env;" \
         "run 'python -m devtools.triton_launcher --prepare-stub-env' (from $ROOT) later" >&2
fi
