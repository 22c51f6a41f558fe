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
#      SINK=dummy or SINK=ifb (needs root): the engine's outgoing RTP/RTCP leaves through a
#      drop-only network interface instead of loopback. On loopback the kernel charges the
#      generator's receive (softirq, socket queueing) to the engine's sendto; a real NIC
#      would not. The script creates interface fdbench0 of that kind (dummy: the kernel's
#      dummy driver; ifb: the intermediate functional block driver, whose transmit drops
#      any packet tc did not redirect to it; both are NOARP), no queueing discipline
#      (noqueue, as a dummy has), IPv6 off (no stray autoconfiguration packets), address
#      198.18.0.1/15 (RFC 2544 benchmarking range). The engine listens on 198.18.0.1 (still
#      delivered over loopback: its receive cost stays counted); the generator sends from
#      198.18.0.2 (IP_TRANSPARENT), so the engine's replies (symmetric RTP) go to 198.18.0.2
#      through the IP stack and the interface's transmit, which drops them. The generator
#      cannot count those packets; the engine reports RTP sent per stream tick, late ticks
#      and the interface's own packet counter over the window (sink_pct: 100% = every packet
#      the engine counted as sent reached the interface). The interface is removed on exit
#      (and a stale one from an interrupted run is replaced); the script refuses if it
#      cannot create it or the 198.18.0.0/15 range is already routed here.
# Prints every run's figures, then the best and the median run by CPU per stream.
# Bounded: at most 5000 streams, 120 s per run, 10 runs.
set -euo pipefail
cd "$(dirname "$0")/.."

streams=${1:-1000}
seconds=${2:-10}
runs=${3:-3}
engine_core=${ENGINE_CORE:-0}
generator_core=${GENERATOR_CORE:-1}
workers=${WORKERS:-1}
rt_priority=${RT_PRIORITY:-}
sink=${SINK:-}
(( streams >= 1 && streams <= 5000 )) || { echo "streams must be 1..5000" >&2; exit 2; }
(( seconds >= 1 && seconds <= 120 )) || { echo "seconds must be 1..120" >&2; exit 2; }
(( runs >= 1 && runs <= 10 )) || { echo "runs must be 1..10" >&2; exit 2; }
scheduler=()
if [[ -n "$rt_priority" ]]; then
    (( rt_priority >= 1 && rt_priority <= 99 )) || { echo "RT_PRIORITY must be 1..99" >&2; exit 2; }
    scheduler=(chrt -f "$rt_priority")
fi

sink_interface=fdbench0
sink_created=""
path_arguments=()
case "$sink" in
    "") ;;
    dummy | ifb)
        [[ $EUID -eq 0 ]] || { echo "SINK=$sink needs root (creates a network interface)" >&2; exit 2; }
        command -v ip >/dev/null || { echo "SINK=$sink needs iproute2 (ip)" >&2; exit 2; }
        ;;
    *) echo "SINK must be dummy or ifb (unset: loopback)" >&2; exit 2 ;;
esac

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
    [[ -n "$sink_created" ]] && ip link del "$sink_interface" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "$sink" ]]; then
    # A leftover from an interrupted run is ours (fixed name): replace it.
    ip link del "$sink_interface" 2>/dev/null || true
    if [[ -n "$(ip -4 route show to match 198.18.0.1 | grep -v '^default')" ]]; then
        echo "SINK: 198.18.0.0/15 is already routed on this host; refusing to shadow it:" >&2
        ip -4 route show to match 198.18.0.1 >&2
        exit 1
    fi
    if ! error=$(ip link add "$sink_interface" type "$sink" 2>&1); then
        echo "SINK=$sink: cannot create a $sink interface here: $error" >&2
        [[ "$sink" == dummy ]] && echo "(this kernel may lack the dummy driver; SINK=ifb drops in the driver the same way)" >&2
        exit 1
    fi
    sink_created=1
    sysctl -qw "net.ipv6.conf.$sink_interface.disable_ipv6=1" 2>/dev/null || true
    ip addr add 198.18.0.1/15 dev "$sink_interface"
    ip link set "$sink_interface" up
    # A dummy has no queue; give ifb none either so both drop straight from dev_queue_xmit.
    tc qdisc replace dev "$sink_interface" root noqueue 2>/dev/null \
        || echo "SINK: could not set noqueue on $sink_interface; keeping $(tc qdisc show dev "$sink_interface" 2>/dev/null | head -1)" >&2
    path_arguments=(--engine-address 198.18.0.1 --caller-address 198.18.0.2 --sink-interface "$sink_interface")
fi
path_label="loopback (the engine's sends also pay the generator's receive)"
[[ -n "$sink" ]] && path_label="SINK=$sink: engine RTP leaves via $sink_interface and is dropped there, not counted by the generator"

results=()
for run in $(seq 1 "$runs"); do
    log="$workdir/engine-$run.log"
    timeout $(( seconds + 90 )) taskset -c "$engine_core" "${scheduler[@]}" "$engine_binary" --engine "$streams" \
        --seconds "$seconds" --workers "$workers" "${path_arguments[@]}" >"$log" 2>&1 &
    engine_pid=$!
    for _ in $(seq 1 600); do
        grep -q '^READY' "$log" && break
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^READY' "$log" || { cat "$log" >&2; echo "engine did not start" >&2; exit 1; }
    # Long enough to cover the engine's warm-up, measurement and margin.
    timeout $(( seconds + 60 )) taskset -c "$generator_core" "${scheduler[@]}" "$binary" --generator "$streams" \
        --seconds "$(( seconds + 4 ))" "${path_arguments[@]}" >"$workdir/generator-$run.log" 2>&1 &
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
echo "=== path: $path_label"
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
        fmt = "%-6s cpu %7.2f us/stream-s  %6d streams/core  late %.4f%%  idle %.2f KiB/stream  sent/tick %s%%  sink %s  (waited for core %s%%)\n"
        for (k = 1; k <= 2; k++) {
            r = (k == 1) ? best : median
            sinkpct = (v[r, "sink_pct"] < 0) ? "n/a" : v[r, "sink_pct"] "%"
            printf fmt, (k == 1) ? "best" : "median", v[r, "cpu_us_per_stream_s"], v[r, "streams_per_core"], v[r, "late_pct"], v[r, "idle_kib_per_stream"], v[r, "sent_per_tick_pct"], sinkpct, v[r, "cpu_wait_pct"]
        }
    }'
