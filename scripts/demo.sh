#!/usr/bin/env bash
# The main job on a fresh machine: install spool into a virtualenv and run
# `spool demo` (real hook processes -> SQLite -> worker -> a loopback receiver
# speaking the Infinium API -> `spool history`).  No network, no credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SPOOL_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet -e .
exec "$VENV/bin/spool" demo "$@"
