#!/usr/bin/env bash
# Browser tests of the web cabinet: builds the qorgan binary, installs playwright-core from the
# lock file (no browser download: Debian's chromium is used), runs the tests with node --test.
# Needs: apt-get install -y chromium (/usr/bin/chromium, or set CHROMIUM), node >= 20, npm.
# Screenshots land in tests/web/screenshots/ (gitignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ -z "${QORGAN_BIN:-}" ]; then
  (cd "$repo" && cargo build -p qorgan-control --bin qorgan)
  export QORGAN_BIN="$repo/target/debug/qorgan"
fi
chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "tests/web: Chromium not found at $chromium_bin; install it with: apt-get install -y chromium" >&2
  exit 1
fi
export CHROMIUM="$chromium_bin"

cd "$here"
if [ ! -f node_modules/playwright-core/package.json ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
rm -rf screenshots
exec node --test --test-concurrency=1 --test-reporter=spec units.test.mjs cabinet.test.mjs
