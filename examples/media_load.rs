//! Loopback load test for the media layer, with the load generator in a separate process so
//! the engine's CPU figure is the media layer's own.
//!
//! ```text
//! # the engine side: N streams, reports its own CPU (getrusage), late ticks and RSS
//! cargo run --release --example media_load -- --engine 1000 --seconds 10
//! # the peer side, in another process: N paced G.711 senders that also drain what comes back
//! cargo run --release --example media_load -- --generator 1000 --seconds 14
//! ```
//!
//! `scripts/media-load.sh` runs both, each pinned to its own core, and repeats the run.
//! Ports are deterministic so neither side needs to tell the other anything: engine stream
//! `i` listens on `engine_port + 2i` and expects its caller on `generator_port + 2i`.
//! Ports default to 20000.. (engine) and 10000.. (generator): below the ephemeral range and
//! clear of the ranges the unit tests use. Bounded: at most 5000 streams and 120 seconds,
//! loopback only.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use frontdoor::media::g711;
use frontdoor::media::rtp::{RtpHeader, write_packet};
use frontdoor::media::{
    Codec, Direction, FRAME_DURATION, FRAME_SAMPLES, MediaConfig, MediaEvent, MediaHandle,
    MediaStream, Negotiated, PortAllocator,
};

const MAX_STREAMS: usize = 5000;
const MAX_SECONDS: u64 = 120;
/// The generator spreads its sends over this many groups per 20 ms, as real callers'
/// packets arrive spread over the frame rather than in one synchronised burst.
const SEND_GROUPS: u32 = 4;

#[derive(Parser, Debug)]
#[command(about = "Loopback media load test (engine and generator are separate processes)")]
struct Arguments {
    /// Run N media streams and report this process's own CPU, late ticks and memory.
    #[arg(long, value_name = "N", conflicts_with = "generator")]
    engine: Option<usize>,
    /// Run the peer side for N streams: paced G.711 senders that drain the engine's packets.
    #[arg(long, value_name = "N")]
    generator: Option<usize>,
    /// Engine: measured seconds (after traffic starts and 1 s of warm-up). Generator: seconds
    /// to send for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 20000)]
    engine_port: u16,
    #[arg(long, default_value_t = 10000)]
    generator_port: u16,
    /// Engine runtime worker threads; 1 means a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

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

/// Nanoseconds the main thread has spent waiting on a run queue (runnable, but another
/// process had the core): on a shared machine this is what makes ticks late, not our work.
fn run_queue_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().nth(1)?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or(Duration::ZERO)
}

fn main() -> std::io::Result<()> {
    let arguments = Arguments::parse();
    let seconds = arguments.seconds.clamp(1, MAX_SECONDS);
    let last_port_needed = |first: u16, streams: usize| first as usize + 2 * streams + 1;
    match (arguments.engine, arguments.generator) {
        (Some(streams), None) => {
            let streams = streams.clamp(1, MAX_STREAMS);
            if last_port_needed(arguments.engine_port, streams) > u16::MAX as usize {
                return Err(std::io::Error::other("engine port range too high"));
            }
            let mut builder = if arguments.workers <= 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(arguments.workers);
                builder
            };
            let runtime = builder.enable_all().build()?;
            runtime.block_on(run_engine(streams, seconds, &arguments))
        }
        (None, Some(streams)) => {
            let streams = streams.clamp(1, MAX_STREAMS);
            if last_port_needed(arguments.generator_port, streams) > u16::MAX as usize {
                return Err(std::io::Error::other("generator port range too high"));
            }
            run_generator(streams, seconds, &arguments)
        }
        _ => Err(std::io::Error::other(
            "give exactly one of --engine N or --generator N",
        )),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn stream_port(first: u16, index: usize) -> u16 {
    // Callers checked that the whole range fits in u16.
    (first as usize + 2 * index) as u16
}

struct Totals {
    late_ticks: u64,
    received: u64,
    sent: u64,
    lost: i64,
}

fn totals(handles: &[MediaHandle]) -> Totals {
    let mut totals = Totals {
        late_ticks: 0,
        received: 0,
        sent: 0,
        lost: 0,
    };
    for handle in handles {
        let stats = handle.stats();
        totals.late_ticks += stats.late_ticks;
        totals.received += stats.packets_received;
        totals.sent += stats.packets_sent;
        totals.lost += stats.packets_lost;
    }
    totals
}

async fn run_engine(streams: usize, seconds: u64, arguments: &Arguments) -> std::io::Result<()> {
    let first_port = arguments.engine_port;
    let allocator = PortAllocator::new(
        first_port,
        first_port.saturating_add(2 * streams as u16 + 1),
    );
    let rss_before = resident_kib();
    let audio_frames = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(streams);
    for index in 0..streams {
        let expected = stream_port(first_port, index);
        let lease = allocator
            .allocate()
            .filter(|lease| lease.rtp_port() == expected)
            .ok_or_else(|| std::io::Error::other("port allocation out of order"))?;
        let stream = MediaStream::bind(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            lease,
            MediaConfig::default(),
        )
        .await
        .map_err(|error| std::io::Error::other(format!("bind port {expected}: {error}")))?;
        let caller_port = stream_port(arguments.generator_port, index);
        let negotiated = Negotiated {
            remote_rtp: loopback(caller_port),
            remote_rtcp: loopback(caller_port + 1),
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
        // Stands in for the call task: one task per call consuming events, as the engine does.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if matches!(event, MediaEvent::Audio(_)) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        handles.push(handle);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = resident_kib();
    println!("READY {streams} streams on ports {first_port}..");
    std::io::stdout().flush()?;

    let waiting_since = Instant::now();
    while totals(&handles).received == 0 {
        if waiting_since.elapsed() > Duration::from_secs(30) {
            return Err(std::io::Error::other(
                "no traffic from the generator in 30 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up: every stream's jitter buffer is playing before we measure.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = totals(&handles);
    let cpu_start = cpu_time();
    let wait_start = run_queue_wait();
    let wall_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = wall_start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    let waited = run_queue_wait().saturating_sub(wait_start);
    let after = totals(&handles);
    let rss_loaded = resident_kib();
    for handle in &handles {
        handle.stop().await;
    }

    let stream_ticks = streams as f64 * wall.as_secs_f64() / FRAME_DURATION.as_secs_f64();
    let late = after.late_ticks.saturating_sub(before.late_ticks);
    // Normalised by the work actually done (every tick sends one packet): when other
    // processes starve the engine, ticks are skipped and raw CPU per second would flatter it.
    let ticks_done = after.sent.saturating_sub(before.sent).max(1) as f64;
    let cpu_per_tick_us = cpu.as_secs_f64() * 1e6 / ticks_done;
    let cpu_per_stream_us = cpu_per_tick_us * (1.0 / FRAME_DURATION.as_secs_f64());
    let streams_per_core = 1e6 / cpu_per_stream_us.max(f64::MIN_POSITIVE);
    let raw_cpu_per_stream_us = cpu.as_secs_f64() * 1e6 / streams as f64 / wall.as_secs_f64();
    let idle_kib = rss_idle.saturating_sub(rss_before) as f64 / streams as f64;
    println!("streams: {streams}, measured: {:.1} s", wall.as_secs_f64());
    println!(
        "engine cpu: {:.2} s = {:.1}% of one core ({raw_cpu_per_stream_us:.1} us per stream per \
         wall second); {cpu_per_tick_us:.2} us per stream tick done (1 packet in + 1 out) = \
         {cpu_per_stream_us:.1} us per stream-second of full work",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    println!("=> {streams_per_core:.0} streams per core");
    println!(
        "waited for the core (other processes running): {:.1}% of wall time",
        100.0 * waited.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "packets in window: {} received, {} sent, {} lost; audio events total: {}",
        after.received.saturating_sub(before.received),
        after.sent.saturating_sub(before.sent),
        after.lost - before.lost,
        audio_frames.load(Ordering::Relaxed)
    );
    println!(
        "late ticks: {late} ({:.3}% of stream ticks)",
        100.0 * late as f64 / stream_ticks
    );
    println!(
        "memory: {rss_before} KiB before, {rss_idle} KiB idle, {rss_loaded} KiB loaded => \
         {idle_kib:.1} KiB per idle stream"
    );
    println!(
        "RESULT streams={streams} cpu_us_per_stream_s={cpu_per_stream_us:.2} \
         streams_per_core={streams_per_core:.0} late_pct={:.4} idle_kib_per_stream={idle_kib:.2} cpu_wait_pct={:.1}",
        100.0 * late as f64 / stream_ticks,
        100.0 * waited.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(())
}

fn run_generator(streams: usize, seconds: u64, arguments: &Arguments) -> std::io::Result<()> {
    let mut sockets = Vec::with_capacity(streams);
    for index in 0..streams {
        let socket = UdpSocket::bind(loopback(stream_port(arguments.generator_port, index)))?;
        socket.set_nonblocking(true)?;
        sockets.push((socket, loopback(stream_port(arguments.engine_port, index))));
    }
    let payload = [g711::linear_to_ulaw(2000); FRAME_SAMPLES];
    let mut packet = [0u8; 172];
    let mut drain = [0u8; 1500];
    let group_period = FRAME_DURATION / SEND_GROUPS;
    let group_size = streams.div_ceil(SEND_GROUPS as usize);
    let (mut sent, mut received, mut late_groups) = (0u64, 0u64, 0u64);
    let cpu_start = cpu_time();
    let start = Instant::now();
    let groups = seconds * 1000 / group_period.as_millis().max(1) as u64;
    for step in 0..groups {
        // Drift-free: each group has a fixed deadline on the start grid.
        let deadline = start + group_period * step as u32;
        let now = Instant::now();
        if let Some(wait) = deadline.checked_duration_since(now) {
            std::thread::sleep(wait);
        } else if now - deadline > Duration::from_millis(10) {
            late_groups += 1;
        }
        let tick = step / SEND_GROUPS as u64;
        let group = (step % SEND_GROUPS as u64) as usize;
        let first = group * group_size;
        let last = (first + group_size).min(streams);
        for (index, (socket, target)) in sockets.iter().enumerate().take(last).skip(first) {
            let header = RtpHeader {
                marker: tick == 0,
                payload_type: 0,
                sequence: tick as u16,
                timestamp: (tick as u32).wrapping_mul(160),
                ssrc: index as u32 + 1,
            };
            if let Some(length) = write_packet(&header, &payload, &mut packet)
                && socket.send_to(&packet[..length], target).is_ok()
            {
                sent += 1;
            }
            while socket.recv_from(&mut drain).is_ok() {
                received += 1;
            }
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    println!(
        "generator: {streams} streams, {:.1} s, {sent} sent, {received} received, \
         cpu {:.1}% of one core, {late_groups} late send groups",
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(())
}
