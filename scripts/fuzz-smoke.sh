#!/usr/bin/env bash
# Runs each cargo-fuzz target briefly (a smoke test, not a campaign) and fails
# on any crash. Works on stable Rust: cargo-fuzz needs nightly-only flags
# (-Zsanitizer, sancov), which RUSTC_BOOTSTRAP=1 unlocks on a stable toolchain.
#
#   scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS each (default 20)
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh sip_parse
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(sip_parse sdp_parse rtp_parse)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
triple="$(rustc -vV | sed -n 's/^host: //p')"
# The instrumented build takes ~8 minutes from scratch; keeping it outside the
# clone (like the models) lets CI on a fresh clone rebuild only what changed.
target_dir="${FRONTDOOR_FUZZ_TARGET_DIR:-${FRONTDOOR_CACHE:-$HOME/.cache/frontdoor}/fuzz-target}"
mkdir -p "$target_dir"
# Build everything first so the time box below is spent fuzzing, not compiling.
echo "fuzz-smoke: building ${targets[*]} (target dir $target_dir)"
# No sanitizer: the parsers are safe Rust (no `unsafe`), so AddressSanitizer
# would only slow the build and the runs; a panic, an overflow (debug
# assertions) or a timeout is what this smoke looks for.
for t in "${targets[@]}"; do
    cargo fuzz build -O -a -s none --target-dir "$target_dir" "$t"
done

failed=()
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    echo "fuzz-smoke: $target for ${seconds}s"
    # Seeds (committed) are read; new inputs go to corpus/ (ignored by git).
    # Run the binary built above directly: `cargo fuzz run` would rebuild
    # inside the time box whenever a source file changed since the build.
    binary="$target_dir/$triple/release/$target"
    if ! timeout --kill-after=30 $((seconds + 60)) \
        "$binary" "$corpus" "seeds/$target" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
        >"artifacts/$target/run.log" 2>&1; then
        failed+=("$target")
        echo "fuzz-smoke: $target FAILED; last lines of artifacts/$target/run.log:"
        tail -n 40 "artifacts/$target/run.log"
        ls -1 "artifacts/$target" | grep -v run.log | sed 's/^/  crash input: fuzz\/artifacts\/'"$target"'\//' || true
    else
        grep -E "^stat::number_of_executed_units|Done [0-9]+ runs" "artifacts/$target/run.log" \
            | sed "s/^/fuzz-smoke: $target: /" || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: crashes in ${failed[*]}"
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} passed, 0 failed"
