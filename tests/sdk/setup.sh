#!/usr/bin/env bash
# Creates (or reuses) the Python venv the official-SDK end-to-end tests run in, and prints the
# venv's python as the last line of stdout (everything else goes to stderr).
#
# The venv lives in `$CARGO_TARGET_DIR/sdk-venv` (default: `target/sdk-venv` in the workspace
# root). It is idempotent: the pinned requirements are installed only when the stamp file for
# this requirements.txt (and this Python) is missing, so a warm run takes well under a second.
# Needs python3 with the venv module and network access to PyPI on the first run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
requirements="$here/requirements.txt"

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in
/*) ;;
*) target="$root/$target" ;;
esac
venv="$target/sdk-venv"
python="$venv/bin/python"

fail() {
    echo "tests/sdk/setup.sh: $*" >&2
    exit 1
}

host_python="${PYTHON:-python3}"
command -v "$host_python" >/dev/null 2>&1 ||
    fail "'$host_python' not found: the SDK tests need Python 3.9+ with venv and pip (e.g. apt-get install python3 python3-venv python3-pip)"
"$host_python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    fail "$("$host_python" --version 2>&1) is too old: the SDK tests need Python 3.9+"

mkdir -p "$target"
# One setup at a time (parallel test binaries, two workspaces sharing a target dir).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$target/sdk-venv.lock"
    flock 9
fi

# The stamp names what is installed: these requirements, this script, this host Python.
hash="$(
    {
        cat "$requirements" "$here/setup.sh"
        "$host_python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -c1-16
)"
stamp="$venv/.installed-$hash"

if [[ -f "$stamp" ]] && "$python" -c "" >/dev/null 2>&1; then
    echo "$python"
    exit 0
fi

# Stale, half-built or made by another Python: start over.
rm -rf "$venv"
"$host_python" -m venv "$venv" >&2 ||
    fail "'$host_python -m venv' failed: install the venv module (e.g. apt-get install python3-venv)"
"$python" -m pip --version >/dev/null 2>&1 ||
    fail "the venv has no pip: install ensurepip/pip for $host_python (e.g. apt-get install python3-venv python3-pip)"
echo "tests/sdk/setup.sh: installing $requirements into $venv" >&2
"$python" -m pip install --disable-pip-version-check --no-input --quiet \
    --requirement "$requirements" >&2 ||
    fail "pip install -r $requirements failed (is PyPI reachable?)"
"$python" -c 'import openai, anthropic, google.genai' >&2 ||
    fail "the SDKs do not import after installing"
touch "$stamp"
echo "$python"
