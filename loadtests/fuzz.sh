#!/usr/bin/env bash
# The long OpenAPI fuzz run (schemathesis) against a running Bento: positive and negative cases for POST /score,
# /score_batch, /metadata and GET /metadata, with the checks CI runs (tests/test_openapi.py, ~350 cases), here
# >= 2,000 cases. Prints cases, failures, duration and machine; exits non-zero on any failure.
#   loadtests/fuzz.sh URL [MAX_EXAMPLES_PER_OPERATION=1000] [SEED=20261202]
#   loadtests/fuzz.sh http://127.0.0.1:3000
# Reports (JUnit XML and the NDJSON event log) go to $FUZZ_REPORT_DIR (default: a temp dir).
set -uo pipefail
URL="${1:?usage: loadtests/fuzz.sh URL [MAX_EXAMPLES] [SEED]}"
URL="${URL%/}"
MAX_EXAMPLES="${2:-1000}"
SEED="${3:-20261202}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ST="${ST:-$ROOT/.venv/bin/st}"
REPORT_DIR="${FUZZ_REPORT_DIR:-$(mktemp -d -t essayscore-fuzz-XXXXXX)}"
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"; LOG="$REPORT_DIR/schemathesis.log"
cd "$REPORT_DIR"  # schemathesis keeps a cache (.schemathesis/) in the working directory

start=$(date +%s)
"$ST" run "$URL/docs.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --mode all --max-examples "$MAX_EXAMPLES" --seed "$SEED" --generation-database none \
    --include-path-regex '^/(score|score_batch|metadata)$' --phases examples,coverage,fuzzing \
    --workers 2 --request-timeout 120 --suppress-health-check all --no-color \
    --report junit,ndjson --report-dir "$REPORT_DIR" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
duration=$(( $(date +%s) - start ))

cases=$(grep -oE '[0-9]+ generated' "$LOG" | tail -1 | grep -oE '[0-9]+')
passed=$(grep -oE '[0-9]+ passed' "$LOG" | tail -1 | grep -oE '[0-9]+')
cases=${cases:-0}; passed=${passed:-0}
machine="$(uname -sm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
echo
echo "fuzz: cases=$cases failures=$(( cases - passed )) duration=${duration}s seed=$SEED max_examples=$MAX_EXAMPLES"
echo "fuzz: machine: $machine; schemathesis $("$ST" --version 2>/dev/null | awk '{print $NF}'); reports: $REPORT_DIR"
if [ "$rc" -ne 0 ]; then
    echo "fuzz: FAILED (schemathesis exit $rc)"; exit "$rc"
fi
if [ "$cases" -lt 2000 ]; then
    echo "fuzz: only $cases cases (< 2,000); raise MAX_EXAMPLES"; exit 1
fi
echo "fuzz: OK"
