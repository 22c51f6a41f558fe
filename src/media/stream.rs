//! The async shell around [`RtpSession`]: sockets, the 20 ms clock and the channels to the
//! rest of the engine. One tokio task per call; all protocol decisions live in the session.
//!
//! Pacing: a `tokio::time::interval` anchored at the start instant with
//! `MissedTickBehavior::Burst`, so the tick schedule never drifts (Delay would accumulate
//! lateness into the RTP clock; Skip would silently shorten our media relative to the
//! timestamps). Short stalls are caught up in a burst, which the far end's jitter buffer
//! absorbs. A long stall (over [`MAX_CATCH_UP`]) is not replayed: those ticks are skipped
//! and the RTP timestamp jumps by the same amount, so the far end hears a gap instead of
//! falling behind for the rest of the call.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant as TokioInstant, MissedTickBehavior};

use super::audio::CallRecorder;
use super::dtmf::DtmfDigit;
use super::jitter::JitterConfig;
use super::ports::PortLease;
use super::sdp::Negotiated;
use super::session::{PacketOutcome, RtpSession, RtpStats, SessionConfig};
use super::{FRAME_DURATION, FRAME_SAMPLES, Frame};

/// Commands from handles; generous because each is tiny and a full queue loses a command.
const COMMAND_CAPACITY: usize = 256;
/// Events to the call task: five seconds of audio frames.
const EVENT_CAPACITY: usize = 256;
/// Control events (DTMF, inactivity, playback) kept when the event channel is full.
const MAX_PENDING_CONTROL_EVENTS: usize = 64;
/// Recording frames buffered between the media task and the writer thread (five seconds).
const RECORDER_CAPACITY: usize = 250;
/// A tick this late counts as late in the stats.
const LATE_TICK: Duration = Duration::from_millis(10);
/// Beyond this lag, ticks are skipped rather than replayed in a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);
/// Ticks of sent-audio levels kept for echo detection (1.28 s): longer than any echo path
/// a phone call has (the far end's jitter buffer plus the network both ways).
pub const SENT_LEVEL_TICKS: usize = 64;
/// Largest datagram we read; anything bigger is truncated and fails validation.
const RECEIVE_BUFFER: usize = 2048;

/// Per-stream settings from the engine's configuration.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub inactivity_timeout: Duration,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    pub rtcp_interval: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            inactivity_timeout: Duration::from_secs(30),
            jitter_min_ms: 40,
            jitter_max_ms: 200,
            rtcp_interval: Duration::from_secs(5),
        }
    }
}

/// What a stream tells its call.
// The frame is carried inline on purpose: boxing it would allocate 50 times a second per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// Caller audio, once per 20 ms tick while media flows (concealed frames included).
    Audio(Frame),
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
    /// No RTP for the configured timeout while we expected some (not reported on hold).
    Inactive {
        silent_for: Duration,
    },
    /// Everything queued with `play` has been sent.
    PlaybackFinished,
}

impl From<DtmfDigit> for MediaEvent {
    fn from(digit: DtmfDigit) -> Self {
        MediaEvent::Dtmf {
            digit: digit.digit,
            duration_ms: digit.duration_ms,
        }
    }
}

enum Command {
    Play {
        samples: Arc<[i16]>,
        flush_epoch: u64,
    },
    Flush,
    Update(Box<Negotiated>),
    Dtmf(char, Duration),
    /// A digit that arrived by signalling (SIP INFO), reported like RTP ones.
    ReceivedDtmf(char, u32),
    Stop(oneshot::Sender<RtpStats>),
}

/// State shared between handles and the task without going through the command queue, so
/// `flush`, `stats` and `is_playing` work even if the queue is full.
struct Shared {
    stats: Mutex<RtpStats>,
    playing: AtomicBool,
    /// Incremented by every `flush`; `Play` commands carry the epoch they were issued in, so
    /// audio queued before a barge-in can never play after it.
    flush_epoch: AtomicU64,
    /// Set by `pause`: queued audio is held until `resume` (or dropped by `flush`).
    paused: AtomicBool,
    /// Peak level of the audio sent at each tick, a ring indexed by `ticks`.
    sent_peaks: [AtomicU16; SENT_LEVEL_TICKS],
    ticks: AtomicU64,
}

/// A bound but not yet started stream: the local port is known (for the SDP answer) before
/// the remote side is.
pub struct MediaStream {
    rtp_socket: UdpSocket,
    rtcp_socket: UdpSocket,
    lease: PortLease,
    config: MediaConfig,
    runtime: tokio::runtime::Handle,
    listen_tap: Option<ListenTap>,
}

/// Where a stream publishes, per tick, the caller's frame followed by the frame it sent
/// ([`FRAME_SAMPLES`] each): the supervisor's listen-in (`control::ListenFrame`).
pub type ListenTap = broadcast::Sender<Arc<[i16]>>;

impl std::fmt::Debug for MediaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStream")
            .field("lease", &self.lease)
            .finish()
    }
}

impl MediaStream {
    /// Binds the lease's RTP and RTCP ports on `local_ip`.
    pub async fn bind(
        local_ip: IpAddr,
        lease: PortLease,
        cfg: MediaConfig,
    ) -> std::io::Result<MediaStream> {
        let rtp_socket = UdpSocket::bind(SocketAddr::new(local_ip, lease.rtp_port())).await?;
        let rtcp_socket = UdpSocket::bind(SocketAddr::new(local_ip, lease.rtcp_port())).await?;
        Ok(MediaStream {
            rtp_socket,
            rtcp_socket,
            lease,
            config: cfg,
            runtime: tokio::runtime::Handle::current(),
            listen_tap: None,
        })
    }

    /// Publishes both directions to `tap` while anyone listens. On the caller's leg of a
    /// bridged call the sent side is the agent's voice, so listeners hear both parties.
    pub fn with_listen_tap(mut self, tap: ListenTap) -> MediaStream {
        self.listen_tap = Some(tap);
        self
    }

    pub fn local_rtp_port(&self) -> u16 {
        self.lease.rtp_port()
    }

    /// Starts the stream's task. Dropping every handle stops it, as does `stop`.
    pub fn start(
        self,
        negotiated: Negotiated,
        recorder: Option<CallRecorder>,
    ) -> (MediaHandle, mpsc::Receiver<MediaEvent>) {
        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            stats: Mutex::new(RtpStats::default()),
            playing: AtomicBool::new(false),
            flush_epoch: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            sent_peaks: std::array::from_fn(|_| AtomicU16::new(0)),
            ticks: AtomicU64::new(0),
        });
        let session_config = SessionConfig {
            inactivity_timeout: self.config.inactivity_timeout,
            jitter: JitterConfig {
                min_delay_ms: self.config.jitter_min_ms,
                max_delay_ms: self.config.jitter_max_ms,
            },
            rtcp_interval: self.config.rtcp_interval,
            comfort_silence: true,
            cname: format!("frontdoor-{}", uuid::Uuid::new_v4().simple()),
        };
        let now = TokioInstant::now();
        let session = RtpSession::new(
            negotiated,
            session_config,
            rand::random(),
            rand::random(),
            rand::random(),
            now.into_std(),
        );
        let recorder = recorder.map(RecorderThread::spawn);
        let task = StreamTask {
            session,
            rtp_socket: self.rtp_socket,
            rtcp_socket: self.rtcp_socket,
            _lease: self.lease,
            commands: command_rx,
            events: event_tx,
            pending_events: VecDeque::new(),
            shared: Arc::clone(&shared),
            seen_flush_epoch: 0,
            recorder,
            listen_tap: self.listen_tap,
            late_ticks: 0,
            events_dropped: 0,
        };
        self.runtime.spawn(task.run(now));
        (
            MediaHandle {
                commands: command_tx,
                shared,
            },
            event_rx,
        )
    }
}

/// Controls a running stream; cheap to clone.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MediaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHandle")
            .field("playing", &self.is_playing())
            .finish()
    }
}

impl MediaHandle {
    fn command(&self, command: Command, what: &str) {
        if let Err(error) = self.commands.try_send(command) {
            tracing::warn!(what, %error, "media command dropped");
        }
    }

    /// Queues 8 kHz mono audio of any length for paced sending.
    pub fn play(&self, samples: Arc<[i16]>) {
        if samples.is_empty() {
            return;
        }
        let flush_epoch = self.shared.flush_epoch.load(Ordering::Acquire);
        self.shared.playing.store(true, Ordering::Release);
        self.command(
            Command::Play {
                samples,
                flush_epoch,
            },
            "play",
        );
    }

    /// Drops all queued outgoing audio now (barge-in) and clears a pause: with nothing left
    /// to hold, the next `play` must be heard. Works even if the command queue is full: the
    /// epoch is checked on every tick.
    pub fn flush(&self) {
        self.shared.flush_epoch.fetch_add(1, Ordering::AcqRel);
        self.shared.paused.store(false, Ordering::Release);
        self.shared.playing.store(false, Ordering::Release);
        // Only a wake-up: the epoch above is what guarantees the flush.
        let _ = self.commands.try_send(Command::Flush);
    }

    /// Holds the queued audio from the next tick on (within 20 ms) without dropping it: the
    /// caller may have started to talk, or only coughed. Like `flush`, it bypasses the
    /// command queue.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Release);
    }

    /// Sends the held audio again, from the sample where `pause` stopped it.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::Release);
    }

    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::Acquire)
    }

    /// The loudest sample sent in the last `tail` (at most [`SENT_LEVEL_TICKS`] ticks): the
    /// reference an echo detector compares the caller's level with. Read when caller audio
    /// is taken from the event queue, so the tail must also cover that queue's delay.
    pub fn recent_sent_peak(&self, tail: Duration) -> u16 {
        let ticks = (tail.as_millis() / FRAME_DURATION.as_millis()).max(1) as u64;
        let ticks = ticks.min(SENT_LEVEL_TICKS as u64);
        let newest = self.shared.ticks.load(Ordering::Acquire);
        (0..ticks.min(newest))
            .map(|back| {
                let slot = ((newest - 1 - back) % SENT_LEVEL_TICKS as u64) as usize;
                self.shared.sent_peaks[slot].load(Ordering::Relaxed)
            })
            .max()
            .unwrap_or(0)
    }

    /// Applies a re-INVITE's negotiation: hold/resume, codec change, new remote.
    pub fn update(&self, negotiated: Negotiated) {
        self.command(Command::Update(Box::new(negotiated)), "update");
    }

    pub fn send_dtmf(&self, digit: char, duration: Duration) {
        self.command(Command::Dtmf(digit, duration), "send_dtmf");
    }

    /// Reports a digit the caller sent out of band (SIP INFO) as a
    /// [`MediaEvent::Dtmf`], in order with the stream's own events, so the
    /// call's logic treats both transports alike.
    pub fn inject_received_dtmf(&self, digit: char, duration_ms: u32) {
        self.command(
            Command::ReceivedDtmf(digit, duration_ms),
            "inject_received_dtmf",
        );
    }

    /// Counters as of the last tick.
    pub fn stats(&self) -> RtpStats {
        self.shared.stats.lock().clone()
    }

    /// Stops the stream, finalizes the recording and returns the final stats.
    pub async fn stop(&self) -> RtpStats {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.commands.send(Command::Stop(reply_tx)).await.is_ok()
            && let Ok(stats) = reply_rx.await
        {
            return stats;
        }
        // Already stopped: the last snapshot is the final one.
        self.stats()
    }

    pub fn is_playing(&self) -> bool {
        self.shared.playing.load(Ordering::Acquire)
    }
}

/// Writes recordings on a dedicated thread so a slow disk never delays the media clock.
struct RecorderThread {
    frames: std::sync::mpsc::SyncSender<(Frame, Option<Frame>)>,
    thread: std::thread::JoinHandle<()>,
    dropped: u64,
}

impl RecorderThread {
    fn spawn(mut recorder: CallRecorder) -> RecorderThread {
        let (frames, receiver) =
            std::sync::mpsc::sync_channel::<(Frame, Option<Frame>)>(RECORDER_CAPACITY);
        let thread = std::thread::spawn(move || {
            while let Ok((caller, sent)) = receiver.recv() {
                if let Err(error) = recorder.write_frame(Some(&caller), sent.as_ref()) {
                    tracing::warn!(%error, "recording stopped");
                    return;
                }
            }
            if let Err(error) = recorder.finalize() {
                tracing::warn!(%error, "recording not finalized");
            }
        });
        RecorderThread {
            frames,
            thread,
            dropped: 0,
        }
    }

    fn record(&mut self, caller: Option<&Frame>, sent: Option<&Frame>) {
        let caller = caller.copied().unwrap_or([0; FRAME_SAMPLES]);
        if self.frames.try_send((caller, sent.copied())).is_err() {
            self.dropped += 1;
        }
    }

    async fn finish(self) {
        drop(self.frames);
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                "recording frames dropped (writer too slow)"
            );
        }
        let thread = self.thread;
        if let Err(error) = tokio::task::spawn_blocking(move || thread.join()).await {
            tracing::warn!(%error, "recording thread did not finish");
        }
    }
}

struct StreamTask {
    session: RtpSession,
    rtp_socket: UdpSocket,
    rtcp_socket: UdpSocket,
    /// Held for the life of the task so the ports return to the pool when it ends.
    _lease: PortLease,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MediaEvent>,
    pending_events: VecDeque<MediaEvent>,
    shared: Arc<Shared>,
    seen_flush_epoch: u64,
    recorder: Option<RecorderThread>,
    listen_tap: Option<ListenTap>,
    late_ticks: u64,
    events_dropped: u64,
}

/// One listen frame: the caller's 20 ms, then what was sent in the same tick; silence
/// where a direction had nothing (no RTP yet, on hold, nothing to say).
fn listen_frame(received: Option<&Frame>, sent: Option<&Frame>) -> Arc<[i16]> {
    let mut both = [0i16; 2 * FRAME_SAMPLES];
    if let Some(frame) = received {
        both[..FRAME_SAMPLES].copy_from_slice(frame);
    }
    if let Some(frame) = sent {
        both[FRAME_SAMPLES..].copy_from_slice(frame);
    }
    Arc::from(&both[..])
}

impl StreamTask {
    async fn run(mut self, start: TokioInstant) {
        let mut interval = tokio::time::interval_at(start, FRAME_DURATION);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut rtp_buffer = [0u8; RECEIVE_BUFFER];
        let mut rtcp_buffer = [0u8; RECEIVE_BUFFER];
        let stop_reply = loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Stop(reply)) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                scheduled = interval.tick() => self.on_tick(scheduled, &mut interval),
                received = self.rtp_socket.recv_from(&mut rtp_buffer) => {
                    if let Ok((length, from)) = received {
                        self.on_rtp(&rtp_buffer[..length], from);
                    }
                }
                received = self.rtcp_socket.recv_from(&mut rtcp_buffer) => {
                    if let Ok((length, from)) = received {
                        let now = TokioInstant::now().into_std();
                        self.session.handle_rtcp(&rtcp_buffer[..length], from, now);
                    }
                }
            }
        };
        if let Some(recorder) = self.recorder.take() {
            recorder.finish().await;
        }
        let final_stats = self.snapshot();
        *self.shared.stats.lock() = final_stats.clone();
        self.shared.playing.store(false, Ordering::Release);
        if let Some(reply) = stop_reply {
            let _ = reply.send(final_stats);
        }
    }

    fn snapshot(&self) -> RtpStats {
        let mut stats = self.session.stats();
        stats.late_ticks = self.late_ticks;
        stats.events_dropped = self.events_dropped;
        stats
    }

    fn sync_flush(&mut self) {
        let epoch = self.shared.flush_epoch.load(Ordering::Acquire);
        if epoch != self.seen_flush_epoch {
            self.seen_flush_epoch = epoch;
            self.session.flush();
        }
        self.session
            .set_paused(self.shared.paused.load(Ordering::Acquire));
    }

    fn on_command(&mut self, command: Command) {
        self.sync_flush();
        match command {
            Command::Play {
                samples,
                flush_epoch,
            } => {
                // Issued before the latest flush: the caller has already barged in over it.
                if flush_epoch == self.seen_flush_epoch && !self.session.play(samples) {
                    tracing::warn!("outgoing audio queue full; prompt dropped");
                }
            }
            Command::Flush => {}
            Command::Update(negotiated) => {
                let now = TokioInstant::now().into_std();
                self.session.update(*negotiated, now);
            }
            Command::Dtmf(digit, duration) => {
                if !self.session.send_dtmf(digit, duration) {
                    tracing::warn!(%digit, "DTMF not sent (not negotiated, invalid or queue full)");
                }
            }
            Command::ReceivedDtmf(digit, duration_ms) => {
                self.emit_control(MediaEvent::Dtmf { digit, duration_ms });
            }
            Command::Stop(_) => {}
        }
        self.shared
            .playing
            .store(self.session.is_playing(), Ordering::Release);
    }

    fn on_rtp(&mut self, datagram: &[u8], from: SocketAddr) {
        let now = TokioInstant::now().into_std();
        if let PacketOutcome::Dtmf(Some(digit)) = self.session.handle_packet(datagram, from, now) {
            self.emit_control(digit.into());
        }
    }

    /// Control events must not be lost to a momentarily full channel: they wait here.
    fn emit_control(&mut self, event: MediaEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                if self.pending_events.len() < MAX_PENDING_CONTROL_EVENTS {
                    self.pending_events.push_back(event);
                } else {
                    self.events_dropped += 1;
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_tick(&mut self, scheduled: TokioInstant, interval: &mut tokio::time::Interval) {
        let now = TokioInstant::now();
        let lag = now.saturating_duration_since(scheduled);
        if lag > LATE_TICK {
            self.late_ticks += 1;
        }
        if lag > MAX_CATCH_UP {
            let skipped = (lag.as_micros() / FRAME_DURATION.as_micros()) as u32;
            self.session.skip_ticks(skipped);
            interval.reset_at(scheduled + FRAME_DURATION * (skipped + 1));
        }
        self.sync_flush();
        while let Some(event) = self.pending_events.pop_front() {
            if let Err(error) = self.events.try_send(event) {
                if let mpsc::error::TrySendError::Full(event) = error {
                    self.pending_events.push_front(event);
                }
                break;
            }
        }

        let output = self.session.on_tick(now.into_std());
        if let Some(packet) = output.outgoing {
            // try_send_to never waits: a full socket buffer drops this packet, not the clock.
            if let Err(error) = self.rtp_socket.try_send_to(packet, output.destination) {
                tracing::trace!(%error, "RTP send failed");
            }
        }
        // Read by the echo detector; the media layer already sees both directions at the
        // same tick, which is the alignment echo detection needs.
        let sent_audio = output.sent_audio;
        let tick = self.shared.ticks.load(Ordering::Relaxed);
        let peak = sent_audio.map_or(0, |frame| {
            frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
        });
        self.shared.sent_peaks[(tick % SENT_LEVEL_TICKS as u64) as usize]
            .store(peak, Ordering::Relaxed);
        self.shared.ticks.store(tick + 1, Ordering::Release);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(output.received, output.sent_audio);
        }
        // Counting receivers is one uncontended lock: nothing is built for a call nobody
        // listens to. A send error only means the last listener left meanwhile.
        if let Some(tap) = &self.listen_tap
            && tap.receiver_count() > 0
        {
            let _ = tap.send(listen_frame(output.received, output.sent_audio));
        }
        let audio = output.received.copied();
        let playback_finished = output.playback_finished;
        let dtmf = output.dtmf;
        let inactive_for = output.inactive_for;

        if let Some(frame) = audio
            && self.events.try_send(MediaEvent::Audio(frame)).is_err()
        {
            // Audio is perishable: if the consumer is behind, old frames are worthless.
            self.events_dropped += 1;
        }
        if let Some(digit) = dtmf {
            self.emit_control(digit.into());
        }
        if playback_finished {
            self.emit_control(MediaEvent::PlaybackFinished);
        }
        if let Some(silent_for) = inactive_for {
            self.emit_control(MediaEvent::Inactive { silent_for });
        }
        if let Some((report, destination)) =
            self.session.poll_rtcp(now.into_std(), SystemTime::now())
        {
            let socket = if self.session.negotiated().rtcp_mux {
                &self.rtp_socket
            } else {
                &self.rtcp_socket
            };
            let _ = socket.try_send_to(&report, destination);
        }
        self.shared
            .playing
            .store(self.session.is_playing(), Ordering::Release);
        *self.shared.stats.lock() = self.snapshot();
    }
}

#[cfg(test)]
mod tests {
    use super::super::g711;
    use super::super::ports::PortAllocator;
    use super::super::rtp::{RtpHeader, RtpPacket, write_packet};
    use super::super::sdp::{Codec, Direction};
    use super::*;

    async fn bind_any(allocator: &PortAllocator, config: MediaConfig) -> MediaStream {
        loop {
            let lease = allocator.allocate().expect("ports left in test range");
            if let Ok(stream) =
                MediaStream::bind("127.0.0.1".parse().expect("ip"), lease, config.clone()).await
            {
                return stream;
            }
        }
    }

    fn negotiated_towards(peer: SocketAddr) -> Negotiated {
        Negotiated {
            remote_rtp: peer,
            remote_rtcp: SocketAddr::new(peer.ip(), peer.port() + 1),
            codec: Codec::Pcmu,
            payload_type: 0,
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            offered_streams: Vec::new(),
        }
    }

    async fn recv_rtp(peer: &UdpSocket) -> Vec<u8> {
        let mut buffer = [0u8; 1500];
        let (length, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buffer))
            .await
            .expect("packet within 2 s")
            .expect("recv");
        buffer[..length].to_vec()
    }

    #[tokio::test]
    async fn loopback_stream_sends_paced_audio_and_reports_received_audio_and_dtmf() {
        let allocator = PortAllocator::new(46000, 46999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let local_port = stream.local_rtp_port();
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let peer_addr = peer.local_addr().expect("addr");
        let (handle, mut events) = stream.start(negotiated_towards(peer_addr), None);
        handle.play(Arc::from(vec![4000i16; 3 * FRAME_SAMPLES]));
        assert!(handle.is_playing());

        // Outgoing: three audio packets, paced, consecutive, same SSRC, marker on the first.
        let mut packets = Vec::new();
        let started = std::time::Instant::now();
        for _ in 0..3 {
            packets.push(recv_rtp(&peer).await);
        }
        let elapsed = started.elapsed();
        let parsed: Vec<RtpPacket<'_>> = packets
            .iter()
            .map(|p| RtpPacket::parse(p).expect("valid"))
            .collect();
        assert!(parsed[0].marker);
        assert!(!parsed[1].marker && !parsed[2].marker);
        for pair in parsed.windows(2) {
            assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
            assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(160));
            assert_eq!(pair[1].ssrc, pair[0].ssrc);
        }
        assert!(
            parsed
                .iter()
                .all(|p| p.payload[0] == g711::linear_to_ulaw(4000))
        );
        assert!(
            elapsed >= Duration::from_millis(30),
            "paced, not burst: {elapsed:?}"
        );

        // Incoming: 20 paced audio packets, then a DTMF key press.
        let target: SocketAddr = SocketAddr::new("127.0.0.1".parse().expect("ip"), local_port);
        let mut buffer = [0u8; 200];
        let loud = [g711::linear_to_ulaw(-6000); 160];
        for seq in 0..20u16 {
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: seq as u32 * 160,
                ssrc: 0xC0FFEE,
            };
            let length = write_packet(&header, &loud, &mut buffer).expect("fits");
            peer.send_to(&buffer[..length], target).await.expect("send");
            tokio::time::sleep(FRAME_DURATION).await;
        }
        peer.send_to(b"definitely not rtp", target)
            .await
            .expect("send garbage");
        for (index, (end, duration)) in [
            (false, 160u16),
            (false, 320),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let header = RtpHeader {
                marker: index == 0,
                payload_type: 101,
                sequence: 20 + index as u16,
                timestamp: 20 * 160,
                ssrc: 0xC0FFEE,
            };
            let d = duration.to_be_bytes();
            let payload = [11u8, if end { 0x8A } else { 0x0A }, d[0], d[1]];
            let length = write_packet(&header, &payload, &mut buffer).expect("fits");
            peer.send_to(&buffer[..length], target).await.expect("send");
        }

        let mut audio_frames = 0;
        let mut dtmf = Vec::new();
        let mut playback_finished = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while dtmf.is_empty() || audio_frames < 10 || !playback_finished {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("events before deadline")
                .expect("stream alive");
            match event {
                MediaEvent::Audio(frame) => {
                    if (frame[0] + 6000).abs() < 300 {
                        audio_frames += 1;
                    }
                }
                MediaEvent::Dtmf { digit, duration_ms } => dtmf.push((digit, duration_ms)),
                MediaEvent::PlaybackFinished => playback_finished = true,
                MediaEvent::Inactive { .. } => panic!("not inactive"),
            }
        }
        assert_eq!(dtmf, vec![('#', 80)]);
        assert!(!handle.is_playing());

        let stats = handle.stop().await;
        assert_eq!(stats.packets_received, 25);
        assert_eq!(stats.garbage_datagrams, 1);
        assert_eq!(stats.dtmf_received, 1);
        assert_eq!(stats.samples_sent, 3 * FRAME_SAMPLES as u64);
        assert!(stats.packets_sent >= 3);
        assert_eq!(stats.remote_addr, Some(peer_addr));
        // The lease went back to the pool with the task.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(allocator.in_use(), 0);
    }

    #[tokio::test]
    async fn flush_drops_queued_prompt_and_hold_stops_sending() {
        let allocator = PortAllocator::new(47000, 47999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let peer_addr = peer.local_addr().expect("addr");
        let (handle, mut events) = stream.start(negotiated_towards(peer_addr), None);
        handle.play(Arc::from(vec![4000i16; 8000 * 10]));
        let _ = recv_rtp(&peer).await;
        handle.flush();
        assert!(!handle.is_playing());
        // A prompt queued before the flush was processed must not play either.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stats = handle.stats();
        assert!(stats.samples_flushed > 8000 * 9, "{stats:?}");
        assert!(stats.samples_sent < 8000);

        let mut held = negotiated_towards(peer_addr);
        held.direction = Direction::Inactive;
        handle.update(held);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let sent_before = handle.stats().packets_sent;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            handle.stats().packets_sent,
            sent_before,
            "no RTP while on hold"
        );
        let stats = handle.stop().await;
        assert_eq!(stats.packets_sent, sent_before);
        // Nothing was received, so no caller audio was reported.
        while let Ok(event) = events.try_recv() {
            assert!(!matches!(event, MediaEvent::Audio(_)), "{event:?}");
        }
    }

    #[tokio::test]
    async fn pause_holds_audio_resume_continues_and_sent_levels_are_published() {
        let allocator = PortAllocator::new(45000, 45999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let peer_addr = peer.local_addr().expect("addr");
        let (handle, _events) = stream.start(negotiated_towards(peer_addr), None);
        handle.play(Arc::from(vec![5000i16; 8000]));
        let _ = recv_rtp(&peer).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(handle.recent_sent_peak(Duration::from_millis(200)) >= 4900);
        handle.pause();
        assert!(handle.is_paused());
        tokio::time::sleep(Duration::from_millis(60)).await;
        let held = handle.stats().samples_sent;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = handle.stats();
        assert_eq!(stats.samples_sent, held, "nothing sent while paused");
        assert_eq!(stats.samples_flushed, 0, "nothing dropped either");
        assert!(handle.is_playing());
        // Only silence went out for 200 ms: the reference falls with it.
        assert_eq!(handle.recent_sent_peak(Duration::from_millis(100)), 0);
        handle.resume();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(handle.stats().samples_sent > held);
        handle.pause();
        handle.flush();
        assert!(!handle.is_paused(), "a flush clears the pause");
        handle.stop().await;
    }

    #[tokio::test]
    async fn inactivity_is_reported() {
        let allocator = PortAllocator::new(48000, 48999);
        let config = MediaConfig {
            inactivity_timeout: Duration::from_millis(200),
            ..MediaConfig::default()
        };
        let stream = bind_any(&allocator, config).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let (handle, mut events) =
            stream.start(negotiated_towards(peer.local_addr().expect("addr")), None);
        let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .expect("event in time")
            .expect("alive");
        assert!(
            matches!(event, MediaEvent::Inactive { silent_for } if silent_for >= Duration::from_millis(200))
        );
        handle.stop().await;
    }

    #[tokio::test]
    async fn listen_tap_carries_both_directions_only_while_someone_listens() {
        let allocator = PortAllocator::new(44000, 44999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let local_port = stream.local_rtp_port();
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let (tap, nobody) = broadcast::channel(64);
        drop(nobody);
        let (handle, _events) = stream
            .with_listen_tap(tap.clone())
            .start(negotiated_towards(peer.local_addr().expect("addr")), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tap.len(), 0, "nothing built while nobody listens");

        let mut ear = tap.subscribe();
        handle.play(Arc::from(vec![2500i16; 8000]));
        let target = SocketAddr::new("127.0.0.1".parse().expect("ip"), local_port);
        let mut buffer = [0u8; 200];
        let loud = [g711::linear_to_ulaw(-6000); 160];
        for seq in 0..30u16 {
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: seq as u32 * 160,
                ssrc: 0xBEEF,
            };
            let length = write_packet(&header, &loud, &mut buffer).expect("fits");
            peer.send_to(&buffer[..length], target).await.expect("send");
            tokio::time::sleep(FRAME_DURATION).await;
        }
        let mut heard_caller = false;
        let mut heard_sent = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !(heard_caller && heard_sent) {
            let frame = tokio::time::timeout_at(deadline, ear.recv())
                .await
                .expect("frames in time")
                .expect("tap open");
            assert_eq!(frame.len(), 2 * FRAME_SAMPLES);
            heard_caller |= (frame[0] + 6000).abs() < 300;
            heard_sent |= frame[FRAME_SAMPLES] == 2500;
        }
        handle.stop().await;
    }

    #[tokio::test]
    async fn recording_captures_both_directions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("call.wav");
        let allocator = PortAllocator::new(49000, 49999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let recorder = CallRecorder::create(&path).expect("recorder");
        let (handle, _events) = stream.start(
            negotiated_towards(peer.local_addr().expect("addr")),
            Some(recorder),
        );
        handle.play(Arc::from(vec![3000i16; 4 * FRAME_SAMPLES]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.stop().await;
        let mut reader = hound::WavReader::open(&path).expect("finalized wav");
        assert_eq!(reader.spec().channels, 2);
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        assert!(samples.len() >= 2 * 4 * FRAME_SAMPLES);
        let right_channel_loud = samples
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|s| **s == 3000)
            .count();
        assert_eq!(right_channel_loud, 4 * FRAME_SAMPLES);
    }
}
