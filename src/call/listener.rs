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
    /// The caller talked over Frontdoor long enough to count.
    BargeIn { onset: Duration },
    /// The caller has been silent a moment inside a turn (the turn may or may
    /// not be over): the audio so far, to recognise ahead of the end of turn.
    TurnPausing {
        onset: Duration,
        speech_end: Duration,
        audio: Vec<i16>,
    },
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

impl Listener {
    pub fn spawn(
        model: Arc<SileroVadModel>,
        endpoint: EndpointConfig,
        barge_in: BargeInConfig,
        call_id: &str,
    ) -> std::io::Result<Listener> {
        let (input, input_rx) = std_mpsc::sync_channel(INPUT_DEPTH);
        let (events_tx, events) = mpsc::channel(16);
        let max_turn = endpoint.max_turn;
        std::thread::Builder::new()
            .name(format!("listen-{}", &call_id[..call_id.len().min(8)]))
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
                };
                let mut events = Vec::new();
                while let Ok(input) = input_rx.recv() {
                    match input {
                        ListenerInput::BotSpeaking(speaking) => {
                            ear.interruption.set_bot_speaking(speaking)
                        }
                        ListenerInput::Verdict { burst, backchannel } => {
                            ear.interruption.verdict(burst, backchannel);
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
            // A pause inside a turn: recognise what was said so far, so that
            // a complete request can end the turn sooner and its words are
            // ready when it ends.
            if window.probability >= self.endpoint.config().silence_threshold {
                if self.speculated {
                    // The caller went on: the words so far were not the whole request.
                    self.endpoint.set_utterance_complete(false);
                }
                self.speculated = false;
            } else if !self.speculated
                && window.end.saturating_sub(last_speech_end) >= SPECULATE_AFTER
                && let Some(from) = self.turn_from
            {
                self.speculated = true;
                let onset = self.endpoint.turn_onset().unwrap_or_default();
                events.push(ListenerEvent::TurnPausing {
                    onset,
                    speech_end: last_speech_end,
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
