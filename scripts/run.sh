#!/usr/bin/env bash
# The main job: set up .venv, train the default model if none is built yet, then score a CSV.
#   scripts/run.sh [INPUT.csv [OUTPUT.csv]]     (defaults: examples/essays.csv -> out/scores.csv)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! .venv/bin/essayscore info --model latest >/dev/null 2>&1; then
  echo "no trained model found: training the default model (MiniLM + handcrafted features + XGBoost)"
  .venv/bin/essayscore train
fi
input=${1:-examples/essays.csv}
output=${2:-out/scores.csv}
mkdir -p "$(dirname "$output")"
.venv/bin/essayscore score "$input" -o "$output"
cut -c1-200 "$output"
