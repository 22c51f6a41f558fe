//! The caller's ear: voice activity detection, echo rejection, end-of-turn
//! detection and interruption (barge-in) for one call, on a thread of its own.
//!
//! Silero is model inference (about 70 µs per 20 ms frame here): it must not
//! run on the async runtime, and handing every frame to a shared pool would
//! cost a channel round trip per frame anyway. One small thread per call owns
//! the call's VAD state, the detectors (plain state machines in
//! [`crate::speech::vad`]) and the caller audio since the turn began, and
//! sends the pipeline only the few events that matter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use crate::media::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::speech::vad::{EchoGate, InterruptionDetector, InterruptionEvent};
use crate::speech::{
    BargeInConfig, EndpointConfig, EndpointDetector, EndpointEvent, SileroVad, SileroVadModel,
    VadWindow,
};

/// What the pipeline tells its listener.
// The frame travels inline on purpose: boxing it would allocate 50 times a
// second per call, and the channel's slots are allocated once.
#[allow(clippy::large_enum_variant)]
pub enum ListenerInput {
    /// A frame of caller audio, with the loudest sample Frontdoor sent over
    /// the echo tail when the frame was received (the echo reference).
    Frame { frame: Frame, reference_peak: u16 },
    /// Frontdoor started or stopped talking (interruptions are only armed
    /// while it talks).
    BotSpeaking(bool),
    /// The recognised words of a short burst were (or were not) a backchannel.
    Verdict { burst: u32, backchannel: bool },
    /// The words of the turn up to `speech_end` form a complete request: end
    /// it sooner (ignored if the caller has spoken since).
    UtteranceComplete { speech_end: Duration },
    /// The audio is about to stop (a bridged call ended): a turn in progress
    /// ends now instead of being lost.
    FinishTurn,
}

/// When to offer a turn's audio for a live partial transcript while the
/// speaker is still talking (a pause in the turn offers it anyway, as
/// [`ListenerEvent::TurnPausing`]).
#[derive(Clone)]
pub struct PartialPolicy {
    /// Continuous speech before a turn's first offer. Longer than `every`:
    /// most questions are over within a couple of seconds, and a partial
    /// started just before the caller stops only holds a recogniser (and
    /// the core the turn's own pass would borrow) as the turn is recognised.
    pub first: Duration,
    /// Continuous speech between two offers.
    pub every: Duration,
    /// Whether a recogniser is free now; audio is copied and offered only
    /// then, so partials cost nothing under load.
    pub worker_idle: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for PartialPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialPolicy")
            .field("first", &self.first)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// What the listener tells the pipeline.
#[derive(Debug)]
pub enum ListenerEvent {
    /// The caller started talking (stream time of the onset).
    SpeechStarted { onset: Duration },
    /// Something speech-like started over Frontdoor: hold its audio.
    Pause { onset: Duration },
    /// It was a cough or a click: let Frontdoor carry on.
    Resume { onset: Duration },
    /// A short burst over Frontdoor ended; its words decide whether it was a
    /// backchannel (answer with [`Listener::verdict`]).
    ShortBurst {
        burst: u32,
        onset: Duration,
        end: Duration,
        audio: Vec<i16>,
    },
    /// The detector took (or, the caller having spoken again since the
    /// burst, ignored) the verdict on a short burst: the pipeline acts on
    /// its verdict only once `accepted`, so it never answers or carries on
    /// over a caller who is still talking.
    VerdictTaken { burst: u32, accepted: bool },
    /// The caller talked over Frontdoor long enough to count.
    BargeIn { onset: Duration },
    /// The caller has been silent a moment inside a turn (the turn may or may
    /// not be over): the audio so far, to recognise ahead of the end of turn.
    TurnPausing {
        onset: Duration,
        speech_end: Duration,
        /// Stream time the pause was judged long enough (for the latency log).
        at: Duration,
        audio: Vec<i16>,
    },
    /// The caller spoke again after a [`ListenerEvent::TurnPausing`]: what
    /// was recognised or prepared for that pause is not the whole turn.
    TurnResumed,
    /// The caller has been talking for a while without a pause and a
    /// recogniser is idle: the turn's audio so far, for a partial transcript
    /// (see [`PartialPolicy`]).
    TurnInProgress { onset: Duration, audio: Vec<i16> },
    /// The caller finished a turn: their audio from just before the onset.
    EndOfTurn {
        audio: Vec<i16>,
        onset: Duration,
        speech_end: Duration,
        /// When the silence after `speech_end` was judged long enough.
        detected_at: Duration,
    },
}

/// Handle to a call's listener thread; dropping it stops the thread.
pub struct Listener {
    input: std_mpsc::SyncSender<ListenerInput>,
    pub events: mpsc::Receiver<ListenerEvent>,
    dropped_frames: u64,
}

/// A second of frames: if the thread falls this far behind, frames are
/// dropped (and counted) rather than queued without bound.
const INPUT_DEPTH: usize = 50;
/// Audio kept before a short burst's onset, so its first phoneme is whole.
const BURST_PRE_ROLL: Duration = Duration::from_millis(100);
/// Audio kept after the last speech window, so the final consonant is whole.
const TAIL: Duration = Duration::from_millis(150);
/// Silence inside a turn after which its audio is recognised speculatively.
const SPECULATE_AFTER: Duration = Duration::from_millis(192);
/// The same when a recogniser is idle: recognition is the longest step
/// between the end of a caller's speech and the answer, so it starts as soon
/// as a pause is plausible. A pause that turns out to be mid-sentence costs
/// only an idle recogniser's time (the pass is cancelled when the caller
/// goes on); under load the longer wait avoids wasted passes.
const SPECULATE_AFTER_IDLE: Duration = Duration::from_millis(64);

impl Listener {
    pub fn spawn(
        model: Arc<SileroVadModel>,
        endpoint: EndpointConfig,
        barge_in: BargeInConfig,
        call_id: &str,
    ) -> std::io::Result<Listener> {
        Self::spawn_with(model, endpoint, barge_in, call_id, None)
    }

    /// [`spawn`](Self::spawn), offering long turns for partial transcripts.
    pub fn spawn_with(
        model: Arc<SileroVadModel>,
        endpoint: EndpointConfig,
        barge_in: BargeInConfig,
        call_id: &str,
        partials: Option<PartialPolicy>,
    ) -> std::io::Result<Listener> {
        let (input, input_rx) = std_mpsc::sync_channel(INPUT_DEPTH);
        let (events_tx, events) = mpsc::channel(16);
        let max_turn = endpoint.max_turn;
        std::thread::Builder::new()
            .name(format!(
                "listen-{}",
                call_id.chars().take(8).collect::<String>()
            ))
            .spawn(move || {
                let mut ear = Ear {
                    vad: SileroVad::new(model),
                    endpoint: EndpointDetector::new(endpoint),
                    echo: EchoGate::new(&barge_in),
                    interruption: InterruptionDetector::new(barge_in),
                    audio: VecDeque::new(),
                    audio_start: 0,
                    position: 0,
                    turn_from: None,
                    keep: samples_for(max_turn + Duration::from_secs(1)),
                    caller_peak: 0,
                    reference_peak: 0,
                    speculated: false,
                    bot_speaking: false,
                    partials,
                    last_partial: Duration::ZERO,
                    partial_offered: false,
                };
                let mut events = Vec::new();
                while let Ok(input) = input_rx.recv() {
                    match input {
                        ListenerInput::BotSpeaking(speaking) => {
                            ear.bot_speaking = speaking;
                            ear.interruption.set_bot_speaking(speaking)
                        }
                        ListenerInput::FinishTurn => ear.finish_turn(&mut events),
                        ListenerInput::Verdict { burst, backchannel } => {
                            let accepted = ear.interruption.verdict(burst, backchannel);
                            events.push(ListenerEvent::VerdictTaken { burst, accepted });
                        }
                        ListenerInput::UtteranceComplete { speech_end } => {
                            if ear.endpoint.last_speech_end() != Some(speech_end) {
                                continue;
                            }
                            ear.endpoint.set_utterance_complete(true);
                            // The shorter silence may already have passed.
                            if let Some(event) = ear.endpoint.tick(ear.vad.stream_time()) {
                                ear.on_endpoint(event, &mut events);
                            }
                        }
                        ListenerInput::Frame {
                            frame,
                            reference_peak,
                        } => ear.hear(&frame, reference_peak, &mut events),
                    }
                    for event in events.drain(..) {
                        if events_tx.blocking_send(event).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Listener {
            input,
            events,
            dropped_frames: 0,
        })
    }

    /// Hands a frame of caller audio over without ever blocking the caller.
    pub fn hear(&mut self, frame: &Frame, reference_peak: u16) {
        let input = ListenerInput::Frame {
            frame: *frame,
            reference_peak,
        };
        if self.input.try_send(input).is_err() {
            self.dropped_frames += 1;
            if self.dropped_frames.is_power_of_two() {
                warn!(
                    dropped = self.dropped_frames,
                    "listener falling behind; caller audio dropped"
                );
            }
        }
    }

    pub fn bot_speaking(&self, speaking: bool) {
        self.control(ListenerInput::BotSpeaking(speaking));
    }

    pub fn verdict(&self, burst: u32, backchannel: bool) {
        self.control(ListenerInput::Verdict { burst, backchannel });
    }

    pub fn utterance_complete(&self, speech_end: Duration) {
        self.control(ListenerInput::UtteranceComplete { speech_end });
    }

    /// The events, for a consumer on another task than the one feeding
    /// frames; [`Self::events`] is left closed.
    pub fn take_events(&mut self) -> mpsc::Receiver<ListenerEvent> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.events, closed)
    }

    /// Ends a turn in progress now (its [`ListenerEvent::EndOfTurn`] follows):
    /// the audio is about to stop.
    pub fn finish_turn(&self) {
        self.control(ListenerInput::FinishTurn);
    }

    fn control(&self, input: ListenerInput) {
        if self.input.try_send(input).is_err() {
            warn!("listener input full; a control message was dropped");
        }
    }
}

fn samples_for(d: Duration) -> usize {
    (d.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000
}

struct Ear {
    vad: SileroVad,
    endpoint: EndpointDetector,
    echo: EchoGate,
    interruption: InterruptionDetector,
    /// Caller audio, bounded to the longest turn; `audio_start` is the stream
    /// sample index of `audio[0]`.
    audio: VecDeque<i16>,
    audio_start: usize,
    position: usize,
    /// Sample index the current turn's audio starts at.
    turn_from: Option<usize>,
    keep: usize,
    /// Loudest caller sample and echo reference since the last VAD window.
    caller_peak: u16,
    reference_peak: u16,
    /// The current pause in the turn was already recognised speculatively.
    speculated: bool,
    /// Frontdoor is talking: speech now is an interruption, not a turn to
    /// show live.
    bot_speaking: bool,
    partials: Option<PartialPolicy>,
    /// Stream time the current turn's audio was last offered for a
    /// transcript (its onset at first).
    last_partial: Duration,
    /// The current turn's audio has been offered for a transcript.
    partial_offered: bool,
}

impl Ear {
    fn hear(&mut self, frame: &Frame, reference_peak: u16, events: &mut Vec<ListenerEvent>) {
        self.audio.extend(frame.iter().copied());
        self.position += FRAME_SAMPLES;
        while self.audio.len() > self.keep {
            self.audio.pop_front();
            self.audio_start += 1;
        }
        let frame_peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        self.caller_peak = self.caller_peak.max(frame_peak);
        self.reference_peak = self.reference_peak.max(reference_peak);
        let window = match self.vad.push_frame(frame) {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "VAD failed on a frame");
                return;
            }
        };
        let is_caller = self
            .echo
            .is_caller(window.end, self.caller_peak, self.reference_peak);
        self.caller_peak = frame_peak;
        self.reference_peak = reference_peak;
        // Frontdoor's own echo is not the caller: neither a barge-in nor a turn.
        let window = if is_caller {
            window
        } else {
            VadWindow {
                probability: 0.0,
                ..window
            }
        };
        if let Some(event) = self.interruption.observe(window) {
            events.push(match event {
                InterruptionEvent::Pause { onset } => ListenerEvent::Pause { onset },
                InterruptionEvent::Resume { onset } => ListenerEvent::Resume { onset },
                InterruptionEvent::ShortBurst { burst, onset, end } => ListenerEvent::ShortBurst {
                    burst,
                    onset,
                    end,
                    audio: self.audio_between(
                        samples_for(onset.saturating_sub(BURST_PRE_ROLL)),
                        samples_for(end + TAIL),
                    ),
                },
                InterruptionEvent::BargeIn { onset, .. } => ListenerEvent::BargeIn { onset },
            });
        }
        if let Some(event) = self.endpoint.observe(window) {
            self.on_endpoint(event, events);
        } else if let Some(last_speech_end) = self.endpoint.last_speech_end() {
            let speaking = window.probability >= self.endpoint.config().silence_threshold;
            if speaking
                && self.partial_due(window.end)
                && let Some(from) = self.turn_from
            {
                self.offered_at(window.end);
                events.push(ListenerEvent::TurnInProgress {
                    onset: self.endpoint.turn_onset().unwrap_or_default(),
                    audio: self.audio_between(from, self.position),
                });
            }
            // A pause inside a turn: recognise what was said so far, so that
            // a complete request can end the turn sooner and its words are
            // ready when it ends.
            if window.probability >= self.endpoint.config().silence_threshold {
                if self.speculated {
                    // The caller went on: the words so far were not the whole request.
                    self.endpoint.set_utterance_complete(false);
                    events.push(ListenerEvent::TurnResumed);
                }
                self.speculated = false;
            } else if !self.speculated
                && self.pause_long_enough(window.end.saturating_sub(last_speech_end))
                && let Some(from) = self.turn_from
            {
                self.speculated = true;
                self.offered_at(window.end);
                let onset = self.endpoint.turn_onset().unwrap_or_default();
                events.push(ListenerEvent::TurnPausing {
                    onset,
                    speech_end: last_speech_end,
                    at: window.end,
                    audio: self.audio_between(from, samples_for(last_speech_end + TAIL)),
                });
            }
        }
    }

    fn on_endpoint(&mut self, event: EndpointEvent, events: &mut Vec<ListenerEvent>) {
        match event {
            EndpointEvent::SpeechStarted { onset, audio_from } => {
                self.turn_from = Some(samples_for(audio_from).max(self.audio_start));
                self.speculated = false;
                self.last_partial = onset;
                self.partial_offered = false;
                events.push(ListenerEvent::SpeechStarted { onset });
            }
            EndpointEvent::EndOfTurn {
                onset,
                speech_end,
                detected_at,
            } => {
                let from = self.turn_from.take().unwrap_or(samples_for(onset));
                events.push(ListenerEvent::EndOfTurn {
                    audio: self.audio_between(from, samples_for(speech_end + TAIL)),
                    onset,
                    speech_end,
                    detected_at,
                });
            }
        }
    }

    /// Whether a pause of `silent_for` inside a turn is long enough to
    /// recognise the turn so far: sooner while a recogniser is idle.
    fn pause_long_enough(&self, silent_for: Duration) -> bool {
        silent_for >= SPECULATE_AFTER
            || (silent_for >= SPECULATE_AFTER_IDLE
                && self
                    .partials
                    .as_ref()
                    .is_some_and(|policy| (policy.worker_idle)()))
    }

    /// The turn's audio up to stream time `at` went for a transcript (a
    /// partial, or a speculative pass shown as one).
    fn offered_at(&mut self, at: Duration) {
        self.last_partial = at;
        self.partial_offered = true;
    }

    /// Whether the turn's audio should be offered for a partial transcript at
    /// stream time `now`. The idle check comes last: it takes the pool's lock.
    fn partial_due(&self, now: Duration) -> bool {
        partial_due(
            self.partials.as_ref(),
            self.bot_speaking || self.turn_from.is_none(),
            self.partial_offered,
            now.saturating_sub(self.last_partial),
        )
    }

    /// The audio stops: a turn with speech in it ends at its last speech.
    fn finish_turn(&mut self, events: &mut Vec<ListenerEvent>) {
        let (Some(onset), Some(speech_end)) =
            (self.endpoint.turn_onset(), self.endpoint.last_speech_end())
        else {
            return;
        };
        let from = self.turn_from.take().unwrap_or(samples_for(onset));
        events.push(ListenerEvent::EndOfTurn {
            audio: self.audio_between(from, samples_for(speech_end + TAIL)),
            onset,
            speech_end,
            detected_at: self.vad.stream_time(),
        });
        // A fresh detector: the turn just reported must not end twice.
        self.endpoint = EndpointDetector::new(self.endpoint.config().clone());
    }

    /// Caller audio between two stream sample indices, clamped to what is kept.
    fn audio_between(&self, from: usize, to: usize) -> Vec<i16> {
        let from = from.max(self.audio_start);
        let to = to.min(self.position);
        if to <= from {
            return Vec::new();
        }
        self.audio
            .range(from - self.audio_start..to - self.audio_start)
            .copied()
            .collect()
    }
}

/// Whether a turn's audio should be offered for a partial transcript:
/// partials are wanted, the speaker is in a turn of their own (`elsewhere`:
/// not in a turn, or talking over Frontdoor), they have talked `for` long
/// enough since the turn began (`first`) or since the last offer (`every`,
/// once `offered`), and a recogniser is idle.
fn partial_due(
    policy: Option<&PartialPolicy>,
    elsewhere: bool,
    offered: bool,
    talked_for: Duration,
) -> bool {
    policy.is_some_and(|policy| {
        let wait = if offered { policy.every } else { policy.first };
        !elsewhere && talked_for >= wait && (policy.worker_idle)()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn policy(idle: Arc<AtomicBool>, asked: Arc<AtomicUsize>) -> PartialPolicy {
        PartialPolicy {
            first: Duration::from_millis(2500),
            every: Duration::from_millis(1500),
            worker_idle: Arc::new(move || {
                asked.fetch_add(1, Ordering::Relaxed);
                idle.load(Ordering::Relaxed)
            }),
        }
    }

    #[test]
    fn partials_are_offered_after_continuous_speech_on_an_idle_recogniser() {
        let idle = Arc::new(AtomicBool::new(true));
        let asked = Arc::new(AtomicUsize::new(0));
        let policy = policy(idle.clone(), asked.clone());
        let ms = Duration::from_millis;
        // A turn's first offer waits longer: a short question is over
        // before it, and its own recognition gets the recogniser.
        assert!(!partial_due(Some(&policy), false, false, ms(2000)));
        assert!(partial_due(Some(&policy), false, false, ms(2600)));
        // Later offers come every 1.5 s of further speech.
        assert!(partial_due(Some(&policy), false, true, ms(1600)));
        assert!(!partial_due(Some(&policy), false, true, ms(1400)));
        let long = ms(3000);
        assert!(
            !partial_due(None, false, false, long),
            "partials not wanted"
        );
        assert!(
            !partial_due(Some(&policy), true, false, long),
            "talking over Frontdoor"
        );
        idle.store(false, Ordering::Relaxed);
        assert!(
            !partial_due(Some(&policy), false, false, long),
            "every recogniser busy"
        );
    }

    #[test]
    fn the_pool_is_asked_only_when_a_partial_is_otherwise_due() {
        let idle = Arc::new(AtomicBool::new(true));
        let asked = Arc::new(AtomicUsize::new(0));
        let policy = policy(idle, asked.clone());
        partial_due(Some(&policy), false, false, Duration::from_millis(100));
        partial_due(Some(&policy), false, true, Duration::from_millis(100));
        partial_due(Some(&policy), false, false, Duration::from_secs(2));
        partial_due(Some(&policy), true, false, Duration::from_secs(5));
        assert_eq!(
            asked.load(Ordering::Relaxed),
            0,
            "the pool lock is not taken per window"
        );
        partial_due(Some(&policy), false, false, Duration::from_secs(3));
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }
}
