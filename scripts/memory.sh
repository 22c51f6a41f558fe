#!/usr/bin/env bash
# Resident memory of the engine with every model loaded, measured from
# outside: a release engine with the default config.toml and the default
# dialplans (so the assistant and all its models load), read idle, after one
# call, then while CALLS callers talk to the assistant at once
# (examples/voice_latency.rs: recorded questions over RTP, barge-in
# included), then idle again.
#
#   scripts/memory.sh [CALLS=4]
#
# Prints VmRSS / Pss / anonymous / file-backed memory (MB) for each phase,
# the peak sampled during the calls and the cost per call. DETAIL=1 adds the
# largest mappings (from /proc/PID/smaps) after start-up.
# Env: NO_BUILD=1 skips the release build; ENGINE_LOG=FILE keeps the engine's
# log; SIP_PORT (5092), RTP_PORTS (32000-32999). Loopback only; bounded by
# the client's own limits (64 calls, 120 s per call).
set -euo pipefail
cd "$(dirname "$0")/.."

calls=${1:-4}
sip_port=${SIP_PORT:-5092}
rtp_ports=${RTP_PORTS:-32000-32999}

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin frontdoor --example voice_latency >&2
fi
engine=target/release/frontdoor
client=target/release/examples/voice_latency

workdir=$(mktemp -d)
engine_pid=""
sampler_pid=""
cleanup() {
    [[ -n "${ENGINE_LOG:-}" && -f "$workdir/engine.log" ]] && cp "$workdir/engine.log" "$ENGINE_LOG"
    [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null || true
    [[ -n "$engine_pid" ]] && kill "$engine_pid" 2>/dev/null && wait "$engine_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

# One line of kB figures: VmRSS Pss Anonymous Rss-minus-anonymous VmHWM.
read_memory() {
    local pid=$1
    awk '/^VmRSS:/ {rss=$2} /^VmHWM:/ {hwm=$2} END {printf "%d %d ", rss, hwm}' "/proc/$pid/status"
    awk '/^Pss:/ {pss=$2} /^Anonymous:/ {anon=$2} /^Rss:/ {rss=$2}
         END {printf "%d %d %d\n", pss, anon, rss - anon}' "/proc/$pid/smaps_rollup"
}
# "label rss hwm pss anon file" in MB.
report() {
    local label=$1 rss=$2 hwm=$3 pss=$4 anon=$5 file=$6
    printf '%-22s VmRSS %4d MB  Pss %4d MB  anon %4d MB  file %4d MB  (VmHWM %4d MB)\n' \
        "$label" $((rss / 1024)) $((pss / 1024)) $((anon / 1024)) $((file / 1024)) $((hwm / 1024))
}

# Questions spoken by Frontdoor's own voice, as in voice-latency.sh.
questions=()
i=0
for text in "When is my bin collection day?" "How do I pay my council tax?" \
    "I want to report a pothole on my road."; do
    i=$((i + 1))
    "$engine" say "$text" -o "$workdir/q$i.wav" >/dev/null
    sox "$workdir/q$i.wav" -r 8000 -c 1 -t ul "$workdir/q$i.ul"
    questions+=(--question "$workdir/q$i.ul")
done

# The shipped config.toml and dialplans; only the listeners and the data
# directory move, so that a running engine or other jobs are not disturbed.
mkdir -p "$workdir/data"
FRONTDOOR_ADMIN_PASSWORD=${FRONTDOOR_ADMIN_PASSWORD:-memory-measurement-only} \
    "$engine" serve --config config.toml --sip "127.0.0.1:$sip_port" \
    --rtp-ports "$rtp_ports" --http 127.0.0.1:0 --data "$workdir/data" \
    --dialplans dialplans >"$workdir/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 1 900); do
    grep -q 'frontdoor ready' "$workdir/engine.log" && break
    kill -0 "$engine_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'frontdoor ready' "$workdir/engine.log" || { cat "$workdir/engine.log" >&2; exit 1; }
grep -q 'assistant ready' "$workdir/engine.log" || {
    echo "the assistant did not load: not every model is resident" >&2
    exit 1
}
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); engine env MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset}"
# Let start-up's transient buffers go back before the idle reading.
sleep 3
read -r rss hwm pss anon file < <(read_memory "$engine_pid")
report "idle, models loaded" "$rss" "$hwm" "$pss" "$anon" "$file"

if [[ -n "${DETAIL:-}" ]]; then
    echo "largest mappings after start-up (Rss kB, Anonymous kB, mapping):"
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)}
         /^Rss:/ {rss[name] += $2} /^Anonymous:/ {anon[name] += $2}
         END {for (n in rss) if (rss[n] >= 1024) printf "%8d %8d  %s\n", rss[n], anon[n], n}' \
        "/proc/$engine_pid/smaps" | sort -rn | head -15
    echo "threads: $(ls "/proc/$engine_pid/task" | wc -l)"
fi

# One call first: it touches the recogniser's and the voice's working
# buffers, which stay with the engine, not with the calls that follow.
timeout 300 "$client" --target "127.0.0.1:$sip_port" --calls 1 "${questions[@]}" >/dev/null || true
sleep 3
read -r rss hwm pss anon file < <(read_memory "$engine_pid")
report "idle after one call" "$rss" "$hwm" "$pss" "$anon" "$file"
warm_rss=$rss

# Sample every 200 ms while the callers talk; keep the peak.
(
    while kill -0 "$engine_pid" 2>/dev/null; do
        read_memory "$engine_pid" || true
        sleep 0.2
    done
) >"$workdir/samples" &
sampler_pid=$!
timeout 300 "$client" --target "127.0.0.1:$sip_port" --calls "$calls" "${questions[@]}" || true
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
read -r rss hwm pss anon file < <(sort -n "$workdir/samples" | tail -1)
report "peak during $calls calls" "$rss" "$hwm" "$pss" "$anon" "$file"
peak_rss=$rss
sleep 3
read -r rss hwm pss anon file < <(read_memory "$engine_pid")
report "idle after calls" "$rss" "$hwm" "$pss" "$anon" "$file"
printf 'per call (peak during calls - idle after one call) / %d: %d MB\n' "$calls" \
    $(((peak_rss - warm_rss) / 1024 / calls))
echo "engine warnings: $(grep -c WARN "$workdir/engine.log" || true)"
