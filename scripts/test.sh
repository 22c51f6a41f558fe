#!/usr/bin/env bash
# Sets up everything the tests need (apt packages, test audio) and runs the
# whole suite: unit tests, real-peer telephony tests (SIPp, baresip), lints
# and a short fuzzing pass over the SIP, SDP and RTP parsers.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
scripts/test-deps.sh

step "speech and language models (cached in ~/.cache/frontdoor)"
cargo build --locked --bin frontdoor
target/debug/frontdoor models fetch

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "tests"
cargo test --locked --all-targets --no-fail-fast

if [ "${FRONTDOOR_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz smoke (SIP, SDP, RTP parsers)"
  scripts/fuzz-smoke.sh
fi
step "all tests passed"
