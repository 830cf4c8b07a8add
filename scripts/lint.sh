#!/usr/bin/env bash
# Lint and type-check: ruff (pyflakes, pycodestyle, import order, bugbear, blind excepts) on the whole tree and
# mypy on the runtime package. Both are configured in pyproject.toml; .ci/run runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
