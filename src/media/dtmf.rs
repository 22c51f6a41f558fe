//! RFC 4733 telephone-events (DTMF over RTP): a receiver that turns the packet train of one
//! key press into exactly one digit, and a sender that produces that train.
//!
//! One key press is many packets sharing the event's RTP timestamp: updates with a growing
//! duration every 50 ms or so, then an end packet sent three times. Networks duplicate and
//! drop these, so the receiver keys on the timestamp: the first end packet reports the digit,
//! later packets with that timestamp are ignored, and an event whose end packets were all lost
//! is reported when the next event starts or after a quiet period.

use std::time::{Duration, Instant};

use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Payload size of a telephone-event packet.
pub const DTMF_PAYLOAD_LEN: usize = 4;
/// Times the end packet is sent (RFC 4733 §2.5.1.4 recommends three).
const END_PACKET_REPEATS: u8 = 3;
/// Volume field: -10 dBm0, a typical level for generated tones.
const GENERATED_VOLUME: u8 = 10;
/// An event without any packet for this long is considered finished (end packets lost).
const EVENT_TIMEOUT: Duration = Duration::from_millis(800);
const MIN_DURATION: Duration = Duration::from_millis(40);
const MAX_DURATION: Duration = Duration::from_secs(5);

/// A received key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    pub digit: char,
    pub duration_ms: u32,
}

/// Maps an RFC 4733 event code to its key; flash (16) and non-DTMF events have none.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        upper @ 'A'..='D' => Some(upper as u8 - b'A' + 12),
        _ => None,
    }
}

fn units_to_ms(units: u32) -> u32 {
    units * 1000 / SAMPLE_RATE
}

#[derive(Debug, Clone, Copy)]
struct EventInProgress {
    timestamp: u32,
    digit: char,
    duration_units: u32,
    last_packet: Instant,
}

/// Turns received telephone-event packets into one report per key press.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    current: Option<EventInProgress>,
    last_reported_timestamp: Option<u32>,
    /// A finished event waiting to be reported because another was reported in the same call.
    pending: Option<DtmfDigit>,
}

impl DtmfReceiver {
    /// Feeds one telephone-event payload. Malformed payloads are ignored.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8], now: Instant) -> Option<DtmfDigit> {
        let [event, flags, duration_high, duration_low, ..] = *payload else {
            return None;
        };
        if self.last_reported_timestamp == Some(timestamp) {
            return self.pending.take();
        }
        let digit = event_to_digit(event)?;
        let is_end = flags & 0x80 != 0;
        let duration_units = u16::from_be_bytes([duration_high, duration_low]) as u32;

        // A new event while the previous one never saw an end packet: report the previous one.
        let mut unfinished = None;
        if let Some(current) = self.current
            && current.timestamp != timestamp
        {
            unfinished = Some(self.finish(current));
        }
        let mut event = match self.current {
            Some(current) if current.timestamp == timestamp => current,
            _ => EventInProgress {
                timestamp,
                digit,
                duration_units: 0,
                last_packet: now,
            },
        };
        event.duration_units = event.duration_units.max(duration_units);
        event.last_packet = now;
        self.current = Some(event);

        let ended = is_end.then(|| self.finish(event));
        match (unfinished, ended) {
            (Some(first), Some(second)) => {
                self.pending = Some(second);
                Some(first)
            }
            (first, second) => first.or(second).or_else(|| self.pending.take()),
        }
    }

    /// Called on each tick: reports an event whose end packets never arrived.
    pub fn poll(&mut self, now: Instant) -> Option<DtmfDigit> {
        if let Some(pending) = self.pending.take() {
            return Some(pending);
        }
        let current = self.current?;
        if now.saturating_duration_since(current.last_packet) >= EVENT_TIMEOUT {
            return Some(self.finish(current));
        }
        None
    }

    fn finish(&mut self, event: EventInProgress) -> DtmfDigit {
        self.current = None;
        self.last_reported_timestamp = Some(event.timestamp);
        DtmfDigit {
            digit: event.digit,
            duration_ms: units_to_ms(event.duration_units),
        }
    }
}

/// One telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    pub marker: bool,
    pub timestamp: u32,
    pub payload: [u8; DTMF_PAYLOAD_LEN],
}

/// Produces the packet train for one key press, one packet per 20 ms tick.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    event: u8,
    start_timestamp: u32,
    total_units: u32,
    elapsed_units: u32,
    end_packets_sent: u8,
}

impl DtmfSender {
    /// `start_timestamp` is the RTP timestamp the tone starts at; the duration is clamped to
    /// 40 ms..5 s so the 16-bit duration field cannot overflow.
    pub fn new(digit: char, duration: Duration, start_timestamp: u32) -> Option<Self> {
        let event = digit_to_event(digit)?;
        let duration = duration.clamp(MIN_DURATION, MAX_DURATION);
        let total_units = (duration.as_millis() as u32) * (SAMPLE_RATE / 1000);
        Some(DtmfSender {
            event,
            start_timestamp,
            total_units,
            elapsed_units: 0,
            end_packets_sent: 0,
        })
    }

    /// How many samples of media time the tone covers; audio resumes this far after the start.
    pub fn duration_samples(&self) -> u32 {
        self.total_units
    }

    pub fn is_finished(&self) -> bool {
        self.end_packets_sent >= END_PACKET_REPEATS
    }

    /// The packet for the next tick, or `None` once the end packets have all been sent.
    pub fn next_packet(&mut self) -> Option<DtmfPacket> {
        if self.is_finished() {
            return None;
        }
        let first = self.elapsed_units == 0;
        self.elapsed_units = (self.elapsed_units + FRAME_SAMPLES as u32).min(self.total_units);
        let is_end = self.elapsed_units >= self.total_units;
        if is_end {
            self.end_packets_sent += 1;
        }
        let duration = (self.elapsed_units.min(u16::MAX as u32) as u16).to_be_bytes();
        let flags = if is_end { 0x80 } else { 0 } | GENERATED_VOLUME;
        Some(DtmfPacket {
            marker: first,
            timestamp: self.start_timestamp,
            payload: [self.event, flags, duration[0], duration[1]],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn digit_mapping_round_trips() {
        for digit in "0123456789*#ABCD".chars() {
            let event = digit_to_event(digit).expect("valid digit");
            assert_eq!(event_to_digit(event), Some(digit));
        }
        assert_eq!(digit_to_event('a'), Some(12));
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn one_key_press_with_triple_end_and_retransmits_reports_once() {
        let start = Instant::now();
        let mut receiver = DtmfReceiver::default();
        let ts = 8000;
        let mut reports = Vec::new();
        let train = [
            packet(5, false, 160),
            packet(5, false, 320),
            packet(5, false, 320), // retransmitted update
            packet(5, false, 480),
            packet(5, true, 800),
            packet(5, true, 800),
            packet(5, true, 800),
        ];
        for (index, payload) in train.iter().enumerate() {
            let now = start + Duration::from_millis(index as u64 * 20);
            reports.extend(receiver.on_packet(ts, payload, now));
        }
        assert_eq!(
            reports,
            vec![DtmfDigit {
                digit: '5',
                duration_ms: 100
            }]
        );
        assert_eq!(receiver.poll(start + Duration::from_secs(5)), None);
    }

    #[test]
    fn same_digit_twice_is_two_presses() {
        let now = Instant::now();
        let mut receiver = DtmfReceiver::default();
        assert!(
            receiver
                .on_packet(100, &packet(1, true, 800), now)
                .is_some()
        );
        assert!(
            receiver
                .on_packet(100, &packet(1, true, 800), now)
                .is_none()
        );
        assert!(
            receiver
                .on_packet(2000, &packet(1, true, 800), now)
                .is_some()
        );
    }

    #[test]
    fn lost_end_packets_are_reported_on_next_event_or_timeout() {
        let start = Instant::now();
        let mut receiver = DtmfReceiver::default();
        assert_eq!(
            receiver.on_packet(100, &packet(11, false, 400), start),
            None
        );
        let next = receiver.on_packet(5000, &packet(10, false, 160), start);
        assert_eq!(
            next,
            Some(DtmfDigit {
                digit: '#',
                duration_ms: 50
            })
        );
        assert_eq!(receiver.poll(start + Duration::from_millis(100)), None);
        assert_eq!(
            receiver.poll(start + Duration::from_secs(1)),
            Some(DtmfDigit {
                digit: '*',
                duration_ms: 20
            })
        );
    }

    #[test]
    fn new_event_whose_first_packet_is_an_end_reports_both() {
        let now = Instant::now();
        let mut receiver = DtmfReceiver::default();
        receiver.on_packet(100, &packet(1, false, 160), now);
        let first = receiver.on_packet(900, &packet(2, true, 640), now);
        assert_eq!(first.map(|d| d.digit), Some('1'));
        assert_eq!(receiver.poll(now).map(|d| d.digit), Some('2'));
    }

    #[test]
    fn malformed_and_unknown_events_are_ignored() {
        let now = Instant::now();
        let mut receiver = DtmfReceiver::default();
        assert_eq!(receiver.on_packet(1, &[1, 0x80], now), None);
        assert_eq!(receiver.on_packet(1, &packet(16, true, 800), now), None);
        assert_eq!(receiver.on_packet(1, &packet(200, true, 800), now), None);
    }

    #[test]
    fn sender_produces_a_correct_packet_train() {
        let mut sender = DtmfSender::new('#', Duration::from_millis(100), 1234).expect("digit");
        let packets: Vec<DtmfPacket> = std::iter::from_fn(|| sender.next_packet()).collect();
        // 100 ms = 800 units: updates at 160..640, then three end packets at 800.
        assert_eq!(packets.len(), 4 + 3);
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        assert!(packets.iter().all(|p| p.timestamp == 1234));
        let durations: Vec<u16> = packets
            .iter()
            .map(|p| u16::from_be_bytes([p.payload[2], p.payload[3]]))
            .collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|p| p.payload[1] & 0x80 != 0).collect();
        assert_eq!(ends, vec![false, false, false, false, true, true, true]);
        assert!(packets.iter().all(|p| p.payload[0] == 11));
        assert!(sender.is_finished());
        assert_eq!(sender.duration_samples(), 800);
    }

    #[test]
    fn generated_train_is_received_as_one_digit() {
        let now = Instant::now();
        let mut sender = DtmfSender::new('7', Duration::from_millis(160), 42).expect("digit");
        let mut receiver = DtmfReceiver::default();
        let mut reports = Vec::new();
        while let Some(packet) = sender.next_packet() {
            reports.extend(receiver.on_packet(packet.timestamp, &packet.payload, now));
        }
        assert_eq!(
            reports,
            vec![DtmfDigit {
                digit: '7',
                duration_ms: 160
            }]
        );
    }

    #[test]
    fn sender_clamps_duration_and_rejects_unknown_digits() {
        assert!(DtmfSender::new('x', Duration::from_millis(100), 0).is_none());
        let long = DtmfSender::new('1', Duration::from_secs(60), 0).expect("digit");
        assert_eq!(long.duration_samples(), 40_000);
        let short = DtmfSender::new('1', Duration::ZERO, 0).expect("digit");
        assert_eq!(short.duration_samples(), 320);
    }
}
