//! Sans-IO RTP session: one call's media state, driven by datagrams and 20 ms ticks.
//!
//! [`RtpSession`] owns the jitter buffer, codecs, DTMF, RTCP statistics and the outgoing
//! audio queue, and never touches a socket or the clock. The async shell in
//! [`super::stream`] feeds it `(bytes, from, now)` and calls [`RtpSession::on_tick`] every
//! 20 ms, sending whatever packet the tick produced. Because the outgoing queue lives here,
//! [`RtpSession::flush`] drops audio that has not yet been packetised: barge-in cuts the
//! prompt within one tick.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::dtmf::{DtmfDigit, DtmfReceiver, DtmfSender};
use super::g711;
use super::jitter::{JitterBuffer, JitterConfig, LossConcealer, Playout};
use super::rtcp::{self, ReceiveStatistics, SenderInfo};
use super::rtp::{RTP_HEADER_LEN, RtpError, RtpHeader, RtpPacket};
use super::sdp::{Codec, Negotiated};
use super::{FRAME_SAMPLES, Frame};

/// Outgoing prompt chunks queued at once; beyond this `play` refuses (the engine is looping).
const MAX_QUEUED_CHUNKS: usize = 4096;
/// DTMF digits queued at once.
const MAX_QUEUED_DTMF: usize = 32;
/// After this much silence from the latched address, the same SSRC may move (NAT rebinding).
const RELATCH_SAME_SSRC_AFTER: Duration = Duration::from_millis(200);
/// After this much silence, any source may take over (e.g. an SBC re-anchored the media).
const RELATCH_ANY_SOURCE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Report [`TickOutput::inactive_for`] after this long without RTP while we expect it.
    pub inactivity_timeout: Duration,
    pub jitter: JitterConfig,
    pub rtcp_interval: Duration,
    /// Send encoded silence when nothing is queued, so NAT bindings and far-end RTP timeouts
    /// stay alive (many trunks hang up on one-way silence otherwise).
    pub comfort_silence: bool,
    pub cname: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            inactivity_timeout: Duration::from_secs(30),
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(5),
            comfort_silence: true,
            cname: "frontdoor".into(),
        }
    }
}

/// A snapshot of a stream's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RtpStats {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Cumulative loss per RFC 3550 (can be negative with duplicates).
    pub packets_lost: i64,
    pub jitter_ms: f64,
    pub late_packets: u64,
    pub duplicate_packets: u64,
    /// Datagrams that were not valid RTP/RTCP.
    pub garbage_datagrams: u64,
    /// Valid RTP from an address other than the latched one, or an unexpected payload type.
    pub ignored_packets: u64,
    pub concealed_frames: u64,
    /// Samples of queued audio actually sent (excluding comfort silence).
    pub samples_sent: u64,
    /// Queued samples dropped by `flush` (barge-in).
    pub samples_flushed: u64,
    pub dtmf_received: u64,
    pub rtcp_received: u64,
    pub rtcp_sent: u64,
    /// Where we currently send RTP: the latched source if any, else the SDP address.
    pub remote_addr: Option<SocketAddr>,
    /// Ticks the async shell ran late (filled in by the shell).
    pub late_ticks: u64,
    /// Events the shell could not deliver because the consumer was not keeping up.
    pub events_dropped: u64,
}

/// What [`RtpSession::handle_packet`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketOutcome {
    Audio,
    /// A telephone-event packet; carries the digit when a key press completed.
    Dtmf(Option<DtmfDigit>),
    Rtcp,
    Ignored(IgnoreReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    Malformed(RtpError),
    MalformedRtcp,
    WrongSource,
    UnexpectedPayloadType(u8),
    /// Audio arrived while we are not receiving (we are sendonly/inactive).
    NotReceiving,
    Late,
    Duplicate,
}

/// The result of one 20 ms tick; references borrow the session's reusable buffers.
#[derive(Debug)]
pub struct TickOutput<'a> {
    /// Caller audio for this tick (real or concealed); `None` while nothing flows.
    pub received: Option<&'a Frame>,
    /// An RTP packet to send to `destination`.
    pub outgoing: Option<&'a [u8]>,
    pub destination: SocketAddr,
    /// The PCM we sent this tick (for recording); `None` if we sent no audio.
    pub sent_audio: Option<&'a Frame>,
    /// The outgoing queue ran dry this tick after sending queued audio.
    pub playback_finished: bool,
    /// A key press whose end packets were lost, reported after a timeout.
    pub dtmf: Option<DtmfDigit>,
    /// Set once per silent spell when no RTP arrived for the inactivity timeout.
    pub inactive_for: Option<Duration>,
}

/// One call's RTP state machine.
pub struct RtpSession {
    negotiated: Negotiated,
    config: SessionConfig,
    local_ssrc: u32,

    next_sequence: u16,
    next_timestamp: u32,
    marker_pending: bool,
    queue: VecDeque<Arc<[i16]>>,
    queue_offset: usize,
    queued_samples: usize,
    /// Queued audio is held (not sent, not dropped) while set: a provisional barge-in.
    paused: bool,
    dtmf_queue: VecDeque<(char, Duration)>,
    dtmf_sender: Option<DtmfSender>,
    out_packet: [u8; RTP_HEADER_LEN + FRAME_SAMPLES],
    sent_frame: Frame,
    sent_since_report: bool,

    latched: Option<SocketAddr>,
    latched_ssrc: Option<u32>,
    latched_last_seen: Option<Instant>,
    rtcp_latched: Option<SocketAddr>,
    jitter: JitterBuffer,
    concealer: LossConcealer,
    received_frame: Frame,
    receive_stats: ReceiveStatistics,
    dtmf_receiver: DtmfReceiver,
    inactivity_since: Instant,
    inactivity_reported: bool,
    next_rtcp: Instant,

    stats: RtpStats,
}

fn decode_into(codec: Codec, payload: &[u8], out: &mut Frame) {
    let written = match codec {
        Codec::Pcmu => g711::decode_ulaw(payload, out),
        Codec::Pcma => g711::decode_alaw(payload, out),
    };
    out[written..].fill(0);
}

impl RtpSession {
    /// `local_ssrc`, `initial_sequence` and `initial_timestamp` should be random (RFC 3550
    /// §5.1); they are parameters so tests are deterministic.
    pub fn new(
        negotiated: Negotiated,
        config: SessionConfig,
        local_ssrc: u32,
        initial_sequence: u16,
        initial_timestamp: u32,
        now: Instant,
    ) -> Self {
        let jitter = JitterBuffer::new(config.jitter);
        let next_rtcp = now + config.rtcp_interval;
        RtpSession {
            negotiated,
            config,
            local_ssrc,
            next_sequence: initial_sequence,
            next_timestamp: initial_timestamp,
            marker_pending: true,
            queue: VecDeque::new(),
            queue_offset: 0,
            queued_samples: 0,
            paused: false,
            dtmf_queue: VecDeque::new(),
            dtmf_sender: None,
            out_packet: [0; RTP_HEADER_LEN + FRAME_SAMPLES],
            sent_frame: [0; FRAME_SAMPLES],
            sent_since_report: false,
            latched: None,
            latched_ssrc: None,
            latched_last_seen: None,
            rtcp_latched: None,
            jitter,
            concealer: LossConcealer::default(),
            received_frame: [0; FRAME_SAMPLES],
            receive_stats: ReceiveStatistics::default(),
            dtmf_receiver: DtmfReceiver::default(),
            inactivity_since: now,
            inactivity_reported: false,
            next_rtcp,
            stats: RtpStats::default(),
        }
    }

    pub fn local_ssrc(&self) -> u32 {
        self.local_ssrc
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Where RTP goes now: the latched source (symmetric RTP) or the SDP address.
    pub fn destination(&self) -> SocketAddr {
        self.latched.unwrap_or(self.negotiated.remote_rtp)
    }

    /// The source RTP is latched to, while it keeps sending: the stream connects its
    /// socket to it, so the kernel skips a route lookup for every packet sent and drops
    /// datagrams from anyone else before they cost a read. `None` once the source has
    /// been quiet for [`RELATCH_SAME_SSRC_AFTER`] (the socket is then disconnected), so
    /// a rebound NAT or a re-anchored SBC can still take over as before.
    pub fn connectable_peer(&self, now: Instant) -> Option<SocketAddr> {
        let last_seen = self.latched_last_seen?;
        (now.saturating_duration_since(last_seen) < RELATCH_SAME_SSRC_AFTER)
            .then_some(self.latched?)
    }

    fn rtcp_destination(&self) -> SocketAddr {
        if self.negotiated.rtcp_mux {
            return self.destination();
        }
        self.rtcp_latched.unwrap_or(self.negotiated.remote_rtcp)
    }

    /// Queues audio for paced sending. Returns false if the queue is full.
    pub fn play(&mut self, samples: Arc<[i16]>) -> bool {
        if samples.is_empty() {
            return true;
        }
        if self.queue.len() >= MAX_QUEUED_CHUNKS {
            return false;
        }
        self.queued_samples += samples.len();
        self.queue.push_back(samples);
        true
    }

    /// Drops all queued outgoing audio (barge-in); returns how many samples were dropped.
    pub fn flush(&mut self) -> usize {
        let dropped = self.queued_samples;
        self.queue.clear();
        self.queue_offset = 0;
        self.queued_samples = 0;
        self.stats.samples_flushed += dropped as u64;
        dropped
    }

    /// Holds or releases the queued audio. While paused, ticks send comfort silence and
    /// the queue keeps its place, so resuming continues from the exact sample it stopped at.
    pub fn set_paused(&mut self, paused: bool) {
        if paused != self.paused {
            self.paused = paused;
            // Resumed audio starts a new talkspurt.
            self.marker_pending = true;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn is_playing(&self) -> bool {
        self.queued_samples > 0
    }

    pub fn queued_samples(&self) -> usize {
        self.queued_samples
    }

    /// Queues an RFC 4733 digit. False if no telephone-event was negotiated, the digit is
    /// not a DTMF key, or too many digits are queued.
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) -> bool {
        if self.negotiated.dtmf_payload_type.is_none()
            || super::dtmf::digit_to_event(digit).is_none()
            || self.dtmf_queue.len() >= MAX_QUEUED_DTMF
        {
            return false;
        }
        self.dtmf_queue.push_back((digit, duration));
        true
    }

    /// Applies a re-negotiation (re-INVITE): hold/resume, codec change or new remote.
    pub fn update(&mut self, negotiated: Negotiated, now: Instant) {
        let remote_changed = negotiated.remote_rtp != self.negotiated.remote_rtp;
        let was_receiving = self.negotiated.direction.receives();
        if remote_changed {
            self.latched = None;
            self.latched_ssrc = None;
            self.latched_last_seen = None;
            self.rtcp_latched = None;
            self.jitter.reset();
        }
        if negotiated.direction.receives() && (!was_receiving || remote_changed) {
            // Inactivity is measured from the moment we start expecting media again.
            self.inactivity_since = now;
            self.inactivity_reported = false;
        }
        if negotiated.codec != self.negotiated.codec || !negotiated.direction.sends() {
            self.marker_pending = true;
        }
        self.negotiated = negotiated;
    }

    /// Processes one datagram received on the RTP socket (or RTCP, with rtcp-mux).
    pub fn handle_packet(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> PacketOutcome {
        let packet = match RtpPacket::parse(datagram) {
            Ok(packet) => packet,
            Err(RtpError::RtcpOnRtpPort(_)) if self.negotiated.rtcp_mux => {
                return self.handle_rtcp(datagram, from, now);
            }
            Err(error) => {
                self.stats.garbage_datagrams += 1;
                return PacketOutcome::Ignored(IgnoreReason::Malformed(error));
            }
        };
        let payload_type = packet.payload_type;
        let is_dtmf = Some(payload_type) == self.negotiated.dtmf_payload_type;
        let audio_codec = if payload_type == self.negotiated.payload_type {
            Some(self.negotiated.codec)
        } else {
            // Some gateways switch between PCMU and PCMA mid-call without a re-INVITE.
            Codec::from_static_payload_type(payload_type)
        };
        if !is_dtmf && audio_codec.is_none() {
            self.stats.ignored_packets += 1;
            return PacketOutcome::Ignored(IgnoreReason::UnexpectedPayloadType(payload_type));
        }
        if !self.accept_source(from, packet.ssrc, now) {
            self.stats.ignored_packets += 1;
            return PacketOutcome::Ignored(IgnoreReason::WrongSource);
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        self.inactivity_since = now;
        self.inactivity_reported = false;
        self.receive_stats
            .on_packet(packet.ssrc, packet.sequence, packet.timestamp, now);

        if is_dtmf {
            let digit = self
                .dtmf_receiver
                .on_packet(packet.timestamp, packet.payload, now);
            if digit.is_some() {
                self.stats.dtmf_received += 1;
            }
            return PacketOutcome::Dtmf(digit);
        }
        if !self.negotiated.direction.receives() {
            return PacketOutcome::Ignored(IgnoreReason::NotReceiving);
        }
        match self.jitter.push(
            packet.ssrc,
            packet.sequence,
            packet.timestamp,
            payload_type,
            packet.payload,
            now,
        ) {
            super::jitter::PushOutcome::Late => PacketOutcome::Ignored(IgnoreReason::Late),
            super::jitter::PushOutcome::Duplicate => {
                PacketOutcome::Ignored(IgnoreReason::Duplicate)
            }
            _ => PacketOutcome::Audio,
        }
    }

    /// Symmetric RTP: latch onto the first valid source, move only when it has gone quiet.
    fn accept_source(&mut self, from: SocketAddr, ssrc: u32, now: Instant) -> bool {
        let accept = match (self.latched, self.latched_last_seen) {
            (Some(latched), _) if latched == from => true,
            (Some(_), Some(last_seen)) => {
                let quiet = now.saturating_duration_since(last_seen);
                (self.latched_ssrc == Some(ssrc) && quiet >= RELATCH_SAME_SSRC_AFTER)
                    || quiet >= RELATCH_ANY_SOURCE_AFTER
            }
            _ => true,
        };
        if accept {
            if self.latched != Some(from) {
                tracing::debug!(%from, ssrc, "RTP latched to source");
            }
            self.latched = Some(from);
            self.latched_ssrc = Some(ssrc);
            self.latched_last_seen = Some(now);
        }
        accept
    }

    /// Processes one RTCP datagram (from the RTCP socket, or demultiplexed with rtcp-mux).
    pub fn handle_rtcp(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> PacketOutcome {
        match rtcp::parse_rtcp(datagram, self.local_ssrc) {
            Ok(summary) => {
                self.stats.rtcp_received += 1;
                if let Some(ntp) = summary.sender_report_ntp {
                    self.receive_stats.on_sender_report(ntp, now);
                }
                if !self.negotiated.rtcp_mux {
                    self.rtcp_latched = Some(from);
                }
                PacketOutcome::Rtcp
            }
            Err(_) => {
                self.stats.garbage_datagrams += 1;
                PacketOutcome::Ignored(IgnoreReason::MalformedRtcp)
            }
        }
    }

    /// Skips `ticks` send slots without sending (the shell fell far behind): the RTP clock
    /// must still follow real time, so the far end sees a gap rather than a delay.
    pub fn skip_ticks(&mut self, ticks: u32) {
        self.next_timestamp = self
            .next_timestamp
            .wrapping_add(ticks.wrapping_mul(FRAME_SAMPLES as u32));
        self.marker_pending = true;
    }

    /// Advances the session by one 20 ms tick.
    pub fn on_tick(&mut self, now: Instant) -> TickOutput<'_> {
        let received = self.receive_tick(now);
        let dtmf = self.dtmf_receiver.poll(now);
        if dtmf.is_some() {
            self.stats.dtmf_received += 1;
        }
        let inactive_for = self.check_inactivity(now);
        let (outgoing_len, sent_audio, playback_finished) = self.send_tick();
        let destination = self.destination();
        let deliverable =
            outgoing_len > 0 && !destination.ip().is_unspecified() && destination.port() != 0;
        if deliverable {
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += outgoing_len as u64;
            self.sent_since_report = true;
        }
        TickOutput {
            received: received.then_some(&self.received_frame),
            outgoing: deliverable.then(|| &self.out_packet[..outgoing_len]),
            destination,
            sent_audio: sent_audio.then_some(&self.sent_frame),
            playback_finished,
            dtmf,
            inactive_for,
        }
    }

    fn receive_tick(&mut self, now: Instant) -> bool {
        if !self.negotiated.direction.receives() {
            return false;
        }
        let fallback_codec = self.negotiated.codec;
        let negotiated_payload_type = self.negotiated.payload_type;
        match self.jitter.pop_frame(now) {
            Playout::Frame {
                payload_type,
                payload,
                ..
            } => {
                let codec = if payload_type == negotiated_payload_type {
                    fallback_codec
                } else {
                    Codec::from_static_payload_type(payload_type).unwrap_or(fallback_codec)
                };
                decode_into(codec, payload, &mut self.received_frame);
                self.concealer.record_good(&self.received_frame);
                true
            }
            Playout::Concealed => {
                self.concealer.conceal(&mut self.received_frame);
                self.stats.concealed_frames += 1;
                true
            }
            Playout::Missing => false,
        }
    }

    fn check_inactivity(&mut self, now: Instant) -> Option<Duration> {
        if !self.negotiated.direction.receives() {
            // On hold nobody owes us media: restart the clock so resuming is not "inactive".
            self.inactivity_since = now;
            self.inactivity_reported = false;
            return None;
        }
        let silent_for = now.saturating_duration_since(self.inactivity_since);
        if !self.inactivity_reported && silent_for >= self.config.inactivity_timeout {
            self.inactivity_reported = true;
            return Some(silent_for);
        }
        None
    }

    /// Builds this tick's outgoing packet into `out_packet`. Returns (length or 0, whether
    /// `sent_frame` holds audio we sent, whether playback just finished).
    fn send_tick(&mut self) -> (usize, bool, bool) {
        let timestamp = self.next_timestamp;
        // The media clock runs whether or not we send, so resuming after hold or DTMF lines
        // up with real time.
        self.next_timestamp = self.next_timestamp.wrapping_add(FRAME_SAMPLES as u32);
        if !self.negotiated.direction.sends() {
            self.marker_pending = true;
            return (0, false, false);
        }

        if self.dtmf_sender.is_none()
            && let Some((digit, duration)) = self.dtmf_queue.pop_front()
        {
            self.dtmf_sender = DtmfSender::new(digit, duration, timestamp);
        }
        if let (Some(sender), Some(dtmf_payload_type)) =
            (self.dtmf_sender.as_mut(), self.negotiated.dtmf_payload_type)
        {
            if let Some(packet) = sender.next_packet() {
                let finished = sender.is_finished();
                let header = RtpHeader {
                    marker: packet.marker,
                    payload_type: dtmf_payload_type,
                    sequence: self.next_sequence,
                    timestamp: packet.timestamp,
                    ssrc: self.local_ssrc,
                };
                let length =
                    super::rtp::write_packet(&header, &packet.payload, &mut self.out_packet)
                        .unwrap_or(0);
                self.next_sequence = self.next_sequence.wrapping_add(1);
                if finished {
                    self.dtmf_sender = None;
                    self.marker_pending = true;
                }
                return (length, false, false);
            }
            self.dtmf_sender = None;
        }

        let taken = if self.paused {
            // Held audio stays queued; what goes out is silence, not the last frame again.
            self.sent_frame.fill(0);
            0
        } else {
            self.take_queued_frame()
        };
        let playback_finished = taken > 0 && self.queued_samples == 0;
        if taken == 0 && !self.config.comfort_silence {
            self.marker_pending = true;
            return (0, false, false);
        }
        let marker = if taken > 0 {
            std::mem::replace(&mut self.marker_pending, false)
        } else {
            // Silence ends the talkspurt: the next real audio gets the marker bit. The very
            // first packet of the stream is marked even when it is silence.
            self.marker_pending = true;
            self.stats.packets_sent == 0
        };
        self.write_audio_packet(marker, timestamp, taken > 0, playback_finished)
    }

    fn write_audio_packet(
        &mut self,
        marker: bool,
        timestamp: u32,
        is_audio: bool,
        playback_finished: bool,
    ) -> (usize, bool, bool) {
        let header = RtpHeader {
            marker,
            payload_type: self.negotiated.payload_type,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.local_ssrc,
        };
        if header.write(&mut self.out_packet).is_none() {
            return (0, false, false);
        }
        let payload = &mut self.out_packet[RTP_HEADER_LEN..];
        match self.negotiated.codec {
            Codec::Pcmu => g711::encode_ulaw(&self.sent_frame, payload),
            Codec::Pcma => g711::encode_alaw(&self.sent_frame, payload),
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        (RTP_HEADER_LEN + FRAME_SAMPLES, is_audio, playback_finished)
    }

    /// Copies up to one frame of queued audio into `sent_frame` (zero-padded); returns how
    /// many queued samples it consumed.
    fn take_queued_frame(&mut self) -> usize {
        let mut filled = 0;
        while filled < FRAME_SAMPLES {
            let Some(chunk) = self.queue.front() else {
                break;
            };
            let available = &chunk[self.queue_offset..];
            let count = available.len().min(FRAME_SAMPLES - filled);
            self.sent_frame[filled..filled + count].copy_from_slice(&available[..count]);
            filled += count;
            self.queue_offset += count;
            if self.queue_offset >= chunk.len() {
                self.queue.pop_front();
                self.queue_offset = 0;
            }
        }
        self.sent_frame[filled..].fill(0);
        self.queued_samples -= filled;
        self.stats.samples_sent += filled as u64;
        filled
    }

    /// Whether [`Self::poll_rtcp`] would build a report now: the shell reads the RTCP socket
    /// first, so the report reflects what has arrived.
    pub fn rtcp_due(&self, now: Instant) -> bool {
        now >= self.next_rtcp
    }

    /// A compound RTCP report when one is due; the caller sends it to the returned address.
    pub fn poll_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
    ) -> Option<(Bytes, SocketAddr)> {
        if now < self.next_rtcp {
            return None;
        }
        self.next_rtcp = now + self.config.rtcp_interval;
        let destination = self.rtcp_destination();
        if destination.ip().is_unspecified() || destination.port() == 0 {
            return None;
        }
        let sender = self.sent_since_report.then(|| SenderInfo {
            packets: self.stats.packets_sent as u32,
            octets: (self
                .stats
                .bytes_sent
                .saturating_sub(self.stats.packets_sent * RTP_HEADER_LEN as u64))
                as u32,
            rtp_timestamp: self.next_timestamp,
        });
        self.sent_since_report = false;
        let block = self.receive_stats.take_report_block(now);
        match rtcp::build_report(
            self.local_ssrc,
            &self.config.cname,
            sender,
            block,
            wallclock,
        ) {
            Ok(bytes) => {
                self.stats.rtcp_sent += 1;
                Some((bytes, destination))
            }
            Err(error) => {
                tracing::warn!(%error, "could not build RTCP report");
                None
            }
        }
    }

    pub fn stats(&self) -> RtpStats {
        let jitter_stats = self.jitter.stats();
        RtpStats {
            packets_lost: self.receive_stats.cumulative_lost(),
            jitter_ms: self.receive_stats.jitter_ms(),
            late_packets: jitter_stats.late,
            duplicate_packets: jitter_stats.duplicates,
            remote_addr: Some(self.destination()),
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sdp::Direction;
    use super::*;

    const REMOTE: &str = "203.0.113.5:4000";
    const NATTED: &str = "198.51.100.7:31000";

    fn negotiated() -> Negotiated {
        let remote: SocketAddr = REMOTE.parse().expect("addr");
        Negotiated {
            remote_rtp: remote,
            remote_rtcp: SocketAddr::new(remote.ip(), 4001),
            codec: Codec::Pcmu,
            payload_type: 0,
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            offered_streams: Vec::new(),
        }
    }

    fn config() -> SessionConfig {
        SessionConfig {
            inactivity_timeout: Duration::from_secs(2),
            ..SessionConfig::default()
        }
    }

    fn session(start: Instant) -> RtpSession {
        RtpSession::new(negotiated(), config(), 0x5151, 1000, 50_000, start)
    }

    fn rtp(seq: u16, payload_type: u8, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0u8; RTP_HEADER_LEN + payload.len()];
        let header = RtpHeader {
            marker: false,
            payload_type,
            sequence: seq,
            timestamp: seq as u32 * 160,
            ssrc,
        };
        super::super::rtp::write_packet(&header, payload, &mut buffer).expect("fits");
        buffer
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn received_audio_is_decoded_after_jitter_delay() {
        let start = Instant::now();
        let mut session = session(start);
        let from: SocketAddr = NATTED.parse().expect("addr");
        let loud = [g711::linear_to_ulaw(8000); 160];
        for seq in 0..5u16 {
            let outcome =
                session.handle_packet(&rtp(seq, 0, 9, &loud), from, at(start, seq as u64 * 20));
            assert_eq!(outcome, PacketOutcome::Audio);
        }
        let mut frames = 0;
        for tick in 0..5u64 {
            let output = session.on_tick(at(start, 20 + tick * 20));
            if let Some(frame) = output.received {
                assert!((frame[0] - 8000).abs() < 300);
                frames += 1;
            }
        }
        assert!(frames >= 3, "{frames}");
        // Symmetric RTP: we now answer to where the packets came from, not the SDP address.
        assert_eq!(session.destination(), from);
        assert_eq!(session.stats().packets_received, 5);
    }

    #[test]
    fn latched_source_is_kept_against_other_senders() {
        let start = Instant::now();
        let mut session = session(start);
        let first: SocketAddr = NATTED.parse().expect("addr");
        let intruder: SocketAddr = "192.0.2.66:5000".parse().expect("addr");
        let payload = [0xFFu8; 160];
        session.handle_packet(&rtp(1, 0, 9, &payload), first, start);
        let outcome = session.handle_packet(&rtp(2, 0, 77, &payload), intruder, at(start, 20));
        assert_eq!(outcome, PacketOutcome::Ignored(IgnoreReason::WrongSource));
        assert_eq!(session.destination(), first);
        // Same SSRC from a new port after the old one went quiet: NAT rebinding, follow it.
        let rebound: SocketAddr = "198.51.100.7:31002".parse().expect("addr");
        let outcome = session.handle_packet(&rtp(3, 0, 9, &payload), rebound, at(start, 400));
        assert_eq!(outcome, PacketOutcome::Audio);
        assert_eq!(session.destination(), rebound);
        // A different SSRC can take over only after a long silence.
        let outcome = session.handle_packet(&rtp(4, 0, 77, &payload), intruder, at(start, 1000));
        assert_eq!(outcome, PacketOutcome::Ignored(IgnoreReason::WrongSource));
        let outcome = session.handle_packet(&rtp(5, 0, 77, &payload), intruder, at(start, 2500));
        assert_eq!(outcome, PacketOutcome::Audio);
    }

    #[test]
    fn garbage_and_unknown_payload_types_are_counted_not_fatal() {
        let start = Instant::now();
        let mut session = session(start);
        let from: SocketAddr = NATTED.parse().expect("addr");
        assert!(matches!(
            session.handle_packet(b"hello", from, start),
            PacketOutcome::Ignored(IgnoreReason::Malformed(_))
        ));
        assert_eq!(
            session.handle_packet(&rtp(1, 96, 9, &[0; 10]), from, start),
            PacketOutcome::Ignored(IgnoreReason::UnexpectedPayloadType(96))
        );
        let stats = session.stats();
        assert_eq!(stats.garbage_datagrams, 1);
        assert_eq!(stats.ignored_packets, 1);
        assert_eq!(stats.packets_received, 0);
    }

    #[test]
    fn outgoing_packets_are_paced_with_marker_on_first_audio() {
        let start = Instant::now();
        let mut session = session(start);
        // 2.5 frames of audio: the third packet is padded with silence.
        session.play(Arc::from(vec![1000i16; 400]));
        let mut packets = Vec::new();
        let mut finished = Vec::new();
        for tick in 0..5u64 {
            let output = session.on_tick(at(start, tick * 20));
            finished.push(output.playback_finished);
            let bytes = output
                .outgoing
                .expect("comfort silence keeps sending")
                .to_vec();
            packets.push(bytes);
        }
        let parsed: Vec<RtpPacket<'_>> = packets
            .iter()
            .map(|bytes| RtpPacket::parse(bytes).expect("valid"))
            .collect();
        for (index, packet) in parsed.iter().enumerate() {
            assert_eq!(packet.sequence, 1000 + index as u16);
            assert_eq!(packet.timestamp, 50_000 + 160 * index as u32);
            assert_eq!(packet.ssrc, 0x5151);
            assert_eq!(packet.payload_type, 0);
            assert_eq!(packet.payload.len(), 160);
        }
        assert!(parsed[0].marker);
        assert!(parsed[1..].iter().all(|p| !p.marker));
        assert_eq!(finished, vec![false, false, true, false, false]);
        assert_eq!(parsed[2].payload[79], g711::linear_to_ulaw(1000));
        assert_eq!(parsed[2].payload[80], g711::ULAW_SILENCE);
        assert_eq!(parsed[3].payload[0], g711::ULAW_SILENCE);
        assert_eq!(session.stats().samples_sent, 400);

        // New audio after silence starts a new talkspurt.
        session.play(Arc::from(vec![1000i16; 160]));
        let output = session.on_tick(at(start, 100));
        let packet = RtpPacket::parse(output.outgoing.expect("packet")).expect("valid");
        assert!(packet.marker);
    }

    #[test]
    fn flush_drops_queued_audio_within_one_tick() {
        let start = Instant::now();
        let mut session = session(start);
        session.play(Arc::from(vec![5000i16; 8000]));
        session.on_tick(start);
        assert!(session.is_playing());
        assert_eq!(session.flush(), 8000 - 160);
        assert!(!session.is_playing());
        let output = session.on_tick(at(start, 20));
        assert!(output.sent_audio.is_none());
        let packet = RtpPacket::parse(output.outgoing.expect("silence")).expect("valid");
        assert!(packet.payload.iter().all(|b| *b == g711::ULAW_SILENCE));
        let stats = session.stats();
        assert_eq!(stats.samples_sent, 160);
        assert_eq!(stats.samples_flushed, 8000 - 160);
    }

    #[test]
    fn pause_holds_queued_audio_and_resume_continues_where_it_stopped() {
        let start = Instant::now();
        let mut session = session(start);
        let ramp: Vec<i16> = (0..480).map(|i| i as i16).collect();
        assert!(session.play(Arc::from(ramp)));
        let first = session.on_tick(at(start, 0));
        assert_eq!(first.sent_audio.expect("audio")[0], 0);
        session.set_paused(true);
        for tick in 1..=3 {
            let output = session.on_tick(at(start, 20 * tick));
            assert!(output.sent_audio.is_none(), "paused audio must not be sent");
            let packet =
                RtpPacket::parse(output.outgoing.expect("comfort silence")).expect("valid");
            assert!(
                packet.payload.iter().all(|&b| b == g711::linear_to_ulaw(0)),
                "silence goes out while paused, not the last frame again"
            );
            assert!(!output.playback_finished);
        }
        assert!(session.is_playing(), "the queue is held, not dropped");
        assert_eq!(session.queued_samples(), 320);
        session.set_paused(false);
        let resumed = session.on_tick(at(start, 80));
        assert_eq!(resumed.sent_audio.expect("audio")[0], 160);
        let packet = RtpPacket::parse(resumed.outgoing.expect("packet")).expect("valid");
        assert!(packet.marker, "resumed audio starts a talkspurt");
        assert_eq!(session.stats().samples_flushed, 0);
    }

    #[test]
    fn hold_stops_sending_and_pauses_inactivity() {
        let start = Instant::now();
        let mut session = session(start);
        session.play(Arc::from(vec![1000i16; 1600]));
        session.on_tick(start);
        let mut held = negotiated();
        held.direction = Direction::Inactive;
        session.update(held, at(start, 20));
        for tick in 1..300u64 {
            let output = session.on_tick(at(start, tick * 20));
            assert!(output.outgoing.is_none());
            assert!(output.inactive_for.is_none(), "no inactivity while on hold");
        }
        assert_eq!(session.queued_samples(), 1440, "queue paused, not consumed");
        let resume_at = at(start, 6000);
        session.update(negotiated(), resume_at);
        let output = session.on_tick(resume_at);
        let packet = RtpPacket::parse(output.outgoing.expect("resumed")).expect("valid");
        assert!(packet.marker);
        assert_eq!(packet.sequence, 1001, "sequence continues without gaps");
        assert_eq!(
            packet.timestamp,
            50_000 + 300 * 160,
            "timestamp followed real time"
        );
        // Inactivity counts from the resume.
        assert!(session.on_tick(at(start, 7000)).inactive_for.is_none());
        let reported = session.on_tick(at(start, 8100)).inactive_for;
        assert!(reported.is_some_and(|d| d >= Duration::from_secs(2)));
        assert!(
            session.on_tick(at(start, 8120)).inactive_for.is_none(),
            "reported once"
        );
    }

    #[test]
    fn recvonly_still_receives_and_sendonly_does_not() {
        let start = Instant::now();
        let from: SocketAddr = NATTED.parse().expect("addr");
        let mut listening = session(start);
        let mut recv_only = negotiated();
        recv_only.direction = Direction::RecvOnly;
        listening.update(recv_only, start);
        assert!(listening.on_tick(start).outgoing.is_none());
        assert_eq!(
            listening.handle_packet(&rtp(1, 0, 9, &[0xFF; 160]), from, start),
            PacketOutcome::Audio
        );
        let mut speaking = session(start);
        let mut send_only = negotiated();
        send_only.direction = Direction::SendOnly;
        speaking.update(send_only, start);
        assert_eq!(
            speaking.handle_packet(&rtp(1, 0, 9, &[0xFF; 160]), from, start),
            PacketOutcome::Ignored(IgnoreReason::NotReceiving)
        );
        assert!(speaking.on_tick(start).outgoing.is_some());
    }

    #[test]
    fn codec_change_switches_encoder_and_payload_type() {
        let start = Instant::now();
        let mut session = session(start);
        let mut pcma = negotiated();
        pcma.codec = Codec::Pcma;
        pcma.payload_type = 8;
        session.update(pcma, start);
        session.play(Arc::from(vec![0i16; 160]));
        let output = session.on_tick(start);
        let packet = RtpPacket::parse(output.outgoing.expect("packet")).expect("valid");
        assert_eq!(packet.payload_type, 8);
        assert!(packet.payload.iter().all(|b| *b == g711::ALAW_SILENCE));
    }

    #[test]
    fn dtmf_is_sent_as_rfc4733_then_audio_resumes() {
        let start = Instant::now();
        let mut session = session(start);
        assert!(session.send_dtmf('5', Duration::from_millis(60)));
        assert!(!session.send_dtmf('x', Duration::from_millis(60)));
        let mut parsed = Vec::new();
        for tick in 0..7u64 {
            let output = session.on_tick(at(start, tick * 20));
            let bytes = output.outgoing.expect("packet").to_vec();
            parsed.push(bytes);
        }
        let packets: Vec<RtpPacket<'_>> = parsed
            .iter()
            .map(|b| RtpPacket::parse(b).expect("valid"))
            .collect();
        // 60 ms: two updates, three end packets, then audio (silence) again.
        let dtmf: Vec<&RtpPacket<'_>> = packets.iter().filter(|p| p.payload_type == 101).collect();
        assert_eq!(dtmf.len(), 5);
        assert!(dtmf[0].marker);
        assert!(dtmf.iter().all(|p| p.timestamp == 50_000));
        assert!(dtmf[2..].iter().all(|p| p.payload[1] & 0x80 != 0));
        assert_eq!(packets[5].payload_type, 0);
        assert_eq!(packets[5].timestamp, 50_000 + 5 * 160);
        let sequences: Vec<u16> = packets.iter().map(|p| p.sequence).collect();
        assert_eq!(sequences, (1000..1007).collect::<Vec<u16>>());
    }

    #[test]
    fn received_dtmf_is_reported_once() {
        let start = Instant::now();
        let mut session = session(start);
        let from: SocketAddr = NATTED.parse().expect("addr");
        let mut digits = Vec::new();
        for (index, (end, duration)) in [
            (false, 160u16),
            (false, 320),
            (true, 480),
            (true, 480),
            (true, 480),
        ]
        .iter()
        .enumerate()
        {
            let d = duration.to_be_bytes();
            let payload = [9u8, if *end { 0x8A } else { 0x0A }, d[0], d[1]];
            let mut packet = rtp(100 + index as u16, 101, 9, &payload);
            packet[4..8].copy_from_slice(&7777u32.to_be_bytes());
            if let PacketOutcome::Dtmf(Some(digit)) = session.handle_packet(&packet, from, start) {
                digits.push(digit);
            }
        }
        assert_eq!(
            digits,
            vec![DtmfDigit {
                digit: '9',
                duration_ms: 60
            }]
        );
        assert_eq!(session.stats().dtmf_received, 1);
    }

    #[test]
    fn rtcp_reports_are_generated_on_interval() {
        let start = Instant::now();
        let mut session = session(start);
        let from: SocketAddr = NATTED.parse().expect("addr");
        session.handle_packet(&rtp(1, 0, 9, &[0xFF; 160]), from, start);
        session.on_tick(start);
        assert!(
            session
                .poll_rtcp(at(start, 1000), SystemTime::now())
                .is_none()
        );
        let (report, destination) = session
            .poll_rtcp(at(start, 5000), SystemTime::now())
            .expect("due");
        assert_eq!(
            destination,
            "203.0.113.5:4001".parse::<SocketAddr>().expect("addr")
        );
        let summary = rtcp::parse_rtcp(&report, 9).expect("valid");
        assert_eq!(summary.sender_ssrc, Some(0x5151));
        assert!(summary.sender_report_ntp.is_some(), "we sent media: SR");
        assert_eq!(summary.reports_about_us.len(), 1);
        assert!(
            session
                .poll_rtcp(at(start, 6000), SystemTime::now())
                .is_none()
        );
        assert_eq!(
            session.handle_rtcp(&report, from, start),
            PacketOutcome::Rtcp
        );
        assert_eq!(
            session.handle_rtcp(b"junk", from, start),
            PacketOutcome::Ignored(IgnoreReason::MalformedRtcp)
        );
    }

    #[test]
    fn rtcp_mux_packets_on_the_rtp_port_are_demultiplexed() {
        let start = Instant::now();
        let mut muxed = negotiated();
        muxed.rtcp_mux = true;
        let mut session = RtpSession::new(muxed, config(), 1, 1, 1, start);
        let report = rtcp::build_report(9, "peer", None, None, SystemTime::now()).expect("marshal");
        let from: SocketAddr = NATTED.parse().expect("addr");
        assert_eq!(
            session.handle_packet(&report, from, start),
            PacketOutcome::Rtcp
        );
    }
}
