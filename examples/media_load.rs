//! Loopback load test for the media layer.
//!
//! Starts N `MediaStream`s on 127.0.0.1 and N sender sockets that pace G.711 packets at 20 ms
//! towards them for T seconds, while every stream also sends (comfort silence) back. Reports
//! CPU time per stream (getrusage, which includes the senders, so it overstates the media
//! cost), late ticks and resident memory per idle stream.
//!
//! ```text
//! cargo run --release --example media_load -- [streams=200] [seconds=10] [first_port=30000]
//! ```
//! Bounded: at most 5000 streams and 120 seconds, loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use frontdoor::media::g711;
use frontdoor::media::rtp::{RtpHeader, write_packet};
use frontdoor::media::{
    Codec, Direction, FRAME_DURATION, FRAME_SAMPLES, MediaConfig, MediaEvent, MediaStream,
    Negotiated, PortAllocator,
};
use tokio::net::UdpSocket;

const MAX_STREAMS: usize = 5000;
const MAX_SECONDS: u64 = 120;

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if result != 0 {
        return Duration::ZERO;
    }
    let to_duration =
        |tv: libc::timeval| Duration::new(tv.tv_sec as u64, (tv.tv_usec as u32) * 1000);
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

fn argument(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let streams = (argument(1, 200) as usize).clamp(1, MAX_STREAMS);
    let seconds = argument(2, 10).clamp(1, MAX_SECONDS);
    let first_port = argument(3, 30000).clamp(1024, 60000) as u16;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let last_port = first_port.saturating_add((streams * 2 + 200).min(60000) as u16);
    let allocator = PortAllocator::new(first_port, last_port);

    let rss_before = resident_kib();
    let mut senders = Vec::with_capacity(streams);
    let mut handles = Vec::with_capacity(streams);
    let audio_frames = Arc::new(AtomicU64::new(0));
    for _ in 0..streams {
        let sender = UdpSocket::bind(SocketAddr::new(loopback, 0)).await?;
        let sender_addr = sender.local_addr()?;
        let stream = loop {
            let Some(lease) = allocator.allocate() else {
                eprintln!("port range {first_port}-{last_port} exhausted");
                return Ok(());
            };
            if let Ok(stream) = MediaStream::bind(loopback, lease, MediaConfig::default()).await {
                break stream;
            }
        };
        let target = SocketAddr::new(loopback, stream.local_rtp_port());
        let negotiated = Negotiated {
            remote_rtp: sender_addr,
            remote_rtcp: SocketAddr::new(loopback, sender_addr.port().wrapping_add(1)),
            codec: Codec::Pcmu,
            payload_type: 0,
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            offered_streams: Vec::new(),
        };
        let (handle, mut events) = stream.start(negotiated, None);
        let counter = Arc::clone(&audio_frames);
        // Stands in for the call task: consumes events as the engine would.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if matches!(event, MediaEvent::Audio(_)) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        handles.push(handle);
        senders.push((sender, target));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = resident_kib();

    // One pacing task sends every stream's packet each tick and drains what comes back.
    let cpu_start = cpu_time();
    let wall_start = Instant::now();
    let ticks = seconds * 50;
    let payload = [g711::linear_to_ulaw(2000); FRAME_SAMPLES];
    let mut packet = [0u8; 172];
    let mut drain = [0u8; 1500];
    let mut interval = tokio::time::interval(FRAME_DURATION);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for tick in 0..ticks {
        interval.tick().await;
        for (index, (socket, target)) in senders.iter().enumerate() {
            let header = RtpHeader {
                marker: tick == 0,
                payload_type: 0,
                sequence: tick as u16,
                timestamp: (tick as u32).wrapping_mul(160),
                ssrc: index as u32 + 1,
            };
            if let Some(length) = write_packet(&header, &payload, &mut packet) {
                let _ = socket.try_send_to(&packet[..length], *target);
            }
            while socket.try_recv_from(&mut drain).is_ok() {}
        }
    }
    let wall = wall_start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);

    let mut late_ticks = 0;
    let mut received = 0;
    let mut sent = 0;
    let mut lost = 0i64;
    for handle in &handles {
        let stats = handle.stop().await;
        late_ticks += stats.late_ticks;
        received += stats.packets_received;
        sent += stats.packets_sent;
        lost += stats.packets_lost;
    }

    let cpu_per_stream_ms = cpu.as_secs_f64() * 1000.0 / streams as f64 / wall.as_secs_f64();
    let streams_per_core = if cpu.is_zero() {
        f64::INFINITY
    } else {
        streams as f64 * wall.as_secs_f64() / cpu.as_secs_f64()
    };
    println!("streams: {streams}, duration: {:.1} s", wall.as_secs_f64());
    println!(
        "cpu: {:.2} s total, {cpu_per_stream_ms:.3} ms per stream per second (senders included)",
        cpu.as_secs_f64()
    );
    println!("=> about {streams_per_core:.0} streams per core at this load");
    println!(
        "packets: {received} received, {sent} sent, {lost} lost; audio events: {}",
        audio_frames.load(Ordering::Relaxed)
    );
    println!(
        "late ticks: {late_ticks} ({:.3}% of stream ticks)",
        100.0 * late_ticks as f64 / (streams as f64 * ticks as f64)
    );
    println!(
        "memory: {} KiB RSS before, {} KiB with {streams} idle streams => {:.1} KiB per stream",
        rss_before,
        rss_idle,
        rss_idle.saturating_sub(rss_before) as f64 / streams as f64
    );
    Ok(())
}
