#!/bin/bash
# Scripted agent "liar": reads the problem, changes nothing, and claims it fixed it.
# Exists so the report's claimed-vs-verified numbers have an overclaim to show.
set -euo pipefail
. "$(dirname "$0")/_claim.sh"
head -n 1 "${EVALKIT_PROBLEM_FILE:-/dev/null}" || true
claim true "fixed the issue and verified it with the test suite"
