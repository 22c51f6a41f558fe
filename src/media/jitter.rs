//! Sans-IO adaptive jitter buffer for 20 ms G.711 frames, plus PCM loss concealment.
//!
//! The buffer never reads the clock: arrivals and ticks carry an `Instant`, so tests replay
//! network conditions with a fake clock. Storage is a fixed ring of slots indexed by extended
//! sequence number, so steady-state operation allocates nothing.
//!
//! Playout policy, and why:
//! - Playout starts once the first packet has waited `target` (measured from its arrival), so
//!   the initial depth reflects the jitter we expect rather than a packet count.
//! - A slot that is empty while later packets are waiting is declared lost (concealed) and
//!   skipped. If *nothing* is waiting, playout holds position instead: the packet is more
//!   likely late than lost, and holding stretches the delay exactly when jitter demands it.
//! - When the buffer runs persistently deeper than the target (jitter has calmed down), one
//!   frame is dropped every so often to bring latency back down.

use std::time::{Duration, Instant};

use super::{FRAME_SAMPLES, Frame};

/// Largest payload kept per slot: one 20 ms G.711 frame. Longer payloads are truncated
/// (counted in [`JitterStats::oversized`]) because the tick only consumes 20 ms.
pub const MAX_FRAME_PAYLOAD: usize = FRAME_SAMPLES;
/// Ring capacity in frames (1.28 s). Also bounds `max_depth`.
const SLOTS: usize = 64;
const FRAME_MS: u32 = 20;
/// A sequence jump this large (either way) means the sender restarted, not reordering.
const RESTART_JUMP: i64 = 3000;
/// Consecutive empty ticks after which playout stops and re-buffers on the next packet.
const REBUFFER_AFTER_EMPTY_TICKS: u32 = 10;
/// Ticks the buffer must stay over target before one frame is dropped to shrink latency.
const SHRINK_AFTER_TICKS: u32 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    pub min_delay_ms: u32,
    pub max_delay_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay_ms: 40,
            max_delay_ms: 200,
        }
    }
}

/// Counters for the stats snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub pushed: u64,
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub oversized: u64,
    pub dropped_for_latency: u64,
    pub resets: u64,
}

/// What `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Buffered,
    Duplicate,
    /// Arrived after its playout time had passed.
    Late,
    /// A new SSRC or a sequence discontinuity restarted the buffer; the packet was kept.
    Reset,
}

/// The result of one 20 ms tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    Frame {
        payload_type: u8,
        timestamp: u32,
        payload: &'a [u8],
    },
    /// A frame was lost (or is late): the caller should conceal.
    Concealed,
    /// Nothing to play: not started, buffering, or the sender has gone quiet.
    Missing,
}

#[derive(Clone, Copy)]
struct Slot {
    extended_seq: u64,
    occupied: bool,
    payload_type: u8,
    timestamp: u32,
    len: u8,
    payload: [u8; MAX_FRAME_PAYLOAD],
}

const EMPTY_SLOT: Slot = Slot {
    extended_seq: 0,
    occupied: false,
    payload_type: 0,
    timestamp: 0,
    len: 0,
    payload: [0; MAX_FRAME_PAYLOAD],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Buffering { since: Instant },
    Playing { next_seq: u64 },
}

/// Adaptive jitter buffer for one RTP source.
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Box<[Slot; SLOTS]>,
    buffered: usize,
    state: State,
    ssrc: Option<u32>,
    highest_seq: Option<u64>,
    last_played_seq: Option<u64>,
    empty_ticks: u32,
    over_target_ticks: u32,
    /// RFC 3550-style interarrival jitter, in milliseconds (smoothed, gain 1/16).
    jitter_ms: f64,
    /// Decaying peak of |transit deviation|: reacts to spikes the mean hides.
    peak_deviation_ms: f64,
    previous_transit_ms: Option<f64>,
    clock_origin: Option<(Instant, u32)>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        let max_ring_ms = (SLOTS as u32 - 4) * FRAME_MS;
        let max_delay_ms = config.max_delay_ms.clamp(FRAME_MS, max_ring_ms);
        let min_delay_ms = config.min_delay_ms.clamp(0, max_delay_ms);
        JitterBuffer {
            config: JitterConfig {
                min_delay_ms,
                max_delay_ms,
            },
            slots: Box::new([EMPTY_SLOT; SLOTS]),
            buffered: 0,
            state: State::Idle,
            ssrc: None,
            highest_seq: None,
            last_played_seq: None,
            empty_ticks: 0,
            over_target_ticks: 0,
            jitter_ms: 0.0,
            peak_deviation_ms: 0.0,
            previous_transit_ms: None,
            clock_origin: None,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Measured interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// Current target playout delay: a few times the measured jitter, within `[min, max]`.
    pub fn target_delay_ms(&self) -> u32 {
        let wanted = (3.0 * self.jitter_ms).max(1.5 * self.peak_deviation_ms) + FRAME_MS as f64;
        let wanted = wanted.ceil().min(u32::MAX as f64) as u32;
        wanted.clamp(self.config.min_delay_ms, self.config.max_delay_ms)
    }

    /// Frames currently waiting.
    pub fn buffered_frames(&self) -> usize {
        self.buffered
    }

    /// Drops everything, including the source identity (e.g. after a re-INVITE).
    pub fn reset(&mut self) {
        self.clear_slots();
        self.state = State::Idle;
        self.ssrc = None;
        self.highest_seq = None;
        self.last_played_seq = None;
        self.empty_ticks = 0;
        self.over_target_ticks = 0;
        self.previous_transit_ms = None;
        self.clock_origin = None;
    }

    fn clear_slots(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.occupied = false;
        }
        self.buffered = 0;
    }

    fn extend_sequence(&self, sequence: u16) -> u64 {
        match self.highest_seq {
            // Start well above zero so that backwards steps never underflow.
            None => (1u64 << 32) + sequence as u64,
            Some(highest) => {
                let delta = sequence.wrapping_sub(highest as u16) as i16;
                (highest as i64 + delta as i64) as u64
            }
        }
    }

    fn update_jitter(&mut self, timestamp: u32, arrival: Instant) {
        let (origin_instant, origin_timestamp) =
            *self.clock_origin.get_or_insert((arrival, timestamp));
        let arrival_ms = arrival
            .saturating_duration_since(origin_instant)
            .as_secs_f64()
            * 1000.0;
        let media_ms = timestamp.wrapping_sub(origin_timestamp) as i32 as f64 / 8.0;
        let transit = arrival_ms - media_ms;
        if let Some(previous) = self.previous_transit_ms {
            let deviation = (transit - previous).abs();
            self.jitter_ms += (deviation - self.jitter_ms) / 16.0;
            self.peak_deviation_ms = (self.peak_deviation_ms * 0.995).max(deviation);
        }
        self.previous_transit_ms = Some(transit);
    }

    /// Accepts one packet. `payload` longer than one frame is truncated.
    pub fn push(
        &mut self,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        payload_type: u8,
        payload: &[u8],
        arrival: Instant,
    ) -> PushOutcome {
        let mut outcome = PushOutcome::Buffered;
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.stats.resets += 1;
                outcome = PushOutcome::Reset;
            }
            self.reset();
            self.ssrc = Some(ssrc);
        }
        let mut extended = self.extend_sequence(sequence);
        if let Some(highest) = self.highest_seq
            && (extended as i64 - highest as i64).abs() > RESTART_JUMP
        {
            self.stats.resets += 1;
            self.reset();
            self.ssrc = Some(ssrc);
            extended = self.extend_sequence(sequence);
            outcome = PushOutcome::Reset;
        }
        if let Some(last_played) = self.last_played_seq
            && extended <= last_played
        {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if let State::Playing { next_seq } = self.state
            && extended >= next_seq + SLOTS as u64
        {
            // Further ahead than the ring can hold: the sender jumped; restart around it.
            self.stats.resets += 1;
            self.clear_slots();
            self.state = State::Idle;
            outcome = PushOutcome::Reset;
        }
        let slot = &mut self.slots[(extended % SLOTS as u64) as usize];
        if slot.occupied {
            if slot.extended_seq == extended {
                self.stats.duplicates += 1;
                return PushOutcome::Duplicate;
            }
            // An older frame still occupies the slot (buffering longer than the ring): it can
            // no longer be played in order, so the newer one wins.
            self.buffered -= 1;
            self.stats.lost += 1;
        }
        let kept = payload.len().min(MAX_FRAME_PAYLOAD);
        if kept < payload.len() {
            self.stats.oversized += 1;
        }
        slot.occupied = true;
        slot.extended_seq = extended;
        slot.payload_type = payload_type;
        slot.timestamp = timestamp;
        slot.len = kept as u8;
        slot.payload[..kept].copy_from_slice(&payload[..kept]);
        self.buffered += 1;
        self.stats.pushed += 1;
        self.highest_seq = Some(self.highest_seq.map_or(extended, |h| h.max(extended)));
        self.update_jitter(timestamp, arrival);
        if self.state == State::Idle {
            self.state = State::Buffering { since: arrival };
        }
        outcome
    }

    fn lowest_buffered(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|slot| slot.occupied)
            .map(|slot| slot.extended_seq)
            .min()
    }

    fn slot_holds(&self, extended: u64) -> bool {
        let slot = &self.slots[(extended % SLOTS as u64) as usize];
        slot.occupied && slot.extended_seq == extended
    }

    fn take_slot(&mut self, extended: u64) -> Option<usize> {
        let index = (extended % SLOTS as u64) as usize;
        let slot = &mut self.slots[index];
        if slot.occupied && slot.extended_seq == extended {
            slot.occupied = false;
            self.buffered -= 1;
            Some(index)
        } else {
            None
        }
    }

    /// Called once per 20 ms tick.
    pub fn pop_frame(&mut self, now: Instant) -> Playout<'_> {
        let next_seq = match self.state {
            State::Idle => return Playout::Missing,
            State::Buffering { since } => {
                let waited = now.saturating_duration_since(since);
                if waited < Duration::from_millis(self.target_delay_ms() as u64) {
                    return Playout::Missing;
                }
                let Some(lowest) = self.lowest_buffered() else {
                    self.state = State::Idle;
                    return Playout::Missing;
                };
                lowest
            }
            State::Playing { next_seq } => next_seq,
        };
        let mut next_seq = next_seq;

        if self.buffered == 0 {
            self.empty_ticks += 1;
            if self.empty_ticks >= REBUFFER_AFTER_EMPTY_TICKS {
                // The sender has paused; resume with fresh buffering when it comes back. The
                // pause itself is not network jitter, so the transit baseline restarts too.
                self.state = State::Idle;
                self.previous_transit_ms = None;
                return Playout::Missing;
            }
            self.state = State::Playing { next_seq };
            return Playout::Concealed;
        }
        // Ticks already spent concealing an underrun stand in for the frames that were
        // missing then: if those frames never arrive (the sender paused, e.g. for DTMF), skip
        // them now rather than concealing the same stretch of time twice.
        let mut underrun_debt = std::mem::take(&mut self.empty_ticks);
        while underrun_debt > 0 && !self.slot_holds(next_seq) {
            self.stats.lost += 1;
            self.last_played_seq = Some(next_seq);
            next_seq += 1;
            underrun_debt -= 1;
        }

        // Shrink latency if we have been running deeper than needed for a while.
        let target_frames = (self.target_delay_ms() / FRAME_MS).max(1) as usize;
        if self.buffered > target_frames + 1 {
            self.over_target_ticks += 1;
            if self.over_target_ticks >= SHRINK_AFTER_TICKS {
                self.over_target_ticks = 0;
                if self.take_slot(next_seq).is_some() {
                    self.stats.dropped_for_latency += 1;
                } else {
                    self.stats.lost += 1;
                }
                self.last_played_seq = Some(next_seq);
                next_seq += 1;
            }
        } else {
            self.over_target_ticks = 0;
        }

        self.state = State::Playing {
            next_seq: next_seq + 1,
        };
        self.last_played_seq = Some(next_seq);
        match self.take_slot(next_seq) {
            Some(index) => {
                self.stats.played += 1;
                let slot = &self.slots[index];
                Playout::Frame {
                    payload_type: slot.payload_type,
                    timestamp: slot.timestamp,
                    payload: &slot.payload[..slot.len as usize],
                }
            }
            None => {
                self.stats.lost += 1;
                Playout::Concealed
            }
        }
    }
}

/// Packet-loss concealment in the PCM domain: repeat the last good frame, quieter each time,
/// then fall silent. Repeating beats silence for a single lost frame (speech is locally
/// periodic); fading avoids a "stuck" buzz when losses run on.
#[derive(Debug, Clone)]
pub struct LossConcealer {
    last_good: Frame,
    consecutive: u32,
}

/// Concealed frames played before giving up and emitting silence (60 ms).
const CONCEAL_REPEATS: u32 = 3;

impl Default for LossConcealer {
    fn default() -> Self {
        LossConcealer {
            last_good: [0; FRAME_SAMPLES],
            consecutive: 0,
        }
    }
}

impl LossConcealer {
    /// Remembers a frame that was actually received.
    pub fn record_good(&mut self, frame: &Frame) {
        self.last_good = *frame;
        self.consecutive = 0;
    }

    /// Fills `out` with a stand-in for a lost frame.
    pub fn conceal(&mut self, out: &mut Frame) {
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive > CONCEAL_REPEATS {
            *out = [0; FRAME_SAMPLES];
            return;
        }
        // Halve the level on each repeat: -6 dB, -12 dB, -18 dB.
        let shift = self.consecutive;
        for (sample, &previous) in out.iter_mut().zip(self.last_good.iter()) {
            *sample = previous >> shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0xABCD;

    struct FakeClock {
        start: Instant,
    }

    impl FakeClock {
        fn new() -> Self {
            FakeClock {
                start: Instant::now(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.start + Duration::from_millis(ms)
        }
    }

    fn config() -> JitterConfig {
        JitterConfig {
            min_delay_ms: 40,
            max_delay_ms: 200,
        }
    }

    fn payload(seq: u16) -> [u8; 160] {
        [seq as u8; 160]
    }

    fn push(buffer: &mut JitterBuffer, seq: u16, arrival: Instant) -> PushOutcome {
        buffer.push(
            SSRC,
            seq,
            (seq as u32).wrapping_mul(160),
            0,
            &payload(seq),
            arrival,
        )
    }

    /// Returns the first payload byte of a played frame, or 'C'/'M' markers.
    fn pop(buffer: &mut JitterBuffer, now: Instant) -> Option<u8> {
        match buffer.pop_frame(now) {
            Playout::Frame { payload, .. } => Some(payload[0]),
            Playout::Concealed => Some(b'C'),
            Playout::Missing => None,
        }
    }

    #[test]
    fn waits_for_target_delay_then_plays_in_order() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        assert_eq!(pop(&mut buffer, clock.at(0)), None);
        push(&mut buffer, 10, clock.at(0));
        push(&mut buffer, 11, clock.at(20));
        assert_eq!(pop(&mut buffer, clock.at(20)), None, "still buffering");
        push(&mut buffer, 12, clock.at(40));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(10));
        assert_eq!(pop(&mut buffer, clock.at(60)), Some(11));
        assert_eq!(pop(&mut buffer, clock.at(80)), Some(12));
    }

    #[test]
    fn reorders_packets() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 3, clock.at(0));
        push(&mut buffer, 1, clock.at(1));
        push(&mut buffer, 2, clock.at(2));
        let played: Vec<_> = (0..3)
            .map(|tick| pop(&mut buffer, clock.at(100 + tick * 20)))
            .collect();
        // Reordering reads as jitter, so the target delay (and first playout) moves out.
        assert_eq!(played, vec![Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        assert_eq!(push(&mut buffer, 5, clock.at(0)), PushOutcome::Buffered);
        assert_eq!(push(&mut buffer, 5, clock.at(1)), PushOutcome::Duplicate);
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(5));
        // A copy arriving after playout is late, not played twice.
        assert_eq!(push(&mut buffer, 5, clock.at(41)), PushOutcome::Late);
        assert_eq!(buffer.stats().duplicates, 1);
        assert_eq!(buffer.stats().late, 1);
    }

    #[test]
    fn loss_is_concealed_when_later_packets_wait() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 1, clock.at(0));
        push(&mut buffer, 3, clock.at(40));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(1));
        assert_eq!(pop(&mut buffer, clock.at(60)), Some(b'C'));
        assert_eq!(pop(&mut buffer, clock.at(80)), Some(3));
        assert_eq!(buffer.stats().lost, 1);
        // Packet 2 turning up now is late.
        assert_eq!(push(&mut buffer, 2, clock.at(81)), PushOutcome::Late);
    }

    #[test]
    fn underrun_holds_position_so_a_late_packet_still_plays() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 1, clock.at(0));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(1));
        assert_eq!(pop(&mut buffer, clock.at(60)), Some(b'C'));
        push(&mut buffer, 2, clock.at(70));
        assert_eq!(pop(&mut buffer, clock.at(80)), Some(2));
        assert_eq!(buffer.stats().lost, 0);
    }

    #[test]
    fn gap_after_underrun_is_not_concealed_twice() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 1, clock.at(0));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(1));
        // The sender spends sequence numbers 2..=5 on something else (RFC 4733 events):
        // four ticks of underrun, concealed while they happen.
        for tick in 1..=4 {
            assert_eq!(pop(&mut buffer, clock.at(40 + tick * 20)), Some(b'C'));
        }
        push(&mut buffer, 6, clock.at(130));
        assert_eq!(
            pop(&mut buffer, clock.at(140)),
            Some(6),
            "no second concealment"
        );
        assert_eq!(buffer.stats().lost, 4);
    }

    #[test]
    fn sequence_wraps_around() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        let sequence = [65534u16, 65535, 0, 1];
        for (index, seq) in sequence.iter().enumerate() {
            let timestamp = (u32::MAX - 200).wrapping_add(index as u32 * 160); // wraps too
            let arrival = clock.at(index as u64 * 20);
            buffer.push(SSRC, *seq, timestamp, 0, &payload(*seq), arrival);
        }
        let played: Vec<_> = (0..4)
            .map(|tick| pop(&mut buffer, clock.at(60 + tick * 20)))
            .collect();
        assert_eq!(played, vec![Some(254), Some(255), Some(0), Some(1)]);
        assert_eq!(buffer.stats().late, 0);
    }

    #[test]
    fn ssrc_change_resets_and_rebuffers() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 100, clock.at(0));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(100));
        let outcome = buffer.push(0x9999, 7, 0, 0, &payload(7), clock.at(60));
        assert_eq!(outcome, PushOutcome::Reset);
        // Sequence 7 would be "late" under the old source; under the new one it plays.
        assert_eq!(pop(&mut buffer, clock.at(60)), None, "re-buffering");
        assert_eq!(pop(&mut buffer, clock.at(100)), Some(7));
        assert_eq!(buffer.stats().resets, 1);
    }

    #[test]
    fn big_sequence_jump_restarts_instead_of_concealing_for_ages() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 1, clock.at(0));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(1));
        assert_eq!(push(&mut buffer, 20000, clock.at(60)), PushOutcome::Reset);
        push(&mut buffer, 20001, clock.at(80));
        assert_eq!(pop(&mut buffer, clock.at(100)), Some(20000u16 as u8));
        assert_eq!(pop(&mut buffer, clock.at(120)), Some(20001u16 as u8));
    }

    #[test]
    fn long_pause_goes_missing_and_rebuffers() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        push(&mut buffer, 1, clock.at(0));
        assert_eq!(pop(&mut buffer, clock.at(40)), Some(1));
        let mut outputs = Vec::new();
        for tick in 1..=12 {
            outputs.push(pop(&mut buffer, clock.at(40 + tick * 20)));
        }
        assert_eq!(outputs[0], Some(b'C'));
        assert_eq!(outputs[11], None);
        // Sender resumes with the next sequence number after the pause.
        push(&mut buffer, 2, clock.at(1000));
        assert_eq!(pop(&mut buffer, clock.at(1000)), None);
        assert_eq!(pop(&mut buffer, clock.at(1040)), Some(2));
    }

    #[test]
    fn target_delay_grows_with_jitter_and_respects_bounds() {
        let clock = FakeClock::new();
        let mut steady = JitterBuffer::new(config());
        for seq in 0..100u16 {
            push(&mut steady, seq, clock.at(seq as u64 * 20));
        }
        assert_eq!(steady.target_delay_ms(), 40, "no jitter: minimum delay");

        let mut jittery = JitterBuffer::new(config());
        for seq in 0..100u16 {
            // Alternate 0 and 30 ms extra delay.
            let extra = if seq % 2 == 0 { 0 } else { 30 };
            push(&mut jittery, seq, clock.at(seq as u64 * 20 + extra));
        }
        let target = jittery.target_delay_ms();
        assert!(
            target > 60,
            "target {target} should exceed the 30 ms swings"
        );
        assert!(target <= 200);
        assert!(jittery.jitter_ms() > 20.0);

        let mut wild = JitterBuffer::new(config());
        for seq in 0..100u16 {
            let extra = if seq % 2 == 0 { 0 } else { 900 };
            push(&mut wild, seq, clock.at(seq as u64 * 20 + extra));
        }
        assert_eq!(wild.target_delay_ms(), 200, "clamped to max");
    }

    #[test]
    fn excess_depth_is_trimmed_over_time() {
        let clock = FakeClock::new();
        let mut buffer = JitterBuffer::new(config());
        // A burst of 10 frames arrives at once, then steady 20 ms pacing.
        for seq in 0..10u16 {
            push(&mut buffer, seq, clock.at(0));
        }
        for tick in 0..200u16 {
            let now = clock.at(40 + tick as u64 * 20);
            push(&mut buffer, 10 + tick, now);
            pop(&mut buffer, now);
        }
        assert!(buffer.stats().dropped_for_latency > 0);
        assert!(
            buffer.buffered_frames() <= 4,
            "{}",
            buffer.buffered_frames()
        );
    }

    #[test]
    fn concealer_repeats_attenuated_then_goes_silent() {
        let mut concealer = LossConcealer::default();
        concealer.record_good(&[1000; FRAME_SAMPLES]);
        let mut out = [0i16; FRAME_SAMPLES];
        concealer.conceal(&mut out);
        assert_eq!(out[0], 500);
        concealer.conceal(&mut out);
        assert_eq!(out[0], 250);
        concealer.conceal(&mut out);
        assert_eq!(out[0], 125);
        concealer.conceal(&mut out);
        assert_eq!(out, [0; FRAME_SAMPLES]);
        concealer.record_good(&[800; FRAME_SAMPLES]);
        concealer.conceal(&mut out);
        assert_eq!(out[0], 400);
    }
}
