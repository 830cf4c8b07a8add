#!/usr/bin/env bash
# The test command: set up .venv (idempotent), then run the whole pytest suite; arguments go to pytest.
#   scripts/test.sh                  # everything (trains a small model, exports ONNX, starts Bento + Triton)
#   scripts/test.sh -m "not slow"    # the fast loop: no training, export, bento build or server start
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
