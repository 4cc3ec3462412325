# Sourced by the scripted agents: write the agent's claim where evalkit asked for it.
# usage: claim true|false "summary"
claim() {
    local file="${EVALKIT_CLAIM_FILE:-}"
    local summary
    summary=$(printf '%s' "$2" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))')
    local body="{\"resolved\": $1, \"summary\": $summary}"
    if [ -n "$file" ]; then
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$body" > "$file"
    fi
    printf 'claim: %s\n' "$body"
}
