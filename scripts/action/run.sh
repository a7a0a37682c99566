#!/usr/bin/env bash
# The GitHub Action's second step (action.yml): runs the agent and sets the
# outputs run_id, run_url, state, result and agent_output.
#
# Inputs arrive as INPUT_* variables and reach `hangar` as separate arguments
# (`--flag=value`, so a value starting with `-` stays a value) or through its
# environment (the API key): never through the text of a script. Results are
# read from the CLI's JSON output (`--output-format json`), never scraped
# from its human output.
#
# cloud=false: `hangar agent run` here, in the job (tracked on the server when
#   a server URL and key are set).
# cloud=true: `hangar agent run-cloud` on the team's workers, then
#   `hangar run watch` until the run ends.
# The outputs are set however the run ends; the step fails unless it
# SUCCEEDED.
set -euo pipefail

fail() {
    printf '::error title=Hangar action::%s\n' "$*"
    exit 1
}

[[ -n "${GITHUB_OUTPUT:-}" ]] || fail "GITHUB_OUTPUT is not set: this script runs as a step of action.yml"
command -v jq >/dev/null || fail "jq is required on the runner (GitHub-hosted runners have it)"
bin="${HANGAR_BIN:-hangar}"

prompt="${INPUT_PROMPT:-}"
skill="${INPUT_SKILL:-}"
format="${INPUT_OUTPUT_FORMAT:-text}"
case "${INPUT_CLOUD:-false}" in
true | True | TRUE) cloud=true ;;
false | False | FALSE | '') cloud=false ;;
*) fail "cloud: expected true or false, got '${INPUT_CLOUD}'" ;;
esac
case "$format" in
text | json) ;;
*) fail "output_format: expected text or json, got '$format'" ;;
esac
if [[ -z "${prompt//[[:space:]]/}" && -z "$skill" ]]; then
    fail "Either \`prompt\` or \`skill\` must be provided"
fi

# The key and URL: the inputs, else what the job's environment has.
api_key="${INPUT_API_KEY:-${HANGAR_API_KEY:-}}"
server_url="${INPUT_SERVER_URL:-${HANGAR_SERVER_URL:-}}"
unset HANGAR_API_KEY HANGAR_SERVER_URL
if [[ -n "$api_key" ]]; then
    echo "::add-mask::$api_key"
    export HANGAR_API_KEY="$api_key"
fi
if [[ -n "$server_url" ]]; then
    export HANGAR_SERVER_URL="$server_url"
fi

args=()
[[ -n "$prompt" ]] && args+=("--prompt=$prompt")
[[ -n "$skill" ]] && args+=("--skill=$skill")
[[ -n "${INPUT_MODEL:-}" ]] && args+=("--model=$INPUT_MODEL")
[[ -n "${INPUT_NAME:-}" ]] && args+=("--name=$INPUT_NAME")
[[ -n "${INPUT_MCP:-}" ]] && args+=("--mcp=$INPUT_MCP")
while IFS= read -r who; do
    who="${who#"${who%%[![:space:]]*}"}"
    who="${who%"${who##*[![:space:]]}"}"
    [[ -n "$who" ]] && args+=("--share=$who")
done < <(printf '%s\n' "${INPUT_SHARE:-}" | tr ',' '\n')

work="$(mktemp -d "${RUNNER_TEMP:-/tmp}/hangar-action.XXXXXX")"
summary="$work/summary.json"
status=0
run_id=""
if [[ "$cloud" == true ]]; then
    [[ -n "$server_url" ]] || fail "cloud: true needs server_url (or HANGAR_SERVER_URL)"
    [[ -n "$api_key" ]] || fail "cloud: true needs api_key (or HANGAR_API_KEY), e.g. \${{ secrets.HANGAR_API_KEY }}"
    [[ -n "${prompt//[[:space:]]/}" ]] || fail "cloud: true needs a prompt"
    [[ -n "${INPUT_CWD:-}" ]] && echo "::warning title=Hangar action::cwd is ignored for cloud runs"
    [[ -n "${INPUT_HOST:-}" ]] && args+=("--host=$INPUT_HOST")
    [[ -n "${INPUT_ENVIRONMENT:-}" ]] && args+=("--environment=$INPUT_ENVIRONMENT")
    HANGAR_RUN_SOURCE=GITHUB_ACTION "$bin" --output-format json agent run-cloud "${args[@]}" >"$work/created.json" ||
        fail "the run was not created (see the error above)"
    run_id="$(jq -r '.run_id // empty' "$work/created.json")"
    [[ -n "$run_id" ]] || fail "the server's answer names no run: $(cat "$work/created.json")"
    echo "Created run $run_id"
    "$bin" --output-format json run watch -- "$run_id" >"$summary" || status=$?
else
    [[ -n "${INPUT_HOST:-}" ]] && echo "::warning title=Hangar action::host applies to cloud runs only; ignored"
    [[ -n "${INPUT_ENVIRONMENT:-}" ]] && echo "::warning title=Hangar action::environment applies to cloud runs only; ignored"
    [[ -n "${INPUT_CWD:-}" ]] && args+=("--cwd=$INPUT_CWD")
    "$bin" --output-format json agent run "${args[@]}" >"$summary" || status=$?
    run_id="$(jq -r '.run_id // empty' "$summary" 2>/dev/null || true)"
fi

# The summary: {"state", "result", "run_id", ...}; absent when the CLI failed
# before the run started (its error is in the log above).
if ! jq -e 'type == "object"' "$summary" >/dev/null 2>&1; then
    echo '{"state": "ERROR", "success": false, "result": ""}' >"$summary"
fi
state="$(jq -r '.state // "ERROR"' "$summary")"
result="$(jq -r '.result // .error // ""' "$summary")"
run_url=""
if [[ -n "$run_id" && -n "$server_url" && -n "$api_key" ]]; then
    run_url="$("$bin" --output-format json run get -- "$run_id" | jq -r '.session_link // empty')" || run_url=""
fi
if [[ "$format" == json ]]; then
    agent_output="$(jq --arg url "$run_url" '. + {run_url: (if $url == "" then null else $url end)}' "$summary")"
else
    agent_output="$result"
fi

# One output, in the multi-line form with a delimiter the value cannot hold
# (the result is the model's text: it must not be able to set other outputs).
set_output() {
    local name="$1" value="$2" delimiter
    delimiter="HANGAR_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s<<%s\n%s\n%s\n' "$name" "$delimiter" "$value" "$delimiter" >>"$GITHUB_OUTPUT"
}
set_output run_id "$run_id"
set_output run_url "$run_url"
set_output state "$state"
set_output result "$result"
set_output agent_output "$agent_output"

# The model's text could hold workflow commands: shown with them turned off.
stop="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
echo "::group::Result ($state)"
echo "::stop-commands::$stop"
printf '%s\n' "$result"
echo "::$stop::"
echo "::endgroup::"
if [[ -n "$run_url" ]]; then
    echo "::notice title=Hangar run $state::$run_url"
fi
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    {
        echo "### Hangar run: $state"
        [[ -n "$run_url" ]] && echo "[$run_id]($run_url)"
        echo
        printf '%s\n' "$result"
    } >>"$GITHUB_STEP_SUMMARY"
fi

if [[ "$state" != SUCCEEDED ]]; then
    fail "the run ${run_id:+$run_id }ended $state (exit status $status)"
fi
