#!/usr/bin/env bash
# Installs (or reuses) the official Node SDKs the end-to-end tests drive through the gateway
# (openai, @anthropic-ai/sdk, @google/genai, at the exact versions in package-lock.json here),
# and prints the installed tree as the last line of stdout (everything else goes to stderr).
# check_sdks.mjs finds the SDKs when it is run from inside that tree (tests/e2e/sdk.rs copies
# it into a fresh folder there for each run).
#
# The tree is `$CARGO_TARGET_DIR/sdk-node/<hash>` (default: `target/sdk-node/<hash>` in the
# workspace root), the hash naming package.json, package-lock.json and this script. `npm ci`
# runs only when that tree is missing, so a warm run takes well under a second. Needs Node.js
# 20+ (what the pinned SDKs support) with npm 7+, and the npm registry on the first run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

# The oldest Node.js all three pinned SDKs support (their README and `engines`); raise it
# with them. `npm ci --engine-strict` below refuses a lockfile that needs more.
min_node=20

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in
/*) ;;
*) target="$root/$target" ;;
esac

fail() {
    echo "tests/sdk/node/setup.sh: $*" >&2
    exit 1
}

major() {
    local version="${1#v}"
    echo "${version%%.*}"
}

command -v node >/dev/null 2>&1 ||
    fail "'node' not found: the Node SDK tests need Node.js $min_node+ and npm (e.g. apt-get install nodejs npm; Debian 13 ships Node.js 20)"
node_version="$(node --version 2>/dev/null)" || fail "'node --version' failed"
node_major="$(major "$node_version")"
[[ "$node_major" =~ ^[0-9]+$ ]] && ((node_major >= min_node)) ||
    fail "Node.js $node_version ($(command -v node)) is too old: the pinned Node SDKs need Node.js $min_node+"
command -v npm >/dev/null 2>&1 ||
    fail "'npm' not found: the Node SDK tests need npm beside Node.js $node_version (e.g. apt-get install npm)"
npm_version="$(npm --version 2>/dev/null)" || fail "'npm --version' failed"
npm_major="$(major "$npm_version")"
[[ "$npm_major" =~ ^[0-9]+$ ]] && ((npm_major >= 7)) ||
    fail "npm $npm_version is too old: installing package-lock.json (lockfileVersion 3) needs npm 7+"

cache="$target/sdk-node"
mkdir -p "$cache"
# One setup at a time (parallel test processes, two workspaces sharing a target dir).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.lock"
    flock 9
fi

hash="$(cat "$here/package.json" "$here/package-lock.json" "$here/setup.sh" | sha256sum | cut -c1-16)"
tree="$cache/$hash"
stamp="$tree/.installed"

if [[ -f "$stamp" ]]; then
    echo "$tree"
    exit 0
fi

# Missing or half-built: install into a fresh folder, then move it into place whole.
partial="$tree.partial"
rm -rf "$tree" "$partial"
mkdir -p "$partial"
cp "$here/package.json" "$here/package-lock.json" "$partial/"
echo "tests/sdk/node/setup.sh: npm ci (node $node_version, npm $npm_version) into $tree" >&2
(
    cd "$partial"
    # No install scripts: the SDKs are plain JavaScript and need none.
    npm ci --ignore-scripts --engine-strict --no-audit --no-fund --no-update-notifier \
        --loglevel=error >&2
) || fail "npm ci in $partial failed (is the npm registry reachable?)"
(
    cd "$partial"
    node --input-type=module -e \
        "await Promise.all(['openai', '@anthropic-ai/sdk', '@google/genai'].map((m) => import(m)))" >&2
) || fail "the SDKs do not import after installing"
touch "$partial/.installed"
mv "$partial" "$tree"
echo "$tree"
