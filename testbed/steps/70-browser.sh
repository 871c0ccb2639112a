#!/bin/bash
# Step 70: the browser driver of the end-to-end tests: playwright-core from npm,
# pinned by tests/e2e/browser/package.json and package-lock.json, installed into
# /opt/sh-jupyter/browser (tests set NODE_PATH to its node_modules). It drives
# Debian's Chromium (step 10) through executablePath /usr/bin/chromium:
# playwright-core downloads no browser of its own (none could be fetched here).
# Fast when the pinned version is already there.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

readonly DEST=/opt/sh-jupyter/browser
readonly SRC="$TESTBED_REPO/tests/e2e/browser"

[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium missing (step 10 installs chromium)"
[[ -r "$SRC/package.json" && -r "$SRC/package-lock.json" ]] || die "$SRC/package.json or package-lock.json missing"
# The machine's own Node.js comes with npm; only a machine without one gets Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    need_pkgs nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: playwright-core needs 20 or newer"

want="$(node -p "require('$SRC/package.json').dependencies['playwright-core']")"
have="$(node -p "require('$DEST/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! cmp -s "$SRC/package-lock.json" "$DEST/package-lock.json"; then
    log "installing playwright-core $want into $DEST"
    ensure_dir "$DEST" 0755
    install -m 0644 "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
    (cd "$DEST" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
        || die "npm ci of playwright-core $want failed (is the npm registry reachable?)"
fi
chmod -R a+rX -- "$DEST"
# Debian's chromium wrapper prints a harmless shell warning on stderr.
log "playwright-core $want in $DEST; $(/usr/bin/chromium --version 2>/dev/null)"
