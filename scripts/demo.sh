#!/usr/bin/env bash
# Set up (if needed), then evaluate the sample task set: gold + scripted agents.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
evalkit demo "$@"
