#!/usr/bin/env bash
# The GitHub Action's first step (action.yml): finds or installs the `hangar`
# binary and writes its path to the step output `path`.
#
# In order: `hangar_path` (a binary already built or installed), `install_url`
# (a download, checked against `install_sha256` when given), a `hangar` on
# PATH, else `cargo install --locked` from the action's own source, so the
# binary always matches the action's ref. Inputs arrive as INPUT_* variables.
set -euo pipefail

fail() {
    printf '::error title=Hangar action::%s\n' "$*"
    exit 1
}

[[ -n "${GITHUB_OUTPUT:-}" ]] || fail "GITHUB_OUTPUT is not set: this script runs as a step of action.yml"

if [[ -n "${INPUT_HANGAR_PATH:-}" ]]; then
    bin="$INPUT_HANGAR_PATH"
    [[ -f "$bin" && -x "$bin" ]] || fail "hangar_path: $bin is not an executable file"
elif [[ -n "${INPUT_INSTALL_URL:-}" ]]; then
    command -v curl >/dev/null || fail "install_url needs curl on the runner"
    dir="$(mktemp -d "${RUNNER_TEMP:-/tmp}/hangar-install.XXXXXX")"
    download="$dir/download"
    echo "Downloading hangar from $INPUT_INSTALL_URL"
    curl --fail --silent --show-error --location --retry 3 --output "$download" -- "$INPUT_INSTALL_URL" ||
        fail "install_url: cannot download $INPUT_INSTALL_URL"
    if [[ -n "${INPUT_INSTALL_SHA256:-}" ]]; then
        got="$(sha256sum "$download" | cut -d' ' -f1)"
        [[ "$got" == "${INPUT_INSTALL_SHA256,,}" ]] ||
            fail "install_sha256: the download's SHA-256 is $got, not $INPUT_INSTALL_SHA256"
    fi
    case "$INPUT_INSTALL_URL" in
    *.tar.gz | *.tgz | *.tar.gz\?* | *.tgz\?*)
        tar -xzf "$download" -C "$dir" || fail "install_url: not a .tar.gz archive"
        bin="$(find "$dir" -type f -name hangar -print -quit)"
        [[ -n "$bin" ]] || fail "install_url: the archive holds no file named hangar"
        ;;
    *)
        bin="$dir/hangar"
        mv "$download" "$bin"
        ;;
    esac
    chmod +x "$bin"
elif command -v hangar >/dev/null; then
    bin="$(command -v hangar)"
else
    command -v cargo >/dev/null ||
        fail "no hangar binary: set hangar_path or install_url, put hangar on PATH, or install Rust so the action can build it"
    root="${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-/tmp}}/hangar"
    echo "::group::Building hangar from the action's source (cargo install)"
    cargo install --locked --root "$root" --path "${GITHUB_ACTION_PATH:?}/crates/hangar-cli" ||
        fail "cargo install of hangar failed (see the log above)"
    echo "::endgroup::"
    bin="$root/bin/hangar"
fi

version="$("$bin" --version)" || fail "$bin does not run"
echo "Using $version ($bin)"
echo "path=$bin" >>"$GITHUB_OUTPUT"
