#!/usr/bin/env bash
# Voice-to-voice latency and barge-in, measured from outside the engine
# (examples/voice_latency.rs): a release engine runs the assistant on
# loopback; a separate client process places calls that ask recorded
# questions and timestamp the answers' first audio packets.
#
#   scripts/voice-latency.sh [CALL_COUNTS="1 24"] [RUNS_SINGLE=5]
#
# For each count, that many callers talk at once (staggered by 300 ms); the
# single-call case is repeated RUNS_SINGLE times for enough samples. Each
# caller asks three questions: the first after the greeting, the next two
# over the previous answer (barge-in). Prints p50/p95 per count. A holding
# phrase ("One moment, please.") is not the answer: its latency runs on to
# the answer after it, and the phrases heard are counted.
# The engine starts fresh each time, as a restart: the fixed answers' audio
# that earlier runs kept on disk (`[assistant] tts_store`, under the models
# cache) is read back at start-up, and the rest of the knowledge base is
# synthesised ahead of time. TTS_STORE=false measures a first start ever
# (nothing on disk; the first single call is then the cold case).
# Env: NO_BUILD=1 skips the release build; ENGINE_LOG=FILE keeps the engine's log;
# EACH=1 also prints every call's latencies in order; KNOWLEDGE_DIR (default
# knowledge) and GOVERNANCE_FILE (default governance/safeguarding.toml); SIP_PORT (5090), RTP_PORTS
# (31000-31999). Bounded: at most 64 calls, 120 s per call; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

counts=${1:-"1 24"}
runs_single=${2:-5}
sip_port=${SIP_PORT:-5090}
rtp_ports=${RTP_PORTS:-31000-31999}

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin frontdoor --example voice_latency >&2
fi
engine=target/release/frontdoor
client=target/release/examples/voice_latency

workdir=$(mktemp -d)
engine_pid=""
cleanup() {
    [[ -n "${ENGINE_LOG:-}" && -f "$workdir/engine.log" ]] && cp "$workdir/engine.log" "$ENGINE_LOG"
    [[ -n "$engine_pid" ]] && kill "$engine_pid" 2>/dev/null && wait "$engine_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

# A short greeting keeps each call short; the rest of the knowledge is as shipped.
mkdir -p "$workdir/knowledge" "$workdir/dialplans" "$workdir/data"
cp "${KNOWLEDGE_DIR:-knowledge}"/*.toml "$workdir/knowledge/"
sed -i 's/^greeting = .*/greeting = "Hello, you'"'"'re through to the city council. How can I help?"/' \
    "$workdir/knowledge/assistant.toml"
cat >"$workdir/config.toml" <<TOML
[assistant]
knowledge_dir = "$workdir/knowledge"
governance_file = "${GOVERNANCE_FILE:-$PWD/governance/safeguarding.toml}"
tts_store = ${TTS_STORE:-true}
[logging]
level = "info"
TOML
cat >"$workdir/dialplans/main.toml" <<'TOML'
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 60 } }]
TOML

questions=()
i=0
for text in "When is my bin collection day?" "How do I pay my council tax?" \
    "I want to report a pothole on my road."; do
    i=$((i + 1))
    "$engine" say "$text" -o "$workdir/q$i.wav" >/dev/null
    sox "$workdir/q$i.wav" -r 8000 -c 1 -t ul "$workdir/q$i.ul"
    questions+=(--question "$workdir/q$i.ul")
done

# The engine's holding phrase (src/call/assistant.rs HOLDING_PHRASE): a reply
# that starts like it is not counted as the answer.
"$engine" say "One moment, please." -o "$workdir/holding.wav" >/dev/null
sox "$workdir/holding.wav" -r 8000 -c 1 -t ul "$workdir/holding.ul"
questions+=(--holding "$workdir/holding.ul")

"$engine" serve --config "$workdir/config.toml" --sip "127.0.0.1:$sip_port" \
    --rtp-ports "$rtp_ports" --http 127.0.0.1:0 --data "$workdir/data" \
    --dialplans "$workdir/dialplans" >"$workdir/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 1 600); do
    grep -q 'frontdoor ready' "$workdir/engine.log" && break
    kill -0 "$engine_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'frontdoor ready' "$workdir/engine.log" || { cat "$workdir/engine.log" >&2; exit 1; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

for count in $counts; do
    if [[ "$count" == 1 ]]; then
        timeout 600 "$client" --target "127.0.0.1:$sip_port" --calls 1 \
            --repeat "$runs_single" ${EACH:+--each} "${questions[@]}"
    else
        timeout 300 "$client" --target "127.0.0.1:$sip_port" --calls "$count" ${EACH:+--each} "${questions[@]}"
    fi
done
echo "engine warnings: $(grep -c WARN "$workdir/engine.log" || true)"
