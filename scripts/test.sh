#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes a virtualenv, installs spool
# with its test extras, the pinned Codex CLI from npm and Arize Phoenix (own virtualenv),
# then runs pytest.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SPOOL_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet -e '.[test]'
# The real Codex CLI for the end-to-end tests (pinned; cached between runs).
"$VENV/bin/python" scripts/install_codex.py
# A real Arize Phoenix for the OTLP end-to-end test: its own cached virtualenv
# (~/.cache/spool-phoenix, ~850 MB, ~3 min the first time; a version check after).
"$VENV/bin/python" scripts/install_phoenix.py >/dev/null
exec "$VENV/bin/python" -m pytest "$@"
