#!/usr/bin/env bash
# Set up (if needed), then run the lint, type and test suite against the real Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check evalkit tests
mypy
python3 -m pytest "$@"
