//! The caller's ear: voice activity detection, end-of-turn detection and
//! barge-in for one call, on a thread of its own.
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
use crate::speech::{
    BargeInConfig, BargeInDetector, EndpointConfig, EndpointDetector, EndpointEvent, SileroVad,
    SileroVadModel,
};

/// What the pipeline tells its listener.
pub enum ListenerInput {
    Frame(Box<Frame>),
    /// Frontdoor started or stopped talking (barge-in is only armed while it talks).
    BotSpeaking(bool),
}

/// What the listener tells the pipeline.
#[derive(Debug)]
pub enum ListenerEvent {
    /// The caller started talking (stream time of the onset).
    SpeechStarted { onset: Duration },
    /// The caller talked over Frontdoor long enough to count.
    BargeIn { onset: Duration },
    /// The caller finished a turn: their audio from just before the onset.
    EndOfTurn {
        audio: Vec<i16>,
        onset: Duration,
        speech_end: Duration,
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
                    barge_in: BargeInDetector::new(barge_in),
                    audio: VecDeque::new(),
                    audio_start: 0,
                    position: 0,
                    turn_from: None,
                    keep: samples_for(max_turn + Duration::from_secs(1)),
                };
                while let Ok(input) = input_rx.recv() {
                    match input {
                        ListenerInput::BotSpeaking(speaking) => {
                            ear.barge_in.set_bot_speaking(speaking)
                        }
                        ListenerInput::Frame(frame) => {
                            for event in ear.hear(&frame) {
                                if events_tx.blocking_send(event).is_err() {
                                    return;
                                }
                            }
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
    pub fn hear(&mut self, frame: &Frame) {
        if self
            .input
            .try_send(ListenerInput::Frame(Box::new(*frame)))
            .is_err()
        {
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
        let _ = self.input.try_send(ListenerInput::BotSpeaking(speaking));
    }
}

fn samples_for(d: Duration) -> usize {
    (d.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000
}

struct Ear {
    vad: SileroVad,
    endpoint: EndpointDetector,
    barge_in: BargeInDetector,
    /// Caller audio, bounded to the longest turn; `audio_start` is the stream
    /// sample index of `audio[0]`.
    audio: VecDeque<i16>,
    audio_start: usize,
    position: usize,
    /// Sample index the current turn's audio starts at.
    turn_from: Option<usize>,
    keep: usize,
}

impl Ear {
    fn hear(&mut self, frame: &Frame) -> Vec<ListenerEvent> {
        self.audio.extend(frame.iter().copied());
        self.position += FRAME_SAMPLES;
        while self.audio.len() > self.keep {
            self.audio.pop_front();
            self.audio_start += 1;
        }
        let mut events = Vec::new();
        let window = match self.vad.push_frame(frame) {
            Ok(Some(w)) => w,
            Ok(None) => return events,
            Err(e) => {
                warn!(error = %e, "VAD failed on a frame");
                return events;
            }
        };
        if let Some(b) = self.barge_in.observe(window) {
            events.push(ListenerEvent::BargeIn { onset: b.onset });
        }
        match self.endpoint.observe(window) {
            Some(EndpointEvent::SpeechStarted { onset, audio_from }) => {
                self.turn_from = Some(samples_for(audio_from).max(self.audio_start));
                events.push(ListenerEvent::SpeechStarted { onset });
            }
            Some(EndpointEvent::EndOfTurn {
                onset, speech_end, ..
            }) => {
                let from = self
                    .turn_from
                    .take()
                    .unwrap_or(samples_for(onset))
                    .max(self.audio_start);
                // A little audio after the last speech window keeps the final consonant.
                let to = (samples_for(speech_end) + samples_for(Duration::from_millis(150)))
                    .min(self.position);
                let audio: Vec<i16> = if to > from {
                    self.audio
                        .range(from - self.audio_start..to - self.audio_start)
                        .copied()
                        .collect()
                } else {
                    Vec::new()
                };
                events.push(ListenerEvent::EndOfTurn {
                    audio,
                    onset,
                    speech_end,
                });
            }
            None => {}
        }
        events
    }
}
