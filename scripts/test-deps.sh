#!/usr/bin/env bash
# Install what the test suite needs beyond Rust and the assets: ONNX Runtime (PyPI
# `onnxruntime`), which runs exported ONNX models in the export test; PEFT and gguf (PyPI),
# which load a fine-tuned decoder's adapter over transformers' GGUF model in the SFT test;
# headless Chromium (Debian's `chromium`), which renders report.html in the report test; and
# PostgreSQL's server and `openssl` (Debian), for the shared-study search tests.
# Idempotent.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import onnxruntime, numpy" >/dev/null 2>&1; then
  echo "installing onnxruntime (for the ONNX export test)" >&2
  "$PYTHON" -m pip install --quiet "onnxruntime>=1.17" numpy
fi
if ! "$PYTHON" -c "import peft, gguf" >/dev/null 2>&1; then
  echo "installing peft and gguf (for the decoder fine-tuning test's PEFT reference)" >&2
  "$PYTHON" -m pip install --quiet peft gguf
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_install() {
  $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null
  }
}
# The shared-study search tests (crates/tunekit-cli/tests/search_postgres.rs) start their own
# throw-away cluster with the server binaries of Debian's `postgresql` package, and its TLS
# test makes a throw-away CA with the `openssl` command.
if ! { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
    || ! command -v openssl >/dev/null 2>&1; then
  echo "installing postgresql and openssl (for the shared-study search tests)" >&2
  apt_install postgresql openssl
fi
if ! command -v chromium >/dev/null 2>&1 && [ -z "${TUNEKIT_CHROMIUM:-}" ]; then
  echo "installing chromium (for the report test)" >&2
  apt_install chromium
  command -v chromium >/dev/null
fi
