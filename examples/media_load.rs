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
//! clear of the ranges the unit tests use. Bounded: at most 5000 streams and 120 seconds.
//!
//! Sink mode (`--sink-interface NAME`, set up by `SINK=... scripts/media-load.sh`): on
//! loopback the kernel charges the *receiver's* softirq work to the sender, so the engine's
//! sendto also pays for delivering each packet into the generator's socket, a cost a real
//! network interface would not charge it. In sink mode the caller's address
//! (`--caller-address`) lies on a drop-only interface's subnet: the generator sends from it
//! (IP_TRANSPARENT, as it is not a local address) to the engine's address on that interface,
//! which the kernel still delivers over loopback (the engine's receive cost stays counted),
//! while the engine's replies, sent to the latched caller address, leave through the IP
//! stack and the interface's transmit routine, which drops them. The generator then cannot
//! count what the engine sent, so the engine proves it: packets sent per stream tick, late
//! ticks, and the interface's own packet counters over the measured window.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
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
    /// Where the engine's streams listen (and the generator sends to).
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    engine_address: Ipv4Addr,
    /// The callers' address: the generator sends from it and the engine's RTP goes to it.
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    caller_address: Ipv4Addr,
    /// Sink mode: the caller address lies on this drop-only interface's subnet. The generator
    /// binds it transparently and expects nothing back; the engine reports the interface's
    /// packet counters over the measured window.
    #[arg(long, value_name = "NAME")]
    sink_interface: Option<String>,
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

/// Interface names go into a /sys path: accept only what the kernel itself would.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Packets the sink interface has swallowed so far. A dummy device counts its drops as
/// transmitted; an ifb device counts a packet nobody redirected to it as received and
/// dropped. Each leaves the other counter at zero, so the sum is right for both.
fn sink_packets(interface: &str) -> std::io::Result<u64> {
    let counter = |name: &str| -> std::io::Result<u64> {
        let path = format!("/sys/class/net/{interface}/statistics/{name}");
        std::fs::read_to_string(&path)?
            .trim()
            .parse()
            .map_err(|error| std::io::Error::other(format!("{path}: {error}")))
    };
    Ok(counter("tx_packets")? + counter("rx_dropped")?)
}

fn main() -> std::io::Result<()> {
    let arguments = Arguments::parse();
    if let Some(interface) = &arguments.sink_interface {
        if !valid_interface_name(interface) {
            return Err(std::io::Error::other("invalid --sink-interface name"));
        }
        if arguments.caller_address.is_loopback() || arguments.engine_address.is_loopback() {
            // A loopback source cannot leave through another interface (the kernel refuses),
            // and a loopback caller would put the engine's sends back on loopback.
            return Err(std::io::Error::other(
                "sink mode needs non-loopback --engine-address and --caller-address",
            ));
        }
    }
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

fn at(address: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(address), port)
}

/// A non-blocking UDP socket bound to an address this host does not own, so the generator
/// can send as a caller on the sink's subnet (IP_TRANSPARENT needs CAP_NET_ADMIN).
fn bind_transparent(address: SocketAddrV4) -> std::io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the descriptor is owned (and closed on error) right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let enable: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the stated size.
    let result = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_IP,
            libc::IP_TRANSPARENT,
            (&raw const enable).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            error.kind(),
            format!("IP_TRANSPARENT (needs CAP_NET_ADMIN): {error}"),
        ));
    }
    let socket_address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the address is a live sockaddr_in of the stated size.
    let result = unsafe {
        libc::bind(
            raw,
            (&raw const socket_address).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            error.kind(),
            format!("bind {address}: {error}"),
        ));
    }
    Ok(UdpSocket::from(socket))
}

fn stream_port(first: u16, index: usize) -> u16 {
    // Callers checked that the whole range fits in u16.
    (first as usize + 2 * index) as u16
}

struct Totals {
    late_ticks: u64,
    received: u64,
    sent: u64,
    rtcp_sent: u64,
    lost: i64,
}

fn totals(handles: &[MediaHandle]) -> Totals {
    let mut totals = Totals {
        late_ticks: 0,
        received: 0,
        sent: 0,
        rtcp_sent: 0,
        lost: 0,
    };
    for handle in handles {
        let stats = handle.stats();
        totals.late_ticks += stats.late_ticks;
        totals.received += stats.packets_received;
        totals.sent += stats.packets_sent;
        totals.rtcp_sent += stats.rtcp_sent;
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
            IpAddr::V4(arguments.engine_address),
            lease,
            MediaConfig::default(),
        )
        .await
        .map_err(|error| std::io::Error::other(format!("bind port {expected}: {error}")))?;
        let caller_port = stream_port(arguments.generator_port, index);
        let negotiated = Negotiated {
            remote_rtp: at(arguments.caller_address, caller_port),
            remote_rtcp: at(arguments.caller_address, caller_port + 1),
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

    let sink = arguments.sink_interface.as_deref();
    let sink_before = sink.map(sink_packets).transpose()?;
    let before = totals(&handles);
    let cpu_start = cpu_time();
    let wait_start = run_queue_wait();
    let wall_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = wall_start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    let waited = run_queue_wait().saturating_sub(wait_start);
    let after = totals(&handles);
    // Same thread as every send, and sendto runs the sink's transmit synchronously, so the
    // counter brackets exactly the packets sent between the two snapshots.
    let sink_after = sink.map(sink_packets).transpose()?;
    let rss_loaded = resident_kib();
    for handle in &handles {
        handle.stop().await;
    }

    let stream_ticks = streams as f64 * wall.as_secs_f64() / FRAME_DURATION.as_secs_f64();
    let late = after.late_ticks.saturating_sub(before.late_ticks);
    let sent_in_window = after.sent.saturating_sub(before.sent);
    let rtcp_in_window = after.rtcp_sent.saturating_sub(before.rtcp_sent);
    let sent_per_tick_pct = 100.0 * sent_in_window as f64 / stream_ticks;
    // Normalised by the work actually done (every tick sends one packet): when other
    // processes starve the engine, ticks are skipped and raw CPU per second would flatter it.
    let ticks_done = sent_in_window.max(1) as f64;
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
        "late ticks: {late} ({:.3}% of stream ticks); RTP sent per stream tick: \
         {sent_per_tick_pct:.2}% (100% = every stream sent its packet every 20 ms)",
        100.0 * late as f64 / stream_ticks
    );
    // -1 in the RESULT line: loopback mode, where the generator counts what arrives instead.
    let mut sink_pct = -1.0;
    if let (Some(interface), Some(first), Some(last)) = (sink, sink_before, sink_after) {
        let swallowed = last.saturating_sub(first);
        let expected = sent_in_window + rtcp_in_window;
        sink_pct = 100.0 * swallowed as f64 / expected.max(1) as f64;
        println!(
            "sink {interface}: {swallowed} packets left through it and were dropped in the \
             window; the engine counted {sent_in_window} RTP + {rtcp_in_window} RTCP sent \
             => {sink_pct:.2}% reached the interface"
        );
    }
    println!(
        "memory: {rss_before} KiB before, {rss_idle} KiB idle, {rss_loaded} KiB loaded => \
         {idle_kib:.1} KiB per idle stream"
    );
    println!(
        "RESULT streams={streams} cpu_us_per_stream_s={cpu_per_stream_us:.2} \
         streams_per_core={streams_per_core:.0} late_pct={:.4} idle_kib_per_stream={idle_kib:.2} \
         cpu_wait_pct={:.1} sent_per_tick_pct={sent_per_tick_pct:.2} sink_pct={sink_pct:.2}",
        100.0 * late as f64 / stream_ticks,
        100.0 * waited.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(())
}

fn run_generator(streams: usize, seconds: u64, arguments: &Arguments) -> std::io::Result<()> {
    let sink_mode = arguments.sink_interface.is_some();
    let mut sockets = Vec::with_capacity(streams);
    for index in 0..streams {
        let port = stream_port(arguments.generator_port, index);
        let socket = if sink_mode {
            bind_transparent(SocketAddrV4::new(arguments.caller_address, port))?
        } else {
            let socket = UdpSocket::bind(at(arguments.caller_address, port))?;
            socket.set_nonblocking(true)?;
            socket
        };
        let target = at(
            arguments.engine_address,
            stream_port(arguments.engine_port, index),
        );
        sockets.push((socket, target));
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
            // In sink mode the engine's packets never come here.
            while !sink_mode && socket.recv_from(&mut drain).is_ok() {
                received += 1;
            }
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    let received = if sink_mode {
        "none counted (the engine's packets went to the sink)".to_string()
    } else {
        format!("{received} received")
    };
    println!(
        "generator: {streams} streams, {:.1} s, {sent} sent, {received}, \
         cpu {:.1}% of one core, {late_groups} late send groups",
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(())
}
