# Sourced by the scripted agents: run the project's tests the way its developers do.
# A Node project (package.json with a "test" script, npm on PATH): `npm test`, which finds
# the runner in any node_modules/.bin up the tree; else pytest from the image's venv.
# usage: run_tests LINES   (prints the last LINES lines of the output; never fails)
is_node_project() {
    [ -f package.json ] && grep -q '"test"[[:space:]]*:' package.json && command -v npm >/dev/null 2>&1
}
run_tests() {
    if is_node_project; then
        local made=
        [ -e node_modules ] || made=1
        # No update check (there is no network), no watch mode.
        CI=true npm_config_update_notifier=false npm_config_fund=false \
            npm test --silent 2>&1 | tail -n "$1" || true
        # The runner's cache (node_modules/.vite) is no change of the agent's.
        if [ -n "$made" ]; then rm -rf node_modules; fi
    elif [ -x /opt/venv/bin/python ]; then
        PYTHONDONTWRITEBYTECODE=1 /opt/venv/bin/python -m pytest -q -p no:cacheprovider 2>&1 | tail -n "$1" || true
    fi
}
