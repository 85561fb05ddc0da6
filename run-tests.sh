#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine with only Python 3.11+: creates .venv, installs the
# project with its test extra, then lint (ruff), types (mypy) and tests (pytest, real Redis).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check benchcelery tests benchmarks
.venv/bin/mypy benchcelery
exec .venv/bin/python -m pytest "$@"
