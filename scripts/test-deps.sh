#!/usr/bin/env bash
# Install what the test suite needs beyond Rust and the assets: ONNX Runtime (PyPI
# `onnxruntime`), which runs exported ONNX models in the export test; PEFT and gguf (PyPI),
# which load a fine-tuned decoder's adapter over transformers' GGUF model in the SFT test;
# and headless Chromium (Debian's `chromium`), which renders report.html in the report test.
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
