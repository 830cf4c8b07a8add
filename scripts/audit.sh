#!/usr/bin/env bash
# Dependency audit: pin every package of the project venv into requirements/lock.txt, then run pip-audit on it.
#
#   bash scripts/audit.sh [extra pip-audit args...]     # e.g. --vulnerability-service osv
#
# (a) requirements/lock.txt: `pip freeze --all --exclude-editable` of .venv without the project itself: every
#     package (pip and setuptools included) pinned with ==; commit it.
# (b) `pip-audit -r requirements/lock.txt --no-deps --disable-pip --strict`: the lock is complete, so nothing is
#     resolved or installed; pip-audit only asks its vulnerability service (PyPI's JSON API by default, or OSV)
#     about each pin. --strict: a package the service cannot answer for fails the audit (without it pip-audit
#     skips such packages, prints "No known vulnerabilities found" and exits 0 even when it audited nothing).
# Exit status: pip-audit's (0 = every pin audited, none vulnerable). Results: docs/reliability.md.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"
LOCK="$REPO/requirements/lock.txt"
mkdir -p "$(dirname "$LOCK")"

{
  echo "# Every package of the project venv, pinned: written by scripts/audit.sh (pip freeze --all --exclude-editable,"
  echo "# without essayscore itself). Python $("$PY" -c 'import platform; print(platform.python_version())'), $(uname -m)."
  "$PY" -m pip freeze --all --exclude-editable --disable-pip-version-check | grep -v -i '^essayscore[ =@]' | LC_ALL=C sort -f
} > "$LOCK"
echo "lock: $LOCK ($(grep -vc '^#' "$LOCK") packages)"

unpinned="$(grep -v '^#' "$LOCK" | grep -v '==' || true)"
[ -z "$unpinned" ] || { echo "not pinned with == (pip-audit --no-deps needs pins):" >&2; echo "$unpinned" >&2; exit 2; }

set -x
exec "$PY" -m pip_audit -r "$LOCK" --no-deps --disable-pip --strict --progress-spinner off "$@"
