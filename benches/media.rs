//! Media hot paths: what one stream costs per 20 ms, excluding syscalls.
//!
//! `cargo bench --bench media` runs the criterion groups, then prints a streams-per-core
//! estimate from the combined receive + send cost (50 packets in and 50 out per second per
//! stream). Syscalls and wake-ups are not included here; `scripts/media-load.sh` measures the
//! whole thing over loopback, with the load generator in a separate process.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use frontdoor::media::g711;
use frontdoor::media::jitter::{JitterBuffer, JitterConfig, Playout};
use frontdoor::media::rtp::{RtpHeader, RtpPacket, write_packet};
use frontdoor::media::session::{RtpSession, SessionConfig};
use frontdoor::media::{Codec, Direction, FRAME_SAMPLES, Negotiated};

fn negotiated(direction: Direction) -> Negotiated {
    let remote: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
    Negotiated {
        remote_rtp: remote,
        remote_rtcp: "192.0.2.1:4001".parse().expect("addr"),
        codec: Codec::Pcmu,
        payload_type: 0,
        dtmf_payload_type: Some(101),
        ptime_ms: 20,
        direction,
        rtcp_mux: false,
        offered_streams: Vec::new(),
    }
}

/// 1024 consecutive packets, reused cyclically with rewritten sequence numbers.
struct PacketFactory {
    buffer: [u8; 172],
    sequence: u16,
}

impl PacketFactory {
    fn new() -> Self {
        PacketFactory {
            buffer: [0; 172],
            sequence: 0,
        }
    }

    fn next(&mut self) -> &[u8] {
        let payload = [g711::linear_to_ulaw(1234); FRAME_SAMPLES];
        let header = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: self.sequence,
            timestamp: (self.sequence as u32).wrapping_mul(160),
            ssrc: 0xFEED,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let length = write_packet(&header, &payload, &mut self.buffer).unwrap_or(0);
        &self.buffer[..length]
    }
}

fn receive_path(c: &mut Criterion) {
    // Parse + jitter push + pop + decode for one packet, the steady-state receive work.
    c.bench_function("rx: parse + jitter push/pop + decode", |b| {
        let mut factory = PacketFactory::new();
        let mut jitter = JitterBuffer::new(JitterConfig::default());
        let mut decoded = [0i16; FRAME_SAMPLES];
        let start = Instant::now();
        let mut tick = 0u64;
        b.iter(|| {
            let now = start + Duration::from_millis(tick * 20);
            tick += 1;
            let datagram = factory.next();
            if let Ok(packet) = RtpPacket::parse(black_box(datagram)) {
                jitter.push(
                    packet.ssrc,
                    packet.sequence,
                    packet.timestamp,
                    packet.payload_type,
                    packet.payload,
                    now,
                );
            }
            if let Playout::Frame { payload, .. } = jitter.pop_frame(now) {
                g711::decode_ulaw(payload, &mut decoded);
            }
            black_box(&decoded);
        });
    });
}

fn send_path(c: &mut Criterion) {
    c.bench_function(
        "tx: session tick with queued audio (encode + header)",
        |b| {
            let start = Instant::now();
            let mut session = RtpSession::new(
                negotiated(Direction::SendOnly),
                SessionConfig::default(),
                1,
                1,
                1,
                start,
            );
            let prompt: Arc<[i16]> = Arc::from(vec![1000i16; 8000 * 60]);
            let mut tick = 0u64;
            b.iter(|| {
                if !session.is_playing() {
                    session.play(Arc::clone(&prompt));
                }
                let now = start + Duration::from_millis(tick * 20);
                tick += 1;
                let output = session.on_tick(now);
                black_box(output.outgoing.map(<[u8]>::len));
            });
        },
    );
}

/// One stream's full 20 ms of work: one packet in, one tick (receive playout + send).
fn full_stream_tick(
    session: &mut RtpSession,
    factory: &mut PacketFactory,
    prompt: &Arc<[i16]>,
    now: Instant,
) {
    let from = SocketAddr::from(([192, 0, 2, 1], 4000));
    if !session.is_playing() {
        session.play(Arc::clone(prompt));
    }
    session.handle_packet(factory.next(), from, now);
    let output = session.on_tick(now);
    black_box((output.received.is_some(), output.outgoing.map(<[u8]>::len)));
}

fn session_path(c: &mut Criterion) {
    c.bench_function("session: packet in + tick (rx playout + tx)", |b| {
        let start = Instant::now();
        let mut session = RtpSession::new(
            negotiated(Direction::SendRecv),
            SessionConfig::default(),
            1,
            1,
            1,
            start,
        );
        let prompt: Arc<[i16]> = Arc::from(vec![1000i16; 8000 * 60]);
        let mut factory = PacketFactory::new();
        let mut tick = 0u64;
        b.iter(|| {
            let now = start + Duration::from_millis(tick * 20);
            tick += 1;
            full_stream_tick(&mut session, &mut factory, &prompt, now);
        });
    });
}

criterion_group!(benches, receive_path, send_path, session_path);

/// Straight timing of the full per-stream tick to print a capacity estimate.
fn streams_per_core_estimate() {
    let start = Instant::now();
    let mut session = RtpSession::new(
        negotiated(Direction::SendRecv),
        SessionConfig::default(),
        1,
        1,
        1,
        start,
    );
    let prompt: Arc<[i16]> = Arc::from(vec![1000i16; 8000 * 60]);
    let mut factory = PacketFactory::new();
    let iterations = 500_000u64;
    let measured = Instant::now();
    for tick in 0..iterations {
        full_stream_tick(
            &mut session,
            &mut factory,
            &prompt,
            start + Duration::from_millis(tick * 20),
        );
    }
    let per_tick_ns = measured.elapsed().as_nanos() as f64 / iterations as f64;
    let ticks_per_second = 50.0;
    let streams_per_core = 1e9 / (per_tick_ns * ticks_per_second);
    println!(
        "\nmedia estimate: {per_tick_ns:.0} ns per stream per 20 ms (1 packet in + 1 out), \
         {streams_per_core:.0} streams per core for the protocol work alone \
         (target 2500; syscalls and wake-ups come on top, see scripts/media-load.sh)"
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    streams_per_core_estimate();
}
