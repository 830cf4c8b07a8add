#!/usr/bin/env bash
# Run every benchmark side by side on this machine and write docs/benchmarks.md (the source of every speed claim).
#   benchmarks/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
out=docs/benchmarks.md
tmp=$(mktemp)
quick=${1:-}
mkdir -p out; log=out/benchmarks.stderr.log; : > "$log"  # progress bars and warnings

section() {  # title, command...
  local title=$1; shift
  echo "running: $title" >&2
  { echo; echo "## $title"; echo; echo "\`$*\`"; echo; "$@" 2>>"$log"; } >> "$tmp"
}

{
  echo "# Benchmarks"
  echo
  echo "Produced by \`benchmarks/run_all.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores"\
       "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB,"\
       "no GPU; load average at start: $(cut -d' ' -f1-3 /proc/loadavg). Medians unless stated; every comparison"\
       "in a table was measured side by side in the same run."
  echo
  echo "Component benchmarks. The service as a whole (per-stage latency, BentoML overhead, embedded vs Triton,"\
       "throughput against concurrency, memory) is in docs/performance.md, from benchmarks/bench_service.py."
} > "$tmp"
section "Feature extraction (one core)" $PY benchmarks/bench_features.py
section "Encoder: PyTorch windows" $PY benchmarks/bench_encoder.py --repeats 2
section "Encoder: PyTorch vs ONNX fp32 / int8 / fp16" $PY benchmarks/bench_encoder_onnx.py --repeats 2
section "Trees: Treelite/tl2cgen vs XGBoost, compile time, SHAP" $PY benchmarks/bench_trees.py ${quick:+--quick}
section "Triton ensemble vs in-process (cpu profile, int8 encoder)" $PY benchmarks/bench_triton.py --cpu-variant int8
echo >> "$tmp"
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >> "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
