#!/usr/bin/env bash
# Install what the test suite needs beyond Rust and the assets: headless Chromium (Debian's
# `chromium`), which renders report.html in the report test. Idempotent: a no-op when present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${TUNEKIT_CHROMIUM:-}" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing chromium (for the report test)" >&2
$SUDO apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null
}
command -v chromium >/dev/null
