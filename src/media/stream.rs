//! The shell around [`RtpSession`]: sockets, the 20 ms clock and the channels to the rest
//! of the engine. All protocol decisions live in the session.
//!
//! Scheduling: streams are not tasks of their own. Streams started on one runtime thread
//! join a tick group (up to `GROUP_CAPACITY`), one task with one timer that cuts the
//! 20 ms frame into `GROUP_SLOTS` slots and serves each stream when its slot comes
//! round, so a stream costs no timer entry, wake-up or task poll of its own, and the
//! group's streams are spread over the frame instead of all falling due at one instant.
//! Commands from handles are taken at the stream's next tick (within 20 ms); `flush` and
//! `pause` act through shared atomics the tick reads.
//!
//! Pacing: the group's `tokio::time::interval` uses `MissedTickBehavior::Burst`, so the
//! tick schedule never drifts (Delay would accumulate lateness into the RTP clock; Skip
//! would silently shorten our media relative to the timestamps). Short stalls are caught
//! up in a burst, which the far end's jitter buffer absorbs. A long stall (over
//! `MAX_CATCH_UP`) is not replayed: those ticks are skipped and the RTP timestamp jumps
//! by the same amount, so the far end hears a gap instead of falling behind for the rest
//! of the call.
//!
//! Receiving: sockets are never registered with tokio's reactor; each slot has its own
//! level-triggered epoll set, asked without waiting at the slot's tick which sockets hold
//! datagrams, and only those are read, one datagram per round until a round finds none.
//! Reading every socket until `EAGAIN` cost one fruitless system call per socket per tick.
//! A packet that arrives between ticks could not be played before the next tick anyway,
//! so playout is unchanged. What the tick time would lose, the arrival time that jitter
//! measurement, adaptive depth and RTCP depend on, comes from the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`). Where epoll is unavailable (a seccomp filter, a watch
//! limit) a stream falls back to reading its RTP socket until empty at each tick and its
//! RTCP socket every `RTCP_READ_TICKS` ticks and before each report it sends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use parking_lot::Mutex;
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
/// Datagrams read from the RTP socket per tick: far above the 1–2 a caller sends per 20 ms
/// (or a burst after a network stall), low enough that a flood on one port cannot keep the
/// thread from the other streams. What is left waits for the next tick or is dropped by the
/// kernel when the socket buffer fills.
const MAX_DATAGRAMS_PER_TICK: usize = 64;
/// Room for one `SCM_TIMESTAMPNS` control message (a 16-byte header and a timespec) with
/// generous slack.
const CONTROL_BUFFER: usize = 64;
/// Ticks between reads of the RTCP socket (200 ms).
const RTCP_READ_TICKS: u64 = 10;
/// Ticks between readings of the wall clock, which only converts kernel timestamps and
/// stamps our reports (200 ms); in between it is extrapolated from the monotonic clock.
const WALL_CLOCK_TICKS: u64 = 10;
/// Commands a stream handles per tick; the rest wait for the next one.
const COMMANDS_PER_TICK: usize = 32;

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
    /// Set after a command is queued: the group reads a stream's queue only when this
    /// says there is something in it, as the flag sits in a line each tick reads anyway.
    commands_pending: AtomicBool,
    /// Set by `pause`: queued audio is held until `resume` (or dropped by `flush`).
    paused: AtomicBool,
    /// Peak level of the audio sent at each tick, a ring indexed by `ticks`.
    sent_peaks: [AtomicU16; SENT_LEVEL_TICKS],
    ticks: AtomicU64,
}

/// A bound but not yet started stream: the local port is known (for the SDP answer) before
/// the remote side is.
pub struct MediaStream {
    rtp_socket: MediaSocket,
    rtcp_socket: MediaSocket,
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
        let rtp_socket = MediaSocket::bind(SocketAddr::new(local_ip, lease.rtp_port()))?;
        let rtcp_socket = MediaSocket::bind(SocketAddr::new(local_ip, lease.rtcp_port()))?;
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
            commands_pending: AtomicBool::new(false),
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
            polled: false,
        };
        TickGroup::join(task, &self.runtime);
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
        match self.commands.try_send(command) {
            // After the send: a stream that sees the flag finds the command queued.
            Ok(()) => self.shared.commands_pending.store(true, Ordering::Release),
            Err(error) => tracing::warn!(what, %error, "media command dropped"),
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
        let queued = self.commands.send(Command::Stop(reply_tx)).await.is_ok();
        self.shared.commands_pending.store(true, Ordering::Release);
        if queued && let Ok(stats) = reply_rx.await {
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

/// Where datagrams and their control messages are read. Aligned for the `cmsghdr` nix
/// reads from the start of `control`.
#[repr(C, align(8))]
struct ReceiveScratch {
    control: [u8; CONTROL_BUFFER],
    datagram: [u8; RECEIVE_BUFFER],
}

/// Time since the Unix epoch by the wall clock (zero if it is set before 1970).
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// An RTP or RTCP socket, outside the reactor: non-blocking, read at ticks, timestamped by
/// the kernel on arrival.
struct MediaSocket {
    socket: std::net::UdpSocket,
    /// Whether the kernel timestamps arrivals; if it refused, the read time stands in.
    kernel_timestamps: bool,
    /// When the socket was last read to empty: nothing read later can have arrived earlier,
    /// which bounds what a wall-clock step could do to converted timestamps.
    drained_at: Instant,
    /// The peer the socket is connected to (RTP only: the latched source while it sends).
    connected: Option<SocketAddr>,
}

/// One datagram read by [`MediaSocket::receive`].
struct Datagram {
    length: usize,
    from: SocketAddr,
    arrival: Instant,
}

impl MediaSocket {
    fn bind(address: SocketAddr) -> std::io::Result<MediaSocket> {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        let kernel_timestamps = match setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "no kernel receive timestamps; using read time");
                false
            }
        };
        Ok(MediaSocket {
            socket,
            kernel_timestamps,
            drained_at: Instant::now(),
            connected: None,
        })
    }

    /// Connects the socket to `peer`, or disconnects it (`None`); a system call only
    /// when that changes. The port stays bound across a disconnect because media
    /// sockets are bound to a numbered port (Linux would release an ephemeral one). A connected UDP socket sends without a route lookup per
    /// datagram (about 7 % of the media thread's CPU at 2,500 streams) and receives
    /// only from its peer. A failure leaves it unconnected, which costs only that.
    fn connect_to(&mut self, peer: Option<SocketAddr>) {
        if peer == self.connected {
            return;
        }
        let result = match peer {
            Some(peer) => self.socket.connect(peer),
            None => disconnect(&self.socket),
        };
        match result {
            Ok(()) => self.connected = peer,
            Err(error) => {
                tracing::debug!(%error, ?peer, "RTP socket (dis)connect failed");
                if disconnect(&self.socket).is_ok() {
                    self.connected = None;
                }
            }
        }
    }

    /// Reads one queued datagram into `scratch.datagram`, or `None` when the queue is
    /// empty. `now` and `wall_now` are one reading of both clocks, taken before the drain
    /// began, to turn the kernel's wall-clock timestamp into an `Instant`.
    fn receive(
        &mut self,
        scratch: &mut ReceiveScratch,
        now: Instant,
        wall_now: Duration,
    ) -> Option<std::io::Result<Datagram>> {
        let mut iov = [IoSliceMut::new(&mut scratch.datagram)];
        let control = self.kernel_timestamps.then_some(&mut scratch.control[..]);
        let message = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            control,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(message) => message,
            Err(Errno::EAGAIN) => {
                self.drained_at = now;
                return None;
            }
            Err(errno) => return Some(Err(errno.into())),
        };
        let from = message.address.as_ref().and_then(socket_address);
        let received_at = message.cmsgs().ok().and_then(|mut messages| {
            messages.find_map(|control| match control {
                ControlMessageOwned::ScmTimestampns(at) => Some(Duration::from(at)),
                _ => None,
            })
        });
        let length = message.bytes;
        let Some(from) = from else {
            return Some(Err(std::io::Error::other(
                "datagram without a source address",
            )));
        };
        // Age by the wall clock, applied to the monotonic one and kept inside the window
        // since the last drain, so a clock step can misplace a packet by at most a tick.
        let arrival = received_at
            .and_then(|at| now.checked_sub(wall_now.saturating_sub(at)))
            .map_or(now, |arrival| arrival.max(self.drained_at))
            .min(now);
        Some(Ok(Datagram {
            length,
            from,
            arrival,
        }))
    }

    fn send_to(&self, datagram: &[u8], destination: SocketAddr) -> std::io::Result<usize> {
        if self.connected == Some(destination) {
            return self.socket.send(datagram);
        }
        self.socket.send_to(datagram, destination)
    }
}

/// Dissolves a UDP socket's association (`connect` with `AF_UNSPEC`, which std does not
/// offer); the port stays bound.
fn disconnect(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    let unspecified = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid, initialised sockaddr of the stated length on an open descriptor.
    let result = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &unspecified,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn socket_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

struct StreamTask {
    session: RtpSession,
    rtp_socket: MediaSocket,
    rtcp_socket: MediaSocket,
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
    /// Registered with its slot's poller, which tells the group which sockets to read;
    /// otherwise both are read at every tick until empty.
    polled: bool,
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
    /// Handles the commands that arrived since the last tick, a bounded number so a flood
    /// cannot hold up the other streams; the rest wait for the next tick. `Some` once the
    /// stream must end: a `Stop` (with its reply) or every handle dropped.
    fn take_commands(&mut self) -> Option<Option<oneshot::Sender<RtpStats>>> {
        // Handles hold the only other references: none left means nobody can stop or
        // hear this stream any more.
        if Arc::strong_count(&self.shared) == 1 {
            return Some(None);
        }
        if !self.shared.commands_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        for _ in 0..COMMANDS_PER_TICK {
            match self.commands.try_recv() {
                Ok(Command::Stop(reply)) => return Some(Some(reply)),
                Ok(command) => self.on_command(command),
                Err(mpsc::error::TryRecvError::Disconnected) => return Some(None),
                Err(mpsc::error::TryRecvError::Empty) => return None,
            }
        }
        // More than one tick's share was queued: the rest next tick.
        self.shared.commands_pending.store(true, Ordering::Release);
        None
    }

    /// Publishes the final stats and answers `stop`. The recording is finalized off the
    /// group's task: the writer thread may still be flushing to a slow disk.
    fn finish(mut self, reply: Option<oneshot::Sender<RtpStats>>) {
        let final_stats = self.snapshot();
        *self.shared.stats.lock() = final_stats.clone();
        self.shared.playing.store(false, Ordering::Release);
        let recorder = self.recorder.take();
        // Sockets and the port lease go back now, not after the recording is written.
        drop(self);
        match recorder {
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(final_stats);
                }
            }
            Some(recorder) => {
                tokio::spawn(async move {
                    recorder.finish().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(final_stats);
                    }
                });
            }
        }
    }

    /// Feeds everything queued on the RTP socket to the session, stamped with its arrival.
    fn receive_rtp(&mut self, scratch: &mut ReceiveScratch, now: Instant, wall_now: Duration) {
        for _ in 0..MAX_DATAGRAMS_PER_TICK {
            match self.rtp_socket.receive(scratch, now, wall_now) {
                None => break,
                Some(Ok(datagram)) => {
                    let bytes = &scratch.datagram[..datagram.length.min(RECEIVE_BUFFER)];
                    self.on_rtp(bytes, datagram.from, datagram.arrival);
                }
                // ICMP errors and the like concern one datagram, not the socket.
                Some(Err(error)) => tracing::trace!(%error, "RTP receive failed"),
            }
        }
    }

    /// Feeds the RTCP reports that arrived since the last read to the session.
    fn receive_rtcp(&mut self, scratch: &mut ReceiveScratch, now: Instant, wall_now: Duration) {
        for _ in 0..MAX_DATAGRAMS_PER_TICK {
            match self.rtcp_socket.receive(scratch, now, wall_now) {
                None => break,
                Some(Ok(datagram)) => {
                    let bytes = &scratch.datagram[..datagram.length.min(RECEIVE_BUFFER)];
                    self.session
                        .handle_rtcp(bytes, datagram.from, datagram.arrival);
                }
                Some(Err(error)) => tracing::trace!(%error, "RTCP receive failed"),
            }
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

    fn on_rtp(&mut self, datagram: &[u8], from: SocketAddr, arrival: Instant) {
        if let PacketOutcome::Dtmf(Some(digit)) =
            self.session.handle_packet(datagram, from, arrival)
        {
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

    /// Reads one datagram from the socket the slot's poller found readable. `now` and
    /// `wall_now` are the slot's clock reading from before the poll.
    fn receive_ready(
        &mut self,
        rtcp: bool,
        scratch: &mut ReceiveScratch,
        now: Instant,
        wall_now: Duration,
    ) {
        let socket = if rtcp {
            &mut self.rtcp_socket
        } else {
            &mut self.rtp_socket
        };
        match socket.receive(scratch, now, wall_now) {
            None => {}
            Some(Ok(datagram)) => {
                let bytes = &scratch.datagram[..datagram.length.min(RECEIVE_BUFFER)];
                if rtcp {
                    self.session
                        .handle_rtcp(bytes, datagram.from, datagram.arrival);
                } else {
                    self.on_rtp(bytes, datagram.from, datagram.arrival);
                }
            }
            Some(Err(error)) => tracing::trace!(%error, rtcp, "receive failed"),
        }
    }

    /// One 20 ms tick of this stream: `scheduled` is when the group's tick was due and
    /// `clock_pair` the group's latest joint reading of the monotonic and wall clocks.
    /// For a polled stream the datagrams were already read; `drained_at` is when the
    /// poller last found both its sockets empty (`None`: it stopped early, on a flood).
    fn on_tick(
        &mut self,
        scheduled: Instant,
        clock_pair: (Instant, Duration),
        scratch: &mut ReceiveScratch,
        drained_at: Option<Instant>,
    ) {
        let now = Instant::now();
        if now.saturating_duration_since(scheduled) > LATE_TICK {
            self.late_ticks += 1;
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

        let tick = self.shared.ticks.load(Ordering::Relaxed);
        let (paired_at, paired_wall) = clock_pair;
        let wall_now = paired_wall + now.saturating_duration_since(paired_at);
        if self.polled {
            if let Some(at) = drained_at {
                self.rtp_socket.drained_at = at;
                self.rtcp_socket.drained_at = at;
            }
        } else {
            self.receive_rtp(scratch, now, wall_now);
            if tick.is_multiple_of(RTCP_READ_TICKS) || self.session.rtcp_due(now) {
                self.receive_rtcp(scratch, now, wall_now);
            }
        }

        self.rtp_socket
            .connect_to(self.session.connectable_peer(now));
        let output = self.session.on_tick(now);
        if let Some(packet) = output.outgoing {
            // The socket is non-blocking: a full buffer drops this packet, not the clock.
            if let Err(error) = self.rtp_socket.send_to(packet, output.destination) {
                tracing::trace!(%error, "RTP send failed");
            }
        }
        // Read by the echo detector; the media layer already sees both directions at the
        // same tick, which is the alignment echo detection needs.
        let sent_audio = output.sent_audio;
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
        if let Some((report, destination)) = self.session.poll_rtcp(now, UNIX_EPOCH + wall_now) {
            let _ = if self.session.negotiated().rtcp_mux {
                self.rtp_socket.send_to(&report, destination)
            } else {
                self.rtcp_socket.send_to(&report, destination)
            };
        }
        self.shared
            .playing
            .store(self.session.is_playing(), Ordering::Release);
        *self.shared.stats.lock() = self.snapshot();
    }
}

/// Streams one group's task drives at most: a tick of them all (a few microseconds each)
/// must stay short beside the 20 ms period and the other tasks sharing its thread.
const GROUP_CAPACITY: usize = 512;
/// Slots per 20 ms frame in a group (one every 2 ms).
const GROUP_SLOTS: usize = 10;

/// What starters share with a group's task: the streams waiting for its next tick.
struct GroupInbox {
    state: Mutex<GroupState>,
}

struct GroupState {
    arrivals: Vec<StreamTask>,
    /// Streams joined and not yet finished, arrivals included.
    members: usize,
    /// The task is gone (no stream left, or its runtime shut down): join another group.
    closed: bool,
}

thread_local! {
    /// The group streams started on this thread join until it is full or closed. Per thread,
    /// so a group never outlives the runtime of the thread that started its streams.
    static OPEN_GROUP: RefCell<Option<Arc<GroupInbox>>> = const { RefCell::new(None) };
}

/// Readiness of one slot's sockets (epoll, level-triggered, never blocking): one call
/// names the sockets holding datagrams, where reading every socket until `EAGAIN` costs a
/// system call per socket per tick that finds nothing, about a third of the receive cost.
struct SlotPoller {
    epoll: OwnedFd,
}

/// Events taken from a poller per call; a slot with more ready sockets takes several calls.
const POLL_EVENTS: usize = 128;

impl SlotPoller {
    fn new() -> std::io::Result<SlotPoller> {
        // SAFETY: plain epoll_create1; the descriptor is owned right away.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(SlotPoller { epoll })
    }

    fn add(&self, socket: &MediaSocket, token: u64) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open (borrowed for the call) and `event` is a live
        // epoll_event.
        let result = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.socket.as_raw_fd(),
                &mut event,
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Closing the socket would unregister it too; explicit, so a token can never outlive
    /// its stream whatever else holds the descriptor.
    fn remove(&self, socket: &MediaSocket) {
        // SAFETY: both descriptors are open; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket.socket.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// The ready sockets' tokens, without waiting.
    fn ready<'a>(
        &self,
        events: &'a mut [libc::epoll_event],
    ) -> std::io::Result<&'a [libc::epoll_event]> {
        let capacity = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the kernel writes at most `capacity` events into `events`.
        let count =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), capacity, 0) };
        if count < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(&events[..(count as usize).min(events.len())])
    }
}

/// The streams of one slot: a slab, so a stream's place (its poller token) stays put while
/// others come and go.
struct Slot {
    streams: Vec<Option<StreamTask>>,
    free: Vec<usize>,
    live: usize,
    /// `None` where epoll is unavailable (a seccomp filter, a watch limit): the slot's
    /// streams then read their sockets until empty at each tick.
    poller: Option<SlotPoller>,
}

impl Slot {
    fn new() -> Slot {
        #[cfg(test)]
        if tests::WITHOUT_POLLER.get() {
            return Slot {
                streams: Vec::new(),
                free: Vec::new(),
                live: 0,
                poller: None,
            };
        }
        let poller = match SlotPoller::new() {
            Ok(poller) => Some(poller),
            Err(error) => {
                tracing::debug!(%error, "no epoll for media; reading every socket per tick");
                None
            }
        };
        Slot {
            streams: Vec::new(),
            free: Vec::new(),
            live: 0,
            poller,
        }
    }

    fn insert(&mut self, mut stream: StreamTask) {
        let index = self.free.pop().unwrap_or(self.streams.len());
        // Bit 0 of a token tells RTCP from RTP; the rest is the stream's place.
        let token = (index as u64) << 1;
        stream.polled = self.poller.as_ref().is_some_and(|poller| {
            let registered = poller
                .add(&stream.rtp_socket, token)
                .and_then(|()| poller.add(&stream.rtcp_socket, token | 1));
            if let Err(error) = &registered {
                tracing::debug!(%error, "media sockets not polled; read at every tick");
                poller.remove(&stream.rtp_socket);
                poller.remove(&stream.rtcp_socket);
            }
            registered.is_ok()
        });
        match self.streams.get_mut(index) {
            Some(place) => *place = Some(stream),
            None => self.streams.push(Some(stream)),
        }
        self.live += 1;
    }

    fn remove(&mut self, index: usize) -> Option<StreamTask> {
        let stream = self.streams.get_mut(index)?.take()?;
        if stream.polled
            && let Some(poller) = &self.poller
        {
            poller.remove(&stream.rtp_socket);
            poller.remove(&stream.rtcp_socket);
        }
        self.free.push(index);
        self.live -= 1;
        Some(stream)
    }

    /// Reads what the poller reports ready, one datagram per ready socket per round, until
    /// a round finds nothing: when the last round came back empty, returns the time the
    /// slot's sockets were all seen empty. A socket still ready after
    /// [`MAX_DATAGRAMS_PER_TICK`] rounds (a flood) waits for the next tick, so it cannot
    /// keep the thread from the other streams.
    fn receive(
        &mut self,
        scratch: &mut ReceiveScratch,
        events: &mut [libc::epoll_event],
        now: Instant,
        wall_now: Duration,
    ) -> Option<Instant> {
        let poller = self.poller.as_ref()?;
        for _ in 0..MAX_DATAGRAMS_PER_TICK {
            let ready = match poller.ready(events) {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::trace!(%error, "media poll failed");
                    return None;
                }
            };
            if ready.is_empty() {
                return Some(now);
            }
            for event in ready {
                let token = event.u64;
                let place = (token >> 1) as usize;
                if let Some(Some(stream)) = self.streams.get_mut(place) {
                    stream.receive_ready(token & 1 == 1, scratch, now, wall_now);
                }
            }
        }
        None
    }
}

/// One task and one timer for many streams. The 20 ms frame is cut into [`GROUP_SLOTS`]
/// slots; each stream belongs to one slot and is read, played and sent when its slot comes
/// round. Per-stream tasks each had their own timer entry, wake-up and poll every 20 ms;
/// here that cost is paid once per slot, and the receive buffer is the group's. The slots
/// spread a group's streams over the frame, as per-stream timers started at random moments
/// would: a whole group due at one instant would make its last streams late by the time
/// the first ones took.
struct TickGroup {
    inbox: Arc<GroupInbox>,
    slots: [Slot; GROUP_SLOTS],
    scratch: Box<ReceiveScratch>,
    events: Vec<libc::epoll_event>,
}

impl TickGroup {
    fn new(first: StreamTask) -> (TickGroup, Arc<GroupInbox>) {
        let inbox = Arc::new(GroupInbox {
            state: Mutex::new(GroupState {
                arrivals: vec![first],
                members: 1,
                closed: false,
            }),
        });
        let group = TickGroup {
            inbox: Arc::clone(&inbox),
            slots: std::array::from_fn(|_| Slot::new()),
            scratch: Box::new(ReceiveScratch {
                control: [0; CONTROL_BUFFER],
                datagram: [0; RECEIVE_BUFFER],
            }),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; POLL_EVENTS],
        };
        (group, inbox)
    }

    /// Adds a stream to this thread's open group, or starts a group for it: on the current
    /// runtime when there is one, else on `fallback` (the runtime the stream was bound on).
    fn join(task: StreamTask, fallback: &tokio::runtime::Handle) {
        let Ok(current) = tokio::runtime::Handle::try_current() else {
            // Not a runtime thread: no group here to share.
            let (group, _) = TickGroup::new(task);
            fallback.spawn(group.run());
            return;
        };
        let mut task = Some(task);
        // An `Err` (the thread is exiting) or a re-entered borrow leaves the task with us.
        let _ = OPEN_GROUP.try_with(|open| {
            let Ok(mut open) = open.try_borrow_mut() else {
                return;
            };
            if let Some(inbox) = open.as_ref() {
                let mut state = inbox.state.lock();
                if !state.closed && state.members < GROUP_CAPACITY {
                    state.members += 1;
                    state.arrivals.extend(task.take());
                }
            }
            if let Some(task) = task.take() {
                let (group, inbox) = TickGroup::new(task);
                *open = Some(inbox);
                current.spawn(group.run());
            }
        });
        if let Some(task) = task {
            let (group, _) = TickGroup::new(task);
            current.spawn(group.run());
        }
    }

    /// The group's clock: `Burst` keeps the schedule drift-free (see the module comment);
    /// a stall beyond [`MAX_CATCH_UP`] is skipped rather than replayed, in whole frames so
    /// every slot keeps its place in the frame.
    async fn run(mut self) {
        let slot_period = FRAME_DURATION / GROUP_SLOTS as u32;
        let mut interval = tokio::time::interval(slot_period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut clock_pair = (Instant::now(), wall_clock());
        let mut slot_ticks: u64 = 0;
        loop {
            let scheduled = interval.tick().await;
            let lag = TokioInstant::now().saturating_duration_since(scheduled);
            if lag > MAX_CATCH_UP {
                let skipped = (lag.as_micros() / FRAME_DURATION.as_micros()) as u32;
                for stream in self
                    .slots
                    .iter_mut()
                    .flat_map(|slot| slot.streams.iter_mut().flatten())
                {
                    stream.session.skip_ticks(skipped);
                }
                interval.reset_at(scheduled + FRAME_DURATION * skipped + slot_period);
            }
            if !self.admit_arrivals() {
                return;
            }
            let frame_ticks = slot_ticks / GROUP_SLOTS as u64;
            let slot_index = (slot_ticks % GROUP_SLOTS as u64) as usize;
            if slot_index == 0 && frame_ticks.is_multiple_of(WALL_CLOCK_TICKS) {
                clock_pair = (Instant::now(), wall_clock());
            }
            slot_ticks += 1;
            self.tick_slot(slot_index, scheduled.into_std(), clock_pair);
        }
    }

    fn tick_slot(
        &mut self,
        slot_index: usize,
        scheduled: Instant,
        clock_pair: (Instant, Duration),
    ) {
        let slot = &mut self.slots[slot_index];
        let mut finished = 0;
        for place in 0..slot.streams.len() {
            if let Some(Some(stream)) = slot.streams.get_mut(place)
                && let Some(reply) = stream.take_commands()
                && let Some(stream) = slot.remove(place)
            {
                stream.finish(reply);
                finished += 1;
            }
        }
        if finished > 0 {
            let mut state = self.inbox.state.lock();
            state.members = state.members.saturating_sub(finished);
        }
        let read_at = Instant::now();
        let (paired_at, paired_wall) = clock_pair;
        let wall_now = paired_wall + read_at.saturating_duration_since(paired_at);
        let drained_at = slot.receive(&mut self.scratch, &mut self.events, read_at, wall_now);
        for stream in slot.streams.iter_mut().flatten() {
            stream.on_tick(scheduled, clock_pair, &mut self.scratch, drained_at);
        }
    }

    /// Places the streams started since the last slot tick, each in the emptiest slot.
    /// False once no stream is left: the group is closed under the same lock starters
    /// take, so none can join it afterwards.
    fn admit_arrivals(&mut self) -> bool {
        let mut state = self.inbox.state.lock();
        for stream in state.arrivals.drain(..) {
            if let Some(emptiest) = self.slots.iter_mut().min_by_key(|slot| slot.live) {
                emptiest.insert(stream);
            }
        }
        if self.slots.iter().all(|slot| slot.live == 0) {
            state.closed = true;
            return false;
        }
        true
    }
}

impl Drop for TickGroup {
    /// Runs when the task ends, also when its runtime shuts down with streams still in it:
    /// streams that joined meanwhile must not wait for a tick that never comes.
    fn drop(&mut self) {
        let orphans = {
            let mut state = self.inbox.state.lock();
            state.closed = true;
            std::mem::take(&mut state.arrivals)
        };
        drop(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::super::g711;
    use super::super::ports::PortAllocator;
    use super::super::rtp::{RtpHeader, RtpPacket, write_packet};
    use super::super::sdp::{Codec, Direction};
    use super::*;
    use tokio::net::UdpSocket;

    thread_local! {
        /// Groups started on this thread get no epoll sets: the path taken where epoll is
        /// unavailable.
        pub(super) static WITHOUT_POLLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Streams in this thread's open group (none open: 0).
    fn open_group_members() -> usize {
        OPEN_GROUP.with_borrow(|open| {
            open.as_ref().map_or(0, |inbox| {
                let state = inbox.state.lock();
                if state.closed { 0 } else { state.members }
            })
        })
    }

    /// A steady caller at 30 ms intervals plus one RTCP report: every packet is read, the
    /// kernel timestamps keep the jitter low, the report is counted.
    async fn caller_is_heard(allocator: &PortAllocator) {
        let stream = bind_any(allocator, MediaConfig::default()).await;
        let target = SocketAddr::new("127.0.0.1".parse().expect("ip"), stream.local_rtp_port());
        let rtcp_target = SocketAddr::new(target.ip(), target.port() + 1);
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let (handle, _events) =
            stream.start(negotiated_towards(peer.local_addr().expect("addr")), None);
        let report =
            super::super::rtcp::build_report(0xCA11, "caller", None, None, SystemTime::now())
                .expect("report");
        peer.send_to(&report, rtcp_target).await.expect("send");
        let mut buffer = [0u8; 200];
        let payload = [g711::linear_to_ulaw(1000); 160];
        let mut grid = tokio::time::interval(Duration::from_millis(30));
        // The sender's own jitter (RFC 3550's estimator over its send times):
        // on a loaded machine this task is late too, and that is real jitter.
        let mut sender_jitter_ms = 0.0f64;
        let mut last_sent: Option<std::time::Instant> = None;
        for seq in 0..30u16 {
            grid.tick().await;
            let now = std::time::Instant::now();
            if let Some(last) = last_sent {
                let deviation = (now - last).as_secs_f64() * 1000.0 - 30.0;
                sender_jitter_ms += (deviation.abs() - sender_jitter_ms) / 16.0;
            }
            last_sent = Some(now);
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: seq as u32 * 240,
                ssrc: 0xACE,
            };
            let length = write_packet(&header, &payload, &mut buffer).expect("fits");
            peer.send_to(&buffer[..length], target).await.expect("send");
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stats = handle.stop().await;
        assert_eq!(stats.packets_received, 30, "{stats:?}");
        assert_eq!(stats.rtcp_received, 1, "{stats:?}");
        // Reading once per 20 ms tick without kernel timestamps would show
        // ~6–7 ms here; with them, only what the sender itself adds.
        assert!(
            stats.jitter_ms < 5.0 + sender_jitter_ms,
            "sender jitter {sender_jitter_ms:.2} ms: {stats:?}"
        );
    }

    #[tokio::test]
    async fn without_epoll_streams_read_every_socket_at_each_tick() {
        WITHOUT_POLLER.set(true);
        let allocator = PortAllocator::new(41000, 41099);
        caller_is_heard(&allocator).await;
    }

    #[tokio::test]
    async fn polled_streams_hear_the_caller() {
        let allocator = PortAllocator::new(41100, 41199);
        caller_is_heard(&allocator).await;
    }

    #[tokio::test]
    async fn streams_share_a_group_which_closes_when_the_last_one_ends() {
        let allocator = PortAllocator::new(41200, 41299);
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let towards = negotiated_towards(peer.local_addr().expect("addr"));
        let mut handles = Vec::new();
        for _ in 0..3 {
            let stream = bind_any(&allocator, MediaConfig::default()).await;
            handles.push(stream.start(towards.clone(), None));
        }
        assert_eq!(open_group_members(), 3);
        handles[0].0.play(Arc::from(vec![3000i16; 8000]));
        let _ = recv_rtp(&peer).await;

        // Dropping every handle ends a stream as `stop` does, ports and all.
        drop(handles.pop());
        let (stopped, _events) = handles.remove(0);
        let stats = stopped.stop().await;
        assert!(stats.packets_sent >= 1, "{stats:?}");
        tokio::time::sleep(FRAME_DURATION * 3).await;
        assert_eq!(open_group_members(), 1);
        assert_eq!(allocator.in_use(), 1);
        handles.clear();
        tokio::time::sleep(FRAME_DURATION * 3).await;
        assert_eq!(open_group_members(), 0, "the empty group closed");
        assert_eq!(allocator.in_use(), 0);

        // A stream started afterwards gets a new group and runs.
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let (handle, _events) = stream.start(towards, None);
        assert_eq!(open_group_members(), 1);
        handle.play(Arc::from(vec![3000i16; 800]));
        let packet = recv_rtp(&peer).await;
        assert_eq!(
            RtpPacket::parse(&packet).expect("rtp").payload.len(),
            FRAME_SAMPLES
        );
        handle.stop().await;
    }

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

    /// Sends `count` paced audio packets of `ssrc` from `from` to `target`, from `seq`.
    async fn send_audio(from: &UdpSocket, target: SocketAddr, ssrc: u32, seq: u16, count: u16) {
        let mut buffer = [0u8; 200];
        let payload = [g711::linear_to_ulaw(-3000); 160];
        for seq in seq..seq + count {
            let header = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc,
            };
            let length = write_packet(&header, &payload, &mut buffer).expect("fits");
            from.send_to(&buffer[..length], target).await.expect("send");
            tokio::time::sleep(FRAME_DURATION).await;
        }
    }

    /// The RTP socket is connected to the latched caller while they send (no route
    /// lookup per packet sent): a third party's packets are not taken, and when the
    /// caller's address changes (a NAT rebinding) the stream still follows them.
    #[tokio::test]
    async fn a_connected_stream_ignores_strangers_and_follows_a_rebound_caller() {
        let allocator = PortAllocator::new(45000, 45999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let target = SocketAddr::new("127.0.0.1".parse().expect("ip"), stream.local_rtp_port());
        let caller = UdpSocket::bind("127.0.0.1:0").await.expect("caller");
        let caller_addr = caller.local_addr().expect("addr");
        let (handle, _events) = stream.start(negotiated_towards(caller_addr), None);
        handle.play(Arc::from(vec![4000i16; 8000 * 10]));

        send_audio(&caller, target, 0xCA11, 0, 10).await;
        let _ = recv_rtp(&caller).await;
        // A stranger with another SSRC, while the caller is still sending.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("stranger");
        let strange = send_audio(&stranger, target, 0xBAD, 0, 10);
        let still = send_audio(&caller, target, 0xCA11, 10, 10);
        tokio::join!(strange, still);
        assert_eq!(handle.stats().remote_addr, Some(caller_addr));
        let mut buffer = [0u8; 1500];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), stranger.recv_from(&mut buffer))
                .await
                .is_err(),
            "nothing is sent to a stranger"
        );

        // The caller's NAT rebinds: the same SSRC from a new port after a pause.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rebound = UdpSocket::bind("127.0.0.1:0").await.expect("rebound");
        let rebound_addr = rebound.local_addr().expect("addr");
        send_audio(&rebound, target, 0xCA11, 20, 10).await;
        let packet = recv_rtp(&rebound).await;
        assert!(RtpPacket::parse(&packet).is_ok());
        assert_eq!(handle.stats().remote_addr, Some(rebound_addr));
        handle.stop().await;
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

    #[test]
    fn datagrams_read_at_a_tick_carry_their_kernel_arrival_time() {
        let mut socket = MediaSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert!(socket.kernel_timestamps, "Linux timestamps UDP arrivals");
        let local = socket.socket.local_addr().expect("addr");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.send_to(b"first", local).expect("send");
        std::thread::sleep(Duration::from_millis(30));
        peer.send_to(b"second", local).expect("send");
        std::thread::sleep(Duration::from_millis(20));

        let (now, wall_now) = (Instant::now(), wall_clock());
        let mut scratch = ReceiveScratch {
            control: [0; CONTROL_BUFFER],
            datagram: [0; RECEIVE_BUFFER],
        };
        let first = socket
            .receive(&mut scratch, now, wall_now)
            .expect("queued")
            .expect("read");
        assert_eq!(&scratch.datagram[..first.length], b"first");
        assert_eq!(first.from, peer.local_addr().expect("addr"));
        let second = socket
            .receive(&mut scratch, now, wall_now)
            .expect("queued")
            .expect("read");
        assert_eq!(&scratch.datagram[..second.length], b"second");
        assert!(socket.receive(&mut scratch, now, wall_now).is_none());
        assert_eq!(socket.drained_at, now);

        // Both were read at the same moment, yet keep the 30 ms between their arrivals;
        // the read time would have made them simultaneous.
        let apart = second.arrival - first.arrival;
        assert!(
            apart >= Duration::from_millis(25) && apart <= Duration::from_millis(45),
            "{apart:?}"
        );
        let waited = now - second.arrival;
        assert!(waited >= Duration::from_millis(15), "{waited:?}");
        assert!(second.arrival <= now);
    }

    #[test]
    fn a_socket_connects_to_its_peer_and_disconnects_keeping_its_port() {
        // A port of its own, as leases give (Linux keeps an ephemeral port only while
        // connected; a port bound by number stays bound).
        let mut socket = loop {
            let free = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
            let address = free.local_addr().expect("addr");
            drop(free);
            if let Ok(socket) = MediaSocket::bind(address) {
                break socket;
            }
        };
        let local = socket.socket.local_addr().expect("addr");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        let peer_addr = peer.local_addr().expect("addr");
        peer.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut buffer = [0u8; 64];

        socket.connect_to(Some(peer_addr));
        assert_eq!(socket.socket.peer_addr().expect("connected"), peer_addr);
        socket.send_to(b"connected", peer_addr).expect("send");
        let (length, from) = peer.recv_from(&mut buffer).expect("received");
        assert_eq!((&buffer[..length], from), (&b"connected"[..], local));

        socket.connect_to(None);
        assert!(socket.socket.peer_addr().is_err(), "disconnected");
        assert_eq!(socket.socket.local_addr().expect("bound"), local);
        socket.send_to(b"unconnected", peer_addr).expect("send");
        let (length, _) = peer.recv_from(&mut buffer).expect("received");
        assert_eq!(&buffer[..length], b"unconnected");
    }

    #[test]
    fn a_wall_clock_step_cannot_place_an_arrival_outside_the_last_tick() {
        let mut socket = MediaSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let local = socket.socket.local_addr().expect("addr");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        let mut scratch = ReceiveScratch {
            control: [0; CONTROL_BUFFER],
            datagram: [0; RECEIVE_BUFFER],
        };
        let previous_tick = Instant::now();
        assert!(
            socket
                .receive(&mut scratch, previous_tick, wall_clock())
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(5));

        // The wall clock jumped forward an hour since the packet arrived: at most the
        // previous drain.
        peer.send_to(b"stepped", local).expect("send");
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let ahead = wall_clock() + Duration::from_secs(3600);
        let datagram = socket
            .receive(&mut scratch, now, ahead)
            .expect("queued")
            .expect("read");
        assert_eq!(datagram.arrival, previous_tick);

        // It jumped back: never later than the read.
        peer.send_to(b"stepped", local).expect("send");
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let behind = wall_clock() - Duration::from_secs(3600);
        let datagram = socket
            .receive(&mut scratch, now, behind)
            .expect("queued")
            .expect("read");
        assert_eq!(datagram.arrival, now);
    }

    #[tokio::test]
    async fn steady_caller_measures_low_jitter_although_read_once_per_tick() {
        let allocator = PortAllocator::new(43000, 43999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let target = SocketAddr::new("127.0.0.1".parse().expect("ip"), stream.local_rtp_port());
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let (handle, _events) =
            stream.start(negotiated_towards(peer.local_addr().expect("addr")), None);
        let mut buffer = [0u8; 200];
        let payload = [g711::linear_to_ulaw(1000); 160];
        // A 30 ms packet interval against the 20 ms tick: read-time stamps would land on
        // the tick grid, 20 and 40 ms apart, and measure about 10 ms of jitter.
        let mut grid = tokio::time::interval(Duration::from_millis(30));
        // The jitter the sender itself produced (RFC 3550's estimator over
        // its own send times): on a busy machine the sends are not exactly
        // 30 ms apart either, and that is real jitter the stream must report.
        let mut sent_jitter = 0f64;
        let mut last_send: Option<std::time::Instant> = None;
        for seq in 0..40u16 {
            grid.tick().await;
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: seq as u32 * 240,
                ssrc: 0xACE,
            };
            let length = write_packet(&header, &payload, &mut buffer).expect("fits");
            peer.send_to(&buffer[..length], target).await.expect("send");
            let now = std::time::Instant::now();
            if let Some(previous) = last_send.replace(now) {
                let spacing_ms = now.duration_since(previous).as_secs_f64() * 1e3;
                sent_jitter += ((spacing_ms - 30.0).abs() - sent_jitter) / 16.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stats = handle.stop().await;
        assert_eq!(stats.packets_received, 40);
        // Read-time stamps would add ~10 ms on top of what was sent.
        assert!(
            stats.jitter_ms < sent_jitter + 4.0,
            "sent with {sent_jitter:.2} ms of jitter: {stats:?}"
        );
    }

    #[tokio::test]
    async fn rtcp_from_the_caller_is_read_within_a_read_interval() {
        let allocator = PortAllocator::new(42000, 42999);
        let stream = bind_any(&allocator, MediaConfig::default()).await;
        let rtcp_target = SocketAddr::new(
            "127.0.0.1".parse().expect("ip"),
            stream.local_rtp_port() + 1,
        );
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let (handle, _events) =
            stream.start(negotiated_towards(peer.local_addr().expect("addr")), None);
        let sender = super::super::rtcp::SenderInfo {
            packets: 10,
            octets: 1600,
            rtp_timestamp: 1600,
        };
        let report = super::super::rtcp::build_report(
            0xCA11,
            "caller",
            Some(sender),
            None,
            SystemTime::now(),
        )
        .expect("report");
        peer.send_to(&report, rtcp_target).await.expect("send");
        peer.send_to(b"not rtcp", rtcp_target).await.expect("send");
        let read_interval = FRAME_DURATION * RTCP_READ_TICKS as u32;
        tokio::time::sleep(read_interval + Duration::from_millis(60)).await;
        let stats = handle.stats();
        assert_eq!(stats.rtcp_received, 1, "{stats:?}");
        assert_eq!(stats.garbage_datagrams, 1, "{stats:?}");
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
