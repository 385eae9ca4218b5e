#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes a virtualenv, installs spool
# with its test extras, the pinned Codex CLI and ccusage from npm, and Arize Phoenix (in its
# own virtualenv), Debian's chromium when root with apt, then runs pytest.
# The pip installs run only when pyproject.toml changed since the last one (a stamp
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
  # Harbor's ATIF validator for the ATIF tests: only its pydantic models are used, so skip
  # its declared Python >= 3.12 and heavy dependencies (pydantic comes with the test extra).
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip \
         && "$VENV/bin/python" -m pip install --quiet -e '.[test]' \
         && "$VENV/bin/python" -m pip install --quiet --no-deps --ignore-requires-python \
              'harbor==0.26.0'; } >"$VENV/install.log" 2>&1; then
    cat "$VENV/install.log" >&2
    exit 1
  fi
  echo "$WANT" >"$STAMP"
fi
# The real Codex CLI for the end-to-end tests (pinned; cached between runs).
"$VENV/bin/python" scripts/install_npm.py codex
# ccusage (pinned), the peer the cost acceptance test and scripts/bench_usage.py compare with.
"$VENV/bin/python" scripts/install_npm.py ccusage
# A real Arize Phoenix for the OTLP end-to-end test: its own cached virtualenv
# (~/.cache/spool-phoenix, ~850 MB, ~3 min the first time; a version check after).
"$VENV/bin/python" scripts/install_phoenix.py >/dev/null
# Debian's chromium for the `spool ui` browser tests (driven by Playwright with
# executable_path; never `playwright install`): installed once, only as root with apt.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null
fi
exec "$VENV/bin/python" -m pytest "$@"
