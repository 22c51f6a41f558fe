#!/usr/bin/env bash
# Loopback media capacity test: the engine (examples/media_load.rs --engine) and the load
# generator (--generator) run as separate processes, each pinned to its own core, so the
# engine's getrusage CPU is the media layer's alone.
#
#   scripts/media-load.sh [STREAMS=1000] [SECONDS=10] [RUNS=3]
#
# Env: ENGINE_CORE (0), GENERATOR_CORE (1), WORKERS (1 = current-thread runtime),
#      NO_BUILD=1 to skip the release build, ENGINE_BINARY to measure another build's engine
#      (e.g. a saved copy of the previous design) against this build's generator.
#      RT_PRIORITY=N runs both processes under SCHED_FIFO priority N (needs root or
#      CAP_SYS_NICE): on a shared host the engine then runs whenever it is runnable, so
#      other processes' load changes its figures less (it still shares caches). Unset: the
#      normal scheduler, as in production.
# Prints every run's figures, then the best and the median run by CPU per stream.
# Bounded: at most 5000 streams, 120 s per run, 10 runs; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

streams=${1:-1000}
seconds=${2:-10}
runs=${3:-3}
engine_core=${ENGINE_CORE:-0}
generator_core=${GENERATOR_CORE:-1}
workers=${WORKERS:-1}
rt_priority=${RT_PRIORITY:-}
(( streams >= 1 && streams <= 5000 )) || { echo "streams must be 1..5000" >&2; exit 2; }
(( seconds >= 1 && seconds <= 120 )) || { echo "seconds must be 1..120" >&2; exit 2; }
(( runs >= 1 && runs <= 10 )) || { echo "runs must be 1..10" >&2; exit 2; }
scheduler=()
if [[ -n "$rt_priority" ]]; then
    (( rt_priority >= 1 && rt_priority <= 99 )) || { echo "RT_PRIORITY must be 1..99" >&2; exit 2; }
    scheduler=(chrt -f "$rt_priority")
fi

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --example media_load >&2
fi
binary=target/release/examples/media_load
engine_binary=${ENGINE_BINARY:-$binary}
# Each stream holds two UDP sockets per side.
ulimit -n "$(( streams * 3 + 256 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

workdir=$(mktemp -d)
engine_pid=""
generator_pid=""
cleanup() {
    [[ -n "$generator_pid" ]] && kill "$generator_pid" 2>/dev/null || true
    [[ -n "$engine_pid" ]] && kill "$engine_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

results=()
for run in $(seq 1 "$runs"); do
    log="$workdir/engine-$run.log"
    timeout $(( seconds + 90 )) taskset -c "$engine_core" "${scheduler[@]}" "$engine_binary" --engine "$streams" \
        --seconds "$seconds" --workers "$workers" >"$log" 2>&1 &
    engine_pid=$!
    for _ in $(seq 1 600); do
        grep -q '^READY' "$log" && break
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^READY' "$log" || { cat "$log" >&2; echo "engine did not start" >&2; exit 1; }
    # Long enough to cover the engine's warm-up, measurement and margin.
    timeout $(( seconds + 60 )) taskset -c "$generator_core" "${scheduler[@]}" "$binary" --generator "$streams" \
        --seconds "$(( seconds + 4 ))" >"$workdir/generator-$run.log" 2>&1 &
    generator_pid=$!
    wait "$engine_pid" || { cat "$log" >&2; echo "engine failed" >&2; exit 1; }
    engine_pid=""
    wait "$generator_pid" || true
    generator_pid=""
    echo "--- run $run/$runs (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    grep -v '^READY' "$log"
    cat "$workdir/generator-$run.log"
    results+=("$(grep '^RESULT' "$log")")
done

echo "=== $streams streams, $seconds s, $runs runs, engine on core $engine_core, $workers worker(s)${rt_priority:+, SCHED_FIFO $rt_priority}"
printf '%s\n' "${results[@]}" | awk '
    {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[NR, kv[1]] = kv[2] }
        cpu[NR] = v[NR, "cpu_us_per_stream_s"]; order[NR] = NR
    }
    END {
        n = NR
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (cpu[order[j]] < cpu[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
        best = order[1]; median = order[int((n + 1) / 2)]
        fmt = "%-6s cpu %7.2f us/stream-s  %6d streams/core  late %.4f%%  idle %.2f KiB/stream  (waited for core %s%%)\n"
        printf fmt, "best", v[best, "cpu_us_per_stream_s"], v[best, "streams_per_core"], v[best, "late_pct"], v[best, "idle_kib_per_stream"], v[best, "cpu_wait_pct"]
        printf fmt, "median", v[median, "cpu_us_per_stream_s"], v[median, "streams_per_core"], v[median, "late_pct"], v[median, "idle_kib_per_stream"], v[median, "cpu_wait_pct"]
    }'
