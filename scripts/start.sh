#!/usr/bin/env bash
# Starts kviz with its embedded defaults: installs what is missing, migrates the SQLite database
# in ./data, and serves on http://127.0.0.1:8000 until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mkdir -p data
.venv/bin/python manage.py migrate --noinput
exec .venv/bin/daphne -b 127.0.0.1 -p "${PORT:-8000}" kviz.asgi:application
