//! RTCP (RFC 3550 §6): receive statistics and SR/RR generation and parsing.
//!
//! The statistics follow the reference algorithms of RFC 3550 Appendix A (A.1 sequence
//! tracking, A.3 loss, A.8 jitter) in a sans-IO struct fed with `Instant`s. Packets are
//! marshalled and unmarshalled with the `rtcp` crate: RTCP is sent every few seconds, so its
//! allocations do not matter, and reusing a maintained codec beats hand-writing SDES padding.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ::rtcp::packet::Packet;
use ::rtcp::receiver_report::ReceiverReport;
use ::rtcp::reception_report::ReceptionReport;
use ::rtcp::sender_report::SenderReport;
use ::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use bytes::Bytes;
use thiserror::Error;

use super::SAMPLE_RATE;

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// Seconds between the NTP era (1900) and the Unix epoch.
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
/// RTCP datagrams larger than this are not worth parsing (and cap the work per datagram).
const MAX_RTCP_DATAGRAM: usize = 1500;

#[derive(Debug, Error)]
pub enum RtcpError {
    #[error("RTCP datagram of {0} bytes is too large")]
    TooLarge(usize),
    #[error("invalid RTCP: {0}")]
    Invalid(String),
}

/// Per-source receive statistics (RFC 3550 Appendix A).
#[derive(Debug, Clone)]
pub struct ReceiveStatistics {
    ssrc: Option<u32>,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    previous_transit: Option<i32>,
    /// Interarrival jitter in timestamp units, kept fractional as the RFC's 1/16 filter needs.
    jitter: f64,
    clock_origin: Option<Instant>,
    /// Middle 32 bits of the last SR's NTP time and when it arrived, for LSR/DLSR.
    last_sender_report: Option<(u32, Instant)>,
}

impl Default for ReceiveStatistics {
    fn default() -> Self {
        ReceiveStatistics {
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            previous_transit: None,
            jitter: 0.0,
            clock_origin: None,
            last_sender_report: None,
        }
    }
}

impl ReceiveStatistics {
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    fn init_sequence(&mut self, sequence: u16) {
        self.base_seq = sequence as u32;
        self.max_seq = sequence;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// Records one valid RTP packet. A new SSRC restarts the statistics.
    pub fn on_packet(&mut self, ssrc: u32, sequence: u16, rtp_timestamp: u32, arrival: Instant) {
        if self.ssrc != Some(ssrc) {
            *self = ReceiveStatistics {
                last_sender_report: self.last_sender_report,
                ..ReceiveStatistics::default()
            };
            self.ssrc = Some(ssrc);
            self.init_sequence(sequence);
        } else if !self.update_sequence(sequence) {
            return;
        }
        self.received += 1;
        self.update_jitter(rtp_timestamp, arrival);
    }

    /// RFC 3550 A.1 `update_seq`; false if the packet should not be counted.
    fn update_sequence(&mut self, sequence: u16) -> bool {
        let delta = sequence.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if sequence < self.max_seq {
                self.cycles += RTP_SEQ_MOD;
            }
            self.max_seq = sequence;
        } else if delta as u32 <= RTP_SEQ_MOD - MAX_MISORDER as u32 {
            // A very large jump: accept it only if the next packet confirms the new numbering.
            if sequence as u32 == self.bad_seq {
                self.init_sequence(sequence);
            } else {
                self.bad_seq = (sequence as u32 + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted, max unchanged.
        true
    }

    /// RFC 3550 A.8: J += (|D| - J) / 16 with D the change in relative transit time.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival: Instant) {
        let origin = *self.clock_origin.get_or_insert(arrival);
        let elapsed = arrival.saturating_duration_since(origin);
        let arrival_units = (elapsed.as_nanos() * SAMPLE_RATE as u128 / 1_000_000_000) as u32;
        let transit = arrival_units.wrapping_sub(rtp_timestamp) as i32;
        if let Some(previous) = self.previous_transit {
            let deviation = transit.wrapping_sub(previous).unsigned_abs() as f64;
            self.jitter += (deviation - self.jitter) / 16.0;
        }
        self.previous_transit = Some(transit);
    }

    pub fn extended_highest_sequence(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    pub fn packets_received(&self) -> u64 {
        self.received
    }

    fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        (self.extended_highest_sequence() as u64 + 1).saturating_sub(self.base_seq as u64)
    }

    /// Cumulative packets lost (may be negative with duplicates, per the RFC).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in RTP timestamp units (what RTCP reports carry).
    pub fn jitter_units(&self) -> u32 {
        self.jitter as u32
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / SAMPLE_RATE as f64
    }

    /// Remembers an incoming SR so our next report can carry LSR/DLSR (round-trip time).
    pub fn on_sender_report(&mut self, ntp_time: u64, arrival: Instant) {
        self.last_sender_report = Some(((ntp_time >> 16) as u32, arrival));
    }

    /// Builds a report block and starts a new interval for "fraction lost" (RFC 3550 A.3).
    pub fn take_report_block(&mut self, now: Instant) -> Option<ReceptionReport> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        // total_lost is a signed 24-bit field.
        let total_lost =
            self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32 as u32 & 0xFF_FFFF;
        let (last_sender_report, delay) = match self.last_sender_report {
            Some((middle, arrived)) => {
                let since = now.saturating_duration_since(arrived);
                let delay = (since.as_secs_f64() * 65536.0).min(u32::MAX as f64) as u32;
                (middle, delay)
            }
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost,
            last_sequence_number: self.extended_highest_sequence(),
            jitter: self.jitter_units(),
            last_sender_report,
            delay,
        })
    }
}

/// What we sent, for the sender-info part of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub packets: u32,
    pub octets: u32,
    pub rtp_timestamp: u32,
}

/// Converts wall-clock time to 64-bit NTP format.
pub fn ntp_timestamp(wallclock: SystemTime) -> u64 {
    let since_unix = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS) & 0xFFFF_FFFF;
    let fraction = ((since_unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// Builds a compound RTCP packet: SR if we have sent media since the last report, else RR,
/// followed by the SDES CNAME that RFC 3550 §6.1 requires in every compound packet.
pub fn build_report(
    local_ssrc: u32,
    cname: &str,
    sender: Option<SenderInfo>,
    report_block: Option<ReceptionReport>,
    wallclock: SystemTime,
) -> Result<Bytes, RtcpError> {
    let reports: Vec<ReceptionReport> = report_block.into_iter().collect();
    let first: Box<dyn Packet + Send + Sync> = match sender {
        Some(info) => Box::new(SenderReport {
            ssrc: local_ssrc,
            ntp_time: ntp_timestamp(wallclock),
            rtp_time: info.rtp_timestamp,
            packet_count: info.packets,
            octet_count: info.octets,
            reports,
            profile_extensions: Bytes::new(),
        }),
        None => Box::new(ReceiverReport {
            ssrc: local_ssrc,
            reports,
            profile_extensions: Bytes::new(),
        }),
    };
    let cname_bytes = cname.as_bytes();
    let sdes = SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: local_ssrc,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::copy_from_slice(&cname_bytes[..cname_bytes.len().min(255)]),
            }],
        }],
    };
    let packets: Vec<Box<dyn Packet + Send + Sync>> = vec![first, Box::new(sdes)];
    ::rtcp::packet::marshal(&packets).map_err(|error| RtcpError::Invalid(error.to_string()))
}

/// The parts of an incoming SR/RR Frontdoor uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    pub sender_ssrc: Option<u32>,
    /// NTP time of an incoming SR, for our LSR/DLSR.
    pub sender_report_ntp: Option<u64>,
    /// Report blocks about our stream: (fraction lost /256, cumulative lost, jitter units).
    pub reports_about_us: Vec<(u8, u32, u32)>,
    pub goodbye: bool,
}

/// Parses a (possibly compound) RTCP datagram. Never panics; garbage is an error.
pub fn parse_rtcp(datagram: &[u8], local_ssrc: u32) -> Result<RtcpSummary, RtcpError> {
    if datagram.len() > MAX_RTCP_DATAGRAM {
        return Err(RtcpError::TooLarge(datagram.len()));
    }
    // Cheap pre-checks so obvious garbage never reaches the crate: version 2 and a known
    // compound-leading packet type (RFC 3550 §6.1 requires SR or RR first; RFC 5506 allows
    // reduced-size feedback, which we also tolerate).
    if datagram.len() < 4 || datagram[0] >> 6 != 2 || !(192..=207).contains(&datagram[1]) {
        return Err(RtcpError::Invalid("not an RTCP header".into()));
    }
    validate_compound(datagram)?;
    // Only sender reports, receiver reports and BYE matter to us; the other
    // types (feedback, SDES, APP) are skipped rather than handed to the
    // crate, whose feedback parsers have panicked on short packets (found by
    // fuzzing). The catch_unwind is a backstop for what validation missed.
    let mut packets = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 4 {
        let length = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let (packet, tail) = rest.split_at(length.min(rest.len()));
        rest = tail;
        if !matches!(packet[1], 200 | 201 | 203) {
            continue;
        }
        let parsed = std::panic::catch_unwind(|| {
            let mut buffer = packet;
            ::rtcp::packet::unmarshal(&mut buffer)
        })
        .map_err(|_| RtcpError::Invalid("RTCP parser rejected the packet".into()))?
        .map_err(|error| RtcpError::Invalid(error.to_string()))?;
        packets.extend(parsed);
    }
    let mut summary = RtcpSummary::default();
    for packet in &packets {
        let any = packet.as_any();
        if let Some(sr) = any.downcast_ref::<SenderReport>() {
            summary.sender_ssrc = Some(sr.ssrc);
            summary.sender_report_ntp = Some(sr.ntp_time);
            collect_reports(&sr.reports, local_ssrc, &mut summary);
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            summary.sender_ssrc = Some(rr.ssrc);
            collect_reports(&rr.reports, local_ssrc, &mut summary);
        } else if any.is::<::rtcp::goodbye::Goodbye>() {
            summary.goodbye = true;
        }
    }
    Ok(summary)
}

/// Walks a compound RTCP datagram and checks that every packet's length
/// field, padding and report count fit inside it exactly (RFC 3550 §6.4).
fn validate_compound(datagram: &[u8]) -> Result<(), RtcpError> {
    let invalid = |why: &str| Err(RtcpError::Invalid(why.into()));
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return invalid("truncated RTCP header");
        }
        if rest[0] >> 6 != 2 {
            return invalid("RTCP version is not 2");
        }
        let count = usize::from(rest[0] & 0x1f);
        let packet_type = rest[1];
        let length = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if length > rest.len() {
            return invalid("RTCP length field runs past the datagram");
        }
        let packet = &rest[..length];
        let padding = if rest[0] & 0x20 != 0 {
            usize::from(packet[length - 1])
        } else {
            0
        };
        if padding == 0 && rest[0] & 0x20 != 0 || padding > length - 4 {
            return invalid("bad RTCP padding");
        }
        let body = length - padding;
        let needed = match packet_type {
            200 => 28 + count * 24,
            201 => 8 + count * 24,
            203 => 4 + count * 4,
            _ => 4,
        };
        if body < needed {
            return invalid("RTCP packet shorter than its report count says");
        }
        // BYE may end with a reason: a length byte and that many bytes.
        if packet_type == 203 && body > needed && needed + 1 + usize::from(packet[needed]) > body {
            return invalid("RTCP BYE reason runs past the packet");
        }
        rest = &rest[length..];
    }
    Ok(())
}

fn collect_reports(reports: &[ReceptionReport], local_ssrc: u32, summary: &mut RtcpSummary) {
    for report in reports.iter().filter(|report| report.ssrc == local_ssrc) {
        summary
            .reports_about_us
            .push((report.fraction_lost, report.total_lost, report.jitter));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn short_length_field_is_an_error_not_a_panic() {
        // Found by the real-peer test: the rtcp crate panicked on this.
        let packet = [0x81, 0xcd, 0x00, 0x01, 0xcc, 0x13, 0x2e, 0x62, 0x04];
        assert!(parse_rtcp(&packet, 1).is_err());
        // Found by fuzzing: a short transport-layer NACK is skipped, not parsed.
        let nack = [0x81, 0xcd, 0x00, 0x01, 0xcc, 0x13, 0x62, 0x04];
        assert!(parse_rtcp(&nack, 1).is_ok_and(|s| s.sender_ssrc.is_none()));
        // Every truncation and length-field variant of a valid RR.
        let mut rr = vec![0x81, 201, 0x00, 0x07];
        rr.extend_from_slice(&[0u8; 28]);
        assert!(parse_rtcp(&rr, 1).is_ok());
        for cut in 0..rr.len() {
            let _ = parse_rtcp(&rr[..cut], 1);
        }
        for len in 0..=255u8 {
            let mut bad = rr.clone();
            bad[3] = len;
            let _ = parse_rtcp(&bad, 1);
            bad[0] = 0x9f;
            let _ = parse_rtcp(&bad, 1);
        }
    }

    #[test]
    fn jitter_matches_hand_computed_example() {
        // Timestamps every 20 ms (160 units); arrivals at 0, 20, 50 and 60 ms, i.e. at
        // 0, 160, 400 and 480 units. Transit: 0, 0, 80, 0. |D|: 0, 80, 80.
        // J: 0 -> 0 + (0-0)/16 = 0 -> 0 + (80-0)/16 = 5 -> 5 + (80-5)/16 = 9.6875.
        let start = Instant::now();
        let mut stats = ReceiveStatistics::default();
        for (index, arrival_ms) in [0u64, 20, 50, 60].iter().enumerate() {
            stats.on_packet(
                1,
                index as u16,
                index as u32 * 160,
                start + Duration::from_millis(*arrival_ms),
            );
        }
        assert!((stats.jitter - 9.6875).abs() < 1e-9, "{}", stats.jitter);
        assert_eq!(stats.jitter_units(), 9);
        assert!((stats.jitter_ms() - 1.2109375).abs() < 1e-9);
    }

    #[test]
    fn loss_and_extended_sequence_across_wrap() {
        let start = Instant::now();
        let mut stats = ReceiveStatistics::default();
        // 65530..=65535, 0..=9 except 2 and 3 are lost: 16 expected, 14 received.
        let sequences: Vec<u16> = (65530..=65535)
            .chain(0..10)
            .filter(|s| *s != 2 && *s != 3)
            .collect();
        for seq in &sequences {
            stats.on_packet(7, *seq, 0, start);
        }
        assert_eq!(stats.extended_highest_sequence(), 65536 + 9);
        assert_eq!(stats.cumulative_lost(), 2);
        let block = stats.take_report_block(start).expect("has source");
        assert_eq!(block.ssrc, 7);
        assert_eq!(block.total_lost, 2);
        assert_eq!(block.fraction_lost, (2 * 256 / 16) as u8);
        assert_eq!(block.last_sequence_number, 65536 + 9);
        // Next interval: nothing lost.
        for seq in 10..20u16 {
            stats.on_packet(7, seq, 0, start);
        }
        let block = stats.take_report_block(start).expect("has source");
        assert_eq!(block.fraction_lost, 0);
        assert_eq!(block.total_lost, 2);
    }

    #[test]
    fn large_jump_needs_confirmation_before_resync() {
        let start = Instant::now();
        let mut stats = ReceiveStatistics::default();
        for seq in 0..5u16 {
            stats.on_packet(1, seq, 0, start);
        }
        stats.on_packet(1, 40000, 0, start);
        assert_eq!(
            stats.extended_highest_sequence(),
            4,
            "single stray packet ignored"
        );
        stats.on_packet(1, 40001, 0, start);
        assert_eq!(stats.extended_highest_sequence(), 40001);
    }

    #[test]
    fn sender_and_receiver_reports_round_trip() {
        let start = Instant::now();
        let mut stats = ReceiveStatistics::default();
        for seq in 0..50u16 {
            stats.on_packet(
                0xAAAA,
                seq,
                seq as u32 * 160,
                start + Duration::from_millis(seq as u64 * 20),
            );
        }
        stats.on_sender_report(0x1234_5678_9ABC_DEF0, start);
        let block = stats.take_report_block(start + Duration::from_millis(500));
        assert_eq!(
            block.as_ref().map(|b| b.last_sender_report),
            Some(0x5678_9ABC)
        );
        assert_eq!(block.as_ref().map(|b| b.delay), Some(32768));
        let wallclock = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sender = SenderInfo {
            packets: 50,
            octets: 8000,
            rtp_timestamp: 8000,
        };
        let sr = build_report(
            0xBBBB,
            "frontdoor@test",
            Some(sender),
            block.clone(),
            wallclock,
        )
        .expect("marshal");
        let parsed = parse_rtcp(&sr, 0xAAAA).expect("parse");
        assert_eq!(parsed.sender_ssrc, Some(0xBBBB));
        assert_eq!(parsed.sender_report_ntp, Some(ntp_timestamp(wallclock)));
        assert_eq!(parsed.reports_about_us.len(), 1);
        let rr = build_report(0xBBBB, "frontdoor@test", None, block, wallclock).expect("marshal");
        let parsed = parse_rtcp(&rr, 0xAAAA).expect("parse");
        assert_eq!(parsed.sender_report_ntp, None);
        assert_eq!(parsed.reports_about_us, vec![(0, 0, 0)]);
    }

    #[test]
    fn ntp_conversion() {
        let wallclock = UNIX_EPOCH + Duration::from_millis(1500);
        let ntp = ntp_timestamp(wallclock);
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET_SECS + 1);
        assert_eq!(ntp & 0xFFFF_FFFF, 1 << 31);
    }

    #[test]
    fn garbage_rtcp_is_an_error_not_a_panic() {
        assert!(parse_rtcp(&[], 1).is_err());
        assert!(parse_rtcp(&[0x80, 200], 1).is_err());
        assert!(parse_rtcp(&[0x80, 200, 0xFF, 0xFF, 0, 0, 0, 1], 1).is_err());
        assert!(parse_rtcp(&[0x80; 2000], 1).is_err());
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut buffer = [0u8; 96];
        for round in 0..20_000usize {
            for byte in buffer.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            buffer[0] = 0x80 | (buffer[0] & 0x3F);
            buffer[1] = 200 + (buffer[1] % 8);
            let len = round % 96;
            let _ = parse_rtcp(&buffer[..len], 1);
        }
    }
}
