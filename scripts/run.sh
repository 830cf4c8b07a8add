#!/usr/bin/env bash
# The main job: set up .venv, train the default model if none is built yet, score the example CSV (batch path),
# then serve the BentoML service on the embedded runtime (foreground; Ctrl-C stops it) with the gRPC API beside it.
#   scripts/run.sh [--no-serve] [INPUT.csv [OUTPUT.csv]]   (defaults: examples/essays.csv -> out/scores.csv)
#   PORT=3000 GRPC_PORT=50051 HOST=127.0.0.1 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
serve=1
if [ "${1:-}" = "--no-serve" ]; then serve=0; shift; fi
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! .venv/bin/essayscore info --model champion >/dev/null 2>&1 && [ ! -f "${ESSAYSCORE_ARTIFACTS_DIR:-artifacts}/champion.json" ] \
   && .venv/bin/essayscore info --model latest >/dev/null 2>&1; then
  echo "no champion yet: the newest trained model becomes the first one (later models go through essayscore retrain)"
  .venv/bin/essayscore promote latest --reason "first champion (scripts/run.sh: models existed, no champion)"
fi
if ! .venv/bin/essayscore info --model champion >/dev/null 2>&1; then
  echo "no trained model found: training the default model (IELTS + W&I sources, learned error detector, latent ordinal model; about 10 minutes on 2 cores with a cold cache)"
  .venv/bin/essayscore train
fi
input=${1:-examples/essays.csv}
output=${2:-out/scores.csv}
mkdir -p "$(dirname "$output")"
.venv/bin/essayscore score "$input" -o "$output"
cut -c1-200 "$output"
if [ "$serve" = 1 ]; then
  if [ "${GRPC_PORT:-50051}" != 0 ]; then  # the gRPC API beside the Bento (README: gRPC API); GRPC_PORT=0: off
    .venv/bin/essayscore grpc-serve --host "${HOST:-127.0.0.1}" --port "${GRPC_PORT:-50051}" &
    grpc_pid=$!
    trap 'kill "$grpc_pid" 2>/dev/null || true' EXIT
    echo "gRPC on ${HOST:-127.0.0.1}:${GRPC_PORT:-50051}  (essayscore.v1.EssayScore, grpc.health.v1)"
  fi
  echo "serving on http://${HOST:-127.0.0.1}:${PORT:-3000}  (POST /score, /score_batch; GET /metadata, /readyz, /metrics; OpenAPI at /docs.json)"
  .venv/bin/bentoml serve service:EssayScoreService --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}"
fi
