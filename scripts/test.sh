#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes a virtualenv, installs spool
# with its test extras and the pinned Codex CLI from npm, then runs pytest.
# The pip install runs only when pyproject.toml changed since the last one (a stamp
# file in the virtualenv remembers its hash); pip's output goes to the venv's
# install.log and is shown only if the install fails.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SPOOL_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.spool-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "installing spool and its test extras into $VENV ..." >&2
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip \
         && "$VENV/bin/python" -m pip install --quiet -e '.[test]'; } >"$VENV/install.log" 2>&1; then
    cat "$VENV/install.log" >&2
    exit 1
  fi
  echo "$WANT" >"$STAMP"
fi
# The real Codex CLI for the end-to-end tests (pinned; cached between runs).
"$VENV/bin/python" scripts/install_codex.py
exec "$VENV/bin/python" -m pytest "$@"
