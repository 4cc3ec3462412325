#!/bin/bash
# Scripted agent "oracle": applies the task's own fix and claims success.
# The fixes come in as agent files, one <instance_id>.patch per task in PATCH_DIR; the
# runner names the task in EVALKIT_INSTANCE_ID. Shows the ceiling: what resolving looks like.
# usage: bash oracle.sh PATCH_DIR
set -euo pipefail
. "$(dirname "$0")/_claim.sh"
patches="${1:?usage: oracle.sh PATCH_DIR}"
id="${EVALKIT_INSTANCE_ID:?EVALKIT_INSTANCE_ID is not set}"
case "$id" in */* | .*) echo "oracle: refusing instance id '$id'" >&2; exit 2 ;; esac
patch="$patches/$id.patch"
if [ ! -f "$patch" ]; then
    claim false "no reference fix for $id in $patches"
    exit 1
fi
git apply --whitespace=nowarn "$patch"
git status --short
# Checks its work before it claims (so the audit sees tests run before the claim).
. "$(dirname "$0")/_tests.sh"
run_tests 1
claim true "applied the reference fix for $id"
