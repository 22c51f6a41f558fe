#!/usr/bin/env bash
# Call setup rate, signalling only (INVITE/200/ACK/BYE over loopback UDP).
#
#   scripts/sipp-load.sh                      # starts a release engine itself, 500 cps, 20000 calls
#   scripts/sipp-load.sh 127.0.0.1:5060       # against an engine already running
#   RATE=1000 CALLS=30000 scripts/sipp-load.sh
#
# Env: RATE (calls/s, default 500), CALLS (default 20000), LIMIT (max calls in
# flight, default 2000), SERVICE (dialled number, default 3000), MAX_SECS
# (hard time limit, default CALLS/RATE*3+60), ENGINE_CPUS (taskset list for
# the engine it starts, e.g. 0 to pin it to one core), FRONTDOOR_BIN (engine
# binary to start instead of building target/release/frontdoor).
# Prints attempted/successful/failed calls, the achieved rate and setup times;
# exits non-zero if any call failed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
RATE="${RATE:-500}"
CALLS="${CALLS:-20000}"
LIMIT="${LIMIT:-2000}"
SERVICE="${SERVICE:-3000}"
MAX_SECS="${MAX_SECS:-$((CALLS / RATE * 3 + 60))}"
target="${1:-}"

command -v sipp >/dev/null || { echo "sipp-load: sipp missing; run scripts/test-deps.sh" >&2; exit 1; }

work="$(mktemp -d)"
engine_pid=""
cleanup() {
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -TERM "$engine_pid" 2>/dev/null || true
        wait "$engine_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$target" ]; then
    bin="${FRONTDOOR_BIN:-$root/target/release/frontdoor}"
    if [ -z "${FRONTDOOR_BIN:-}" ] && { [ ! -x "$bin" ] || [ -n "${REBUILD:-}" ]; }; then
        echo "sipp-load: building release engine"
        (cd "$root" && cargo build --release --bin frontdoor)
    fi
    port=$((30000 + RANDOM % 20000))
    mkdir -p "$work/data" "$work/dialplans"
    printf '[limits]\nmax_calls = %d\n' "$((LIMIT * 2))" >"$work/config.toml"
    cat >"$work/dialplans/load.toml" <<'TOML'
[[route]]
name = "load"
match.number = "*"
actions = [ { pause = { secs = 30 } } ]
TOML
    pin=()
    [ -n "${ENGINE_CPUS:-}" ] && pin=(taskset -c "$ENGINE_CPUS")
    RUST_LOG="${RUST_LOG:-warn,frontdoor::engine=info,frontdoor::engine::call_task=warn}" "${pin[@]}" "$bin" serve --config "$work/config.toml" \
        --sip "127.0.0.1:$port" --rtp-ports 40000-59999 --http "127.0.0.1:$((port + 1))" \
        --data "$work/data" --dialplans "$work/dialplans" 2>"$work/engine.log" &
    engine_pid=$!
    for _ in $(seq 1 100); do
        grep -q "frontdoor ready" "$work/engine.log" 2>/dev/null && break
        kill -0 "$engine_pid" 2>/dev/null || { cat "$work/engine.log"; exit 1; }
        sleep 0.1
    done
    grep -q "frontdoor ready" "$work/engine.log" || { echo "sipp-load: engine not ready"; cat "$work/engine.log"; exit 1; }
    target="127.0.0.1:$port"
    echo "sipp-load: started engine pid $engine_pid on $target${ENGINE_CPUS:+ (cpus $ENGINE_CPUS)}"
fi

case "$target" in
    127.*|localhost:*) ;;
    *) echo "sipp-load: refusing non-loopback target $target (load tests stay on this machine)" >&2; exit 2 ;;
esac

echo "sipp-load: $CALLS calls at $RATE cps (at most $LIMIT in flight, ${MAX_SECS}s limit) -> $target"
start_ns=$(date +%s%N)
set +e
(cd "$work" && timeout --kill-after=10 "$MAX_SECS" sipp -sf "$root/tests/sipp/load_uac.xml" \
    -s "$SERVICE" -i 127.0.0.1 -mi 127.0.0.1 -p 0 -t u1 \
    -r "$RATE" -m "$CALLS" -l "$LIMIT" -max_recv_loops 10000 -max_sched_loops 10000 \
    -timeout "${MAX_SECS}s" -nostdin -trace_screen -trace_err \
    "$target" >/dev/null 2>&1)
rc=$?
set -e
end_ns=$(date +%s%N)
elapsed=$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')

screen="$(ls "$work"/load_uac_*_screen.log 2>/dev/null | head -n1 || true)"
if [ -z "$screen" ]; then
    echo "sipp-load: no SIPp screen dump (sipp exit $rc)"
    exit 1
fi
# The final screen: cumulative column is the last number on each line.
count() { { grep -E "^ *$1" "$screen" || true; } | tail -n1 | awk '{print $NF}'; }
ok=$(count "Successful call"); ok=${ok:-0}
failed=$(count "Failed call"); failed=${failed:-0}
created=$(count "Outgoing call created"); created=${created:-$((ok + failed))}
rate=$(awk -v n="$ok" -v t="$elapsed" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')
echo "sipp-load: calls attempted $created, successful $ok, failed $failed in ${elapsed}s (sipp exit $rc)"
echo "sipp-load: achieved rate $rate calls/s (requested $RATE)"
grep -E "Response Time|[0-9]+ ms <= n|n < [0-9]+ ms|n >= " "$screen" | tail -n 12 | sed 's/^/sipp-load:   /' || true
if [ -n "$engine_pid" ]; then
    cpu=$(ps -o times= -p "$engine_pid" 2>/dev/null | tr -d ' ' || echo "?")
    echo "sipp-load: engine CPU time ${cpu}s over ${elapsed}s"
fi
if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$ok" -lt "$CALLS" ]; then
    tail -n 20 "$work"/load_uac_*_errors.log 2>/dev/null | sed 's/^/sipp-load: err: /' || true
    exit 1
fi
