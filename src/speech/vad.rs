//! Voice activity: Silero VAD on ONNX Runtime, and the turn-taking state
//! machines that read its probabilities.
//!
//! [`SileroVad`] is per call and cheap (a 256-float state and a 288-sample
//! buffer); the ONNX sessions live in a shared [`SileroVadModel`].
//! [`EndpointDetector`] and [`BargeInDetector`] are sans-IO: fed
//! [`VadWindow`]s (and, for timeouts, the stream time), they never read a
//! clock or touch audio, so tests drive them with synthetic sequences.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ort::session::Session;
use ort::value::TensorRef;

use super::{SpeechError, TELEPHONY_RATE, runtime};

/// Silero v5/v6 at 8 kHz takes 256-sample windows (32 ms)…
pub const WINDOW_SAMPLES: usize = 256;
/// …preceded by the last 32 samples of the previous window (the Python
/// wrapper's "context"; without it the probabilities come out wrong).
const CONTEXT_SAMPLES: usize = 32;
/// Recurrent state: [2, 1, 128].
const STATE_LEN: usize = 2 * 128;
const MICROS_PER_SAMPLE: u64 = 1_000_000 / TELEPHONY_RATE as u64;

/// One VAD decision: the speech probability of the audio in `start..end`
/// (times since the start of the caller's stream).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadWindow {
    pub start: Duration,
    pub end: Duration,
    pub probability: f32,
}

/// The Silero model, shared by every call.
pub struct SileroVadModel {
    sessions: runtime::SessionPool,
    path: PathBuf,
}

impl std::fmt::Debug for SileroVadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVadModel")
            .field("path", &self.path)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl SileroVadModel {
    /// One session: an inference takes well under a millisecond, so one
    /// session serves many calls (each call keeps its own state).
    pub fn load(path: &Path) -> Result<Arc<Self>, SpeechError> {
        Self::load_with(path, 1)
    }

    pub fn load_with(path: &Path, sessions: usize) -> Result<Arc<Self>, SpeechError> {
        if !path.is_file() {
            return Err(SpeechError::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        runtime::ensure_initialised()?;
        let sessions = runtime::SessionPool::new(new_sessions(path, sessions)?);
        Ok(Arc::new(Self {
            sessions,
            path: path.to_path_buf(),
        }))
    }

    /// Runs one window (context + samples) and updates `state` in place.
    fn infer(&self, input: &[f32], state: &mut [f32]) -> Result<f32, SpeechError> {
        let sample_rate = [i64::from(TELEPHONY_RATE)];
        let input = TensorRef::from_array_view(([1usize, input.len()], input))?;
        let state_in = TensorRef::from_array_view(([2usize, 1, 128], &*state))?;
        let rate = TensorRef::from_array_view(((), &sample_rate[..]))?;
        let mut session = self.lock_session();
        let outputs = session.run(ort::inputs![
            "input" => input,
            "state" => state_in,
            "sr" => rate,
        ])?;
        let (_, probability) = outputs["output"].try_extract_tensor::<f32>()?;
        let probability = probability.first().copied().unwrap_or(0.0);
        let (_, new_state) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if new_state.len() != state.len() {
            return Err(SpeechError::Inference(format!(
                "Silero returned a state of {} values, expected {}",
                new_state.len(),
                state.len()
            )));
        }
        state.copy_from_slice(new_state);
        Ok(probability)
    }

    fn lock_session(&self) -> parking_lot::MutexGuard<'_, Session> {
        self.sessions.lock()
    }
}

fn new_sessions(path: &Path, count: usize) -> Result<Vec<Session>, SpeechError> {
    let failed = |reason: String| SpeechError::ModelLoad {
        path: path.to_path_buf(),
        reason,
    };
    // Silero's input never changes shape (one 288-sample window), so the
    // arena settles at the few hundred kB one run needs and spares every
    // call 31 rounds of allocation a second.
    let sessions =
        runtime::open_sessions(path, count, 1, runtime::RunMemory::FixedShapes).map_err(failed)?;
    for session in &sessions {
        check_signature(session).map_err(failed)?;
    }
    Ok(sessions)
}

fn check_signature(session: &Session) -> Result<(), String> {
    let has = |names: &mut dyn Iterator<Item = &str>, wanted: &[&str]| {
        let names: Vec<&str> = names.collect();
        wanted.iter().all(|w| names.contains(w))
    };
    let inputs_ok = has(
        &mut session.inputs().iter().map(|i| i.name()),
        &["input", "state", "sr"],
    );
    let outputs_ok = has(
        &mut session.outputs().iter().map(|o| o.name()),
        &["output", "stateN"],
    );
    if !inputs_ok || !outputs_ok {
        return Err(
            "not a Silero VAD v5/v6 model (expected inputs input, state, sr and outputs output, stateN)"
                .into(),
        );
    }
    Ok(())
}

/// Per-call Silero VAD over 8 kHz audio: buffers 20 ms frames into 32 ms
/// windows and reports one probability per window, with its stream time.
pub struct SileroVad {
    model: Arc<SileroVadModel>,
    state: Vec<f32>,
    /// Context followed by the window being filled.
    buffer: Vec<f32>,
    filled: usize,
    /// Samples in completed windows since the stream started.
    samples_done: u64,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("samples_done", &self.samples_done)
            .field("filled", &self.filled)
            .finish()
    }
}

impl SileroVad {
    pub fn new(model: Arc<SileroVadModel>) -> Self {
        Self {
            model,
            state: vec![0.0; STATE_LEN],
            buffer: vec![0.0; CONTEXT_SAMPLES + WINDOW_SAMPLES],
            filled: 0,
            samples_done: 0,
        }
    }

    /// Feeds 8 kHz samples (any length); calls `on_window` for each window
    /// completed. Allocation-free after construction.
    pub fn push(
        &mut self,
        samples: &[i16],
        mut on_window: impl FnMut(VadWindow),
    ) -> Result<(), SpeechError> {
        for &sample in samples {
            self.buffer[CONTEXT_SAMPLES + self.filled] = f32::from(sample) / 32768.0;
            self.filled += 1;
            if self.filled == WINDOW_SAMPLES {
                let probability = self.model.infer(&self.buffer, &mut self.state)?;
                let start = self.samples_done;
                self.samples_done += WINDOW_SAMPLES as u64;
                self.buffer.copy_within(WINDOW_SAMPLES.., 0);
                self.filled = 0;
                on_window(VadWindow {
                    start: samples_to_time(start),
                    end: samples_to_time(self.samples_done),
                    probability,
                });
            }
        }
        Ok(())
    }

    /// Feeds one frame of at most [`WINDOW_SAMPLES`] samples (a 20 ms frame
    /// is 160): at most one window completes.
    pub fn push_frame(&mut self, frame: &[i16]) -> Result<Option<VadWindow>, SpeechError> {
        let mut last = None;
        self.push(frame, |window| last = Some(window))?;
        Ok(last)
    }

    /// Stream time of the audio fed so far.
    pub fn stream_time(&self) -> Duration {
        samples_to_time(self.samples_done + self.filled as u64)
    }

    /// Forgets the audio so far (a new call on a reused detector).
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.buffer.fill(0.0);
        self.filled = 0;
        self.samples_done = 0;
    }
}

fn samples_to_time(samples: u64) -> Duration {
    Duration::from_micros(samples.saturating_mul(MICROS_PER_SAMPLE))
}

/// Thresholds of the [`EndpointDetector`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Probability at or above which a window starts speech.
    pub speech_threshold: f32,
    /// Once speaking, windows at or above this still count as speech
    /// (hysteresis: a soft syllable does not end the turn).
    pub silence_threshold: f32,
    /// Speech must last this long before the turn starts (clicks are shorter).
    pub min_speech: Duration,
    /// Silence that ends a turn.
    pub end_of_turn_silence: Duration,
    /// Silence that ends a turn when the words so far form a complete
    /// request (see [`EndpointDetector::set_utterance_complete`]).
    pub quick_end_of_turn_silence: Duration,
    /// Audio before the onset handed to ASR, so the first phoneme is whole.
    pub pre_roll: Duration,
    /// A turn is ended after this long even if the caller keeps talking.
    pub max_turn: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            speech_threshold: 0.5,
            silence_threshold: 0.35,
            min_speech: Duration::from_millis(90),
            end_of_turn_silence: Duration::from_millis(700),
            quick_end_of_turn_silence: Duration::from_millis(256),
            pre_roll: Duration::from_millis(200),
            max_turn: Duration::from_secs(30),
        }
    }
}

/// What the [`EndpointDetector`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// The caller started a turn at `onset`; ASR should take audio from
    /// `audio_from` (the onset less the pre-roll).
    SpeechStarted {
        onset: Duration,
        audio_from: Duration,
    },
    /// The turn that started at `onset` ended: speech stopped at
    /// `speech_end`, and the silence was long enough at `detected_at`.
    EndOfTurn {
        onset: Duration,
        speech_end: Duration,
        detected_at: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EndpointState {
    Silence,
    Candidate {
        onset: Duration,
        last_speech_end: Duration,
    },
    Speech {
        onset: Duration,
        last_speech_end: Duration,
    },
}

/// Speech start and end-of-turn detection over VAD probabilities.
#[derive(Debug, Clone)]
pub struct EndpointDetector {
    config: EndpointConfig,
    state: EndpointState,
    utterance_complete: bool,
}

impl EndpointDetector {
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            state: EndpointState::Silence,
            utterance_complete: false,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Whether the caller is in a turn (speech confirmed, not yet ended).
    pub fn in_turn(&self) -> bool {
        matches!(self.state, EndpointState::Speech { .. })
    }

    /// Stream time the current turn's speech started, while in a turn.
    pub fn turn_onset(&self) -> Option<Duration> {
        match self.state {
            EndpointState::Speech { onset, .. } => Some(onset),
            _ => None,
        }
    }

    /// Stream time the current turn's speech was last heard, while in a turn.
    pub fn last_speech_end(&self) -> Option<Duration> {
        match self.state {
            EndpointState::Speech {
                last_speech_end, ..
            } => Some(last_speech_end),
            _ => None,
        }
    }

    /// Hint from the ASR partial transcript: the words so far form a complete
    /// request, so a shorter silence ends the turn. Reset at each new turn.
    pub fn set_utterance_complete(&mut self, complete: bool) {
        self.utterance_complete = complete;
    }

    fn end_silence(&self) -> Duration {
        if self.utterance_complete {
            self.config.quick_end_of_turn_silence
        } else {
            self.config.end_of_turn_silence
        }
    }

    /// Feeds one VAD window.
    pub fn observe(&mut self, window: VadWindow) -> Option<EndpointEvent> {
        let p = window.probability;
        match self.state {
            EndpointState::Silence => {
                if p >= self.config.speech_threshold {
                    self.state = EndpointState::Candidate {
                        onset: window.start,
                        last_speech_end: window.end,
                    };
                    return self.confirm_candidate(p);
                }
                None
            }
            EndpointState::Candidate { onset, .. } => {
                if p >= self.config.silence_threshold {
                    self.state = EndpointState::Candidate {
                        onset,
                        last_speech_end: window.end,
                    };
                    self.confirm_candidate(p)
                } else {
                    self.state = EndpointState::Silence;
                    None
                }
            }
            EndpointState::Speech { onset, .. } => {
                if p >= self.config.silence_threshold {
                    self.state = EndpointState::Speech {
                        onset,
                        last_speech_end: window.end,
                    };
                    if window.end.saturating_sub(onset) >= self.config.max_turn {
                        return Some(self.end_turn(onset, window.end, window.end));
                    }
                    None
                } else {
                    self.tick(window.end)
                }
            }
        }
    }

    /// Stream time has reached `now` with no new window (audio stopped
    /// arriving): ends the turn if the silence is long enough.
    pub fn tick(&mut self, now: Duration) -> Option<EndpointEvent> {
        let EndpointState::Speech {
            onset,
            last_speech_end,
        } = self.state
        else {
            return None;
        };
        (now.saturating_sub(last_speech_end) >= self.end_silence())
            .then(|| self.end_turn(onset, last_speech_end, now))
    }

    fn confirm_candidate(&mut self, p: f32) -> Option<EndpointEvent> {
        let EndpointState::Candidate {
            onset,
            last_speech_end,
        } = self.state
        else {
            return None;
        };
        if p >= self.config.speech_threshold
            && last_speech_end.saturating_sub(onset) >= self.config.min_speech
        {
            self.state = EndpointState::Speech {
                onset,
                last_speech_end,
            };
            self.utterance_complete = false;
            return Some(EndpointEvent::SpeechStarted {
                onset,
                audio_from: onset.saturating_sub(self.config.pre_roll),
            });
        }
        None
    }

    fn end_turn(&mut self, onset: Duration, speech_end: Duration, now: Duration) -> EndpointEvent {
        self.state = EndpointState::Silence;
        self.utterance_complete = false;
        EndpointEvent::EndOfTurn {
            onset,
            speech_end,
            detected_at: now,
        }
    }
}

/// Thresholds of the [`BargeInDetector`] and the [`InterruptionDetector`].
#[derive(Debug, Clone)]
pub struct BargeInConfig {
    /// Higher than the endpoint threshold: Frontdoor's own voice echoed by
    /// the caller's phone arrives quieter and scores lower than real speech.
    pub threshold: f32,
    /// Speech must be sustained this long: coughs and clicks are shorter.
    pub min_speech: Duration,
    /// Dips below the threshold shorter than this do not break the run
    /// (one low window between syllables).
    pub max_gap: Duration,
    /// A burst of speech that ends before this long may be a backchannel
    /// ("mm hmm", "yeah", "okay"): its words decide. Longer speech is a
    /// barge-in whatever it says.
    pub max_backchannel: Duration,
    /// Silence that ends a short burst (a backchannel's syllables are closer).
    pub burst_end_gap: Duration,
    /// Geigel double-talk threshold: caller audio whose peak is below this
    /// fraction of the peak Frontdoor sent over the echo tail is taken for
    /// Frontdoor's own echo. 0.5 assumes at least 6 dB of echo return loss,
    /// which handsets and network hybrids give (G.168).
    pub echo_ratio: f32,
    /// Once the caller is heard over the echo, quieter windows within this
    /// long still count as the caller (soft syllables of real double talk).
    pub double_talk_hold: Duration,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        Self {
            threshold: 0.6,
            min_speech: Duration::from_millis(200),
            max_gap: Duration::from_millis(64),
            max_backchannel: Duration::from_millis(800),
            burst_end_gap: Duration::from_millis(192),
            echo_ratio: 0.5,
            double_talk_hold: Duration::from_millis(160),
        }
    }
}

/// The caller talked over Frontdoor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BargeInEvent {
    /// Where the caller's speech began: ASR starts here.
    pub onset: Duration,
    /// Stream time of the window that confirmed it.
    pub detected_at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BargeInState {
    Listening,
    Candidate {
        onset: Duration,
        last_speech_end: Duration,
    },
    Fired,
}

/// Decides, while Frontdoor is speaking, whether the caller is talking over
/// it. Inactive (never fires) while Frontdoor is silent.
#[derive(Debug, Clone)]
pub struct BargeInDetector {
    config: BargeInConfig,
    bot_speaking: bool,
    state: BargeInState,
}

impl BargeInDetector {
    pub fn new(config: BargeInConfig) -> Self {
        Self {
            config,
            bot_speaking: false,
            state: BargeInState::Listening,
        }
    }

    pub fn config(&self) -> &BargeInConfig {
        &self.config
    }

    /// Frontdoor started or stopped playing audio to the caller.
    pub fn set_bot_speaking(&mut self, speaking: bool) {
        if speaking != self.bot_speaking {
            self.bot_speaking = speaking;
            self.state = BargeInState::Listening;
        }
    }

    pub fn bot_speaking(&self) -> bool {
        self.bot_speaking
    }

    /// Feeds one VAD window; fires at most once per utterance of Frontdoor's.
    pub fn observe(&mut self, window: VadWindow) -> Option<BargeInEvent> {
        if !self.bot_speaking {
            return None;
        }
        let is_speech = window.probability >= self.config.threshold;
        match self.state {
            BargeInState::Fired => None,
            BargeInState::Listening => {
                if is_speech {
                    self.state = BargeInState::Candidate {
                        onset: window.start,
                        last_speech_end: window.end,
                    };
                    return self.confirm(window.end);
                }
                None
            }
            BargeInState::Candidate {
                onset,
                last_speech_end,
            } => {
                if is_speech {
                    self.state = BargeInState::Candidate {
                        onset,
                        last_speech_end: window.end,
                    };
                    self.confirm(window.end)
                } else {
                    if window.end.saturating_sub(last_speech_end) > self.config.max_gap {
                        self.state = BargeInState::Listening;
                    }
                    None
                }
            }
        }
    }

    fn confirm(&mut self, now: Duration) -> Option<BargeInEvent> {
        let BargeInState::Candidate {
            onset,
            last_speech_end,
        } = self.state
        else {
            return None;
        };
        if last_speech_end.saturating_sub(onset) >= self.config.min_speech {
            self.state = BargeInState::Fired;
            return Some(BargeInEvent {
                onset,
                detected_at: now,
            });
        }
        None
    }
}

/// What the [`InterruptionDetector`] asks of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptionEvent {
    /// Something speech-like started over Frontdoor: hold its audio (do not
    /// drop it) until this is confirmed or dies out.
    Pause { onset: Duration },
    /// It died out before it could be speech (a cough, a click): carry on
    /// from where the audio was held.
    Resume { onset: Duration },
    /// A short burst of speech ended: a backchannel or a short request. The
    /// pipeline recognises `onset..end` and answers with
    /// [`InterruptionDetector::verdict`] quoting `burst`.
    ShortBurst {
        burst: u32,
        onset: Duration,
        end: Duration,
    },
    /// The caller is talking over Frontdoor: flush its audio and listen.
    BargeIn {
        onset: Duration,
        detected_at: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum InterruptionState {
    Listening,
    /// Speech-like audio over Frontdoor; its audio is held.
    Provisional {
        onset: Duration,
        last_speech_end: Duration,
    },
    /// A short burst ended; waiting for the pipeline's verdict on its words.
    AwaitingVerdict {
        onset: Duration,
        last_speech_end: Duration,
    },
    Fired,
}

/// Turn-taking while Frontdoor talks, in three steps so that it stops fast
/// yet never for good on a cough: at the first speech-like window it asks
/// for a pause (Frontdoor goes quiet within a window or two); speech that
/// lasts past [`BargeInConfig::max_backchannel`] is a barge-in; a burst that
/// dies out is either a click (resume at once) or, once it is long enough
/// to hold words, a backchannel candidate whose recognised words decide.
///
/// Sans-IO like the other detectors: windows in, events out. Windows must
/// already be cleared of Frontdoor's own echo (see [`EchoGate`]).
#[derive(Debug, Clone)]
pub struct InterruptionDetector {
    config: BargeInConfig,
    bot_speaking: bool,
    state: InterruptionState,
    burst: u32,
}

impl InterruptionDetector {
    pub fn new(config: BargeInConfig) -> Self {
        Self {
            config,
            bot_speaking: false,
            state: InterruptionState::Listening,
            burst: 0,
        }
    }

    /// Frontdoor started or stopped playing audio; a new utterance re-arms
    /// the detector.
    pub fn set_bot_speaking(&mut self, speaking: bool) {
        if speaking != self.bot_speaking {
            self.bot_speaking = speaking;
            self.state = InterruptionState::Listening;
        }
    }

    /// Whether Frontdoor's audio should be held right now.
    pub fn holding(&self) -> bool {
        matches!(
            self.state,
            InterruptionState::Provisional { .. } | InterruptionState::AwaitingVerdict { .. }
        )
    }

    /// The pipeline's verdict on a [`InterruptionEvent::ShortBurst`]: a
    /// backchannel resumes listening (Frontdoor carries on), anything else
    /// counts as a barge-in. A verdict on an older burst is ignored (the
    /// caller kept talking since), and false is returned.
    pub fn verdict(&mut self, burst: u32, backchannel: bool) -> bool {
        if burst != self.burst || !matches!(self.state, InterruptionState::AwaitingVerdict { .. }) {
            return false;
        }
        self.state = if backchannel {
            InterruptionState::Listening
        } else {
            InterruptionState::Fired
        };
        true
    }

    /// Feeds one (echo-cleared) VAD window.
    pub fn observe(&mut self, window: VadWindow) -> Option<InterruptionEvent> {
        if !self.bot_speaking {
            return None;
        }
        let is_speech = window.probability >= self.config.threshold;
        match self.state {
            InterruptionState::Fired => None,
            InterruptionState::Listening => {
                if !is_speech {
                    return None;
                }
                self.state = InterruptionState::Provisional {
                    onset: window.start,
                    last_speech_end: window.end,
                };
                Some(InterruptionEvent::Pause {
                    onset: window.start,
                })
            }
            InterruptionState::Provisional {
                onset,
                last_speech_end,
            }
            | InterruptionState::AwaitingVerdict {
                onset,
                last_speech_end,
            } => {
                if is_speech {
                    // More speech after a burst: the verdict on it is moot.
                    if matches!(self.state, InterruptionState::AwaitingVerdict { .. }) {
                        self.burst = self.burst.wrapping_add(1);
                    }
                    if window.end.saturating_sub(onset) >= self.config.max_backchannel {
                        self.state = InterruptionState::Fired;
                        return Some(InterruptionEvent::BargeIn {
                            onset,
                            detected_at: window.end,
                        });
                    }
                    self.state = InterruptionState::Provisional {
                        onset,
                        last_speech_end: window.end,
                    };
                    return None;
                }
                if matches!(self.state, InterruptionState::AwaitingVerdict { .. }) {
                    return None;
                }
                let gap = window.end.saturating_sub(last_speech_end);
                let spoken = last_speech_end.saturating_sub(onset);
                if spoken < self.config.min_speech {
                    if gap > self.config.max_gap {
                        self.state = InterruptionState::Listening;
                        return Some(InterruptionEvent::Resume { onset });
                    }
                    return None;
                }
                if gap >= self.config.burst_end_gap {
                    self.burst = self.burst.wrapping_add(1);
                    self.state = InterruptionState::AwaitingVerdict {
                        onset,
                        last_speech_end,
                    };
                    return Some(InterruptionEvent::ShortBurst {
                        burst: self.burst,
                        onset,
                        end: last_speech_end,
                    });
                }
                None
            }
        }
    }
}

/// Tells the caller's voice from Frontdoor's own voice echoed back by their
/// phone: a Geigel double-talk detector. Echo can be no louder than what
/// was sent, less the echo return loss, so caller audio quieter than
/// [`BargeInConfig::echo_ratio`] times the loudest sample Frontdoor sent
/// over the echo tail is taken for echo.
///
/// The reference is the peak level the media layer sent over the tail
/// (`MediaHandle::recent_sent_peak`), not the waveform: a level comparison
/// needs no alignment finer than the tail, costs nothing per frame, and
/// unlike an adaptive echo canceller cannot diverge. What it cannot do is
/// hear a caller who talks more softly than the echo bound over Frontdoor
/// at full voice; they are still heard in Frontdoor's pauses.
#[derive(Debug, Clone)]
pub struct EchoGate {
    ratio: f32,
    hold: Duration,
    caller_until: Duration,
}

/// Below this peak (about -40 dBFS) Frontdoor sent nothing that could echo.
const QUIET_REFERENCE: u16 = 330;

impl EchoGate {
    pub fn new(config: &BargeInConfig) -> Self {
        Self {
            ratio: config.echo_ratio,
            hold: config.double_talk_hold,
            caller_until: Duration::ZERO,
        }
    }

    /// Whether the audio of the window ending at `end`, with peak
    /// `caller_peak`, can be the caller (true) or is only echo (false), given
    /// the loudest sample Frontdoor sent over the echo tail.
    pub fn is_caller(&mut self, end: Duration, caller_peak: u16, reference_peak: u16) -> bool {
        if reference_peak < QUIET_REFERENCE
            || f32::from(caller_peak) > self.ratio * f32::from(reference_peak)
        {
            self.caller_until = end + self.hold;
            return true;
        }
        end <= self.caller_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(32);

    /// Windows of 32 ms starting at `from`, one per probability.
    fn windows(from: Duration, probabilities: &[f32]) -> Vec<VadWindow> {
        probabilities
            .iter()
            .enumerate()
            .map(|(i, &probability)| {
                let start = from + WINDOW * i as u32;
                VadWindow {
                    start,
                    end: start + WINDOW,
                    probability,
                }
            })
            .collect()
    }

    /// A run of `ms` at probability `p` (rounded to whole windows).
    fn run(ms: u32, p: f32) -> Vec<f32> {
        vec![p; (ms / 32) as usize]
    }

    fn feed_endpoint(detector: &mut EndpointDetector, windows: &[VadWindow]) -> Vec<EndpointEvent> {
        windows
            .iter()
            .filter_map(|w| detector.observe(*w))
            .collect()
    }

    #[test]
    fn speech_starts_after_min_speech_and_reports_onset_with_pre_roll() {
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        let mut probabilities = run(320, 0.05);
        probabilities.extend(run(640, 0.9));
        let events = feed_endpoint(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert_eq!(
            events,
            vec![EndpointEvent::SpeechStarted {
                onset: Duration::from_millis(320),
                audio_from: Duration::from_millis(120),
            }]
        );
        assert!(detector.in_turn());
    }

    #[test]
    fn a_click_does_not_start_a_turn() {
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        let probabilities = [0.1, 0.95, 0.9, 0.1, 0.1, 0.1];
        let events = feed_endpoint(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert!(events.is_empty(), "{events:?}");
        assert!(!detector.in_turn());
    }

    #[test]
    fn turn_ends_after_configured_silence_with_hysteresis() {
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        let mut probabilities = run(320, 0.9);
        // Soft syllables between the thresholds keep the turn going.
        probabilities.extend(run(320, 0.4));
        probabilities.extend(run(320, 0.9));
        // A pause shorter than the end-of-turn silence does not end it.
        probabilities.extend(run(480, 0.1));
        probabilities.extend(run(320, 0.9));
        probabilities.extend(run(1600, 0.05));
        let events = feed_endpoint(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert_eq!(events.len(), 2, "{events:?}");
        let EndpointEvent::EndOfTurn {
            onset,
            speech_end,
            detected_at,
        } = events[1]
        else {
            panic!("{events:?}");
        };
        assert_eq!(onset, Duration::ZERO);
        // Speech: 0..1440 ms (320+320+320+480 of pause), then 320 ms more = 1760 ms.
        assert_eq!(speech_end, Duration::from_millis(1760));
        assert!(detected_at >= speech_end + Duration::from_millis(700));
        assert!(detected_at < speech_end + Duration::from_millis(700) + WINDOW);
        assert!(!detector.in_turn());
    }

    #[test]
    fn a_complete_utterance_ends_the_turn_sooner() {
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        let mut probabilities = run(640, 0.9);
        probabilities.extend(run(1600, 0.05));
        let all = windows(Duration::ZERO, &probabilities);
        let (speech, silence) = all.split_at(20);
        feed_endpoint(&mut detector, speech);
        detector.set_utterance_complete(true);
        let events = feed_endpoint(&mut detector, silence);
        let Some(EndpointEvent::EndOfTurn { detected_at, .. }) = events.first() else {
            panic!("{events:?}");
        };
        assert!(
            *detected_at < Duration::from_millis(640 + 400),
            "{detected_at:?}"
        );
    }

    #[test]
    fn tick_ends_a_turn_when_audio_stops_arriving() {
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        feed_endpoint(&mut detector, &windows(Duration::ZERO, &run(640, 0.9)));
        assert_eq!(detector.tick(Duration::from_millis(1000)), None);
        assert!(matches!(
            detector.tick(Duration::from_millis(1400)),
            Some(EndpointEvent::EndOfTurn { .. })
        ));
        assert_eq!(detector.tick(Duration::from_millis(5000)), None);
    }

    #[test]
    fn an_endless_turn_is_cut_at_max_turn() {
        let config = EndpointConfig {
            max_turn: Duration::from_secs(2),
            ..EndpointConfig::default()
        };
        let mut detector = EndpointDetector::new(config);
        let events = feed_endpoint(&mut detector, &windows(Duration::ZERO, &run(3200, 0.9)));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, EndpointEvent::EndOfTurn { speech_end, .. } if *speech_end >= Duration::from_secs(2)))
        );
    }

    fn feed_barge_in(detector: &mut BargeInDetector, windows: &[VadWindow]) -> Vec<BargeInEvent> {
        windows
            .iter()
            .filter_map(|w| detector.observe(*w))
            .collect()
    }

    #[test]
    fn a_cough_does_not_barge_in() {
        let mut detector = BargeInDetector::new(BargeInConfig::default());
        detector.set_bot_speaking(true);
        let mut probabilities = run(640, 0.02);
        probabilities.extend(run(120, 0.95));
        probabilities.extend(run(640, 0.02));
        let events = feed_barge_in(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn sustained_speech_barges_in_and_reports_its_onset() {
        let mut detector = BargeInDetector::new(BargeInConfig::default());
        detector.set_bot_speaking(true);
        // Frontdoor has been talking for 1.2 s when the caller starts.
        let mut probabilities = run(1216, 0.05);
        probabilities.extend(run(416, 0.9));
        let events = feed_barge_in(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].onset, Duration::from_millis(1216));
        // Confirmed once 200 ms of speech is in: 7 windows of 32 ms.
        assert_eq!(events[0].detected_at, Duration::from_millis(1216 + 224));
    }

    #[test]
    fn a_short_dip_between_syllables_does_not_reset_the_run() {
        let mut detector = BargeInDetector::new(BargeInConfig::default());
        detector.set_bot_speaking(true);
        let probabilities = [0.9, 0.9, 0.9, 0.3, 0.9, 0.9, 0.9, 0.9];
        let events = feed_barge_in(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].onset, Duration::ZERO);
    }

    #[test]
    fn two_coughs_apart_do_not_add_up() {
        let mut detector = BargeInDetector::new(BargeInConfig::default());
        detector.set_bot_speaking(true);
        let mut probabilities = run(128, 0.9);
        probabilities.extend(run(160, 0.1));
        probabilities.extend(run(128, 0.9));
        let events = feed_barge_in(&mut detector, &windows(Duration::ZERO, &probabilities));
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn nothing_fires_while_frontdoor_is_silent_and_it_fires_once() {
        let mut detector = BargeInDetector::new(BargeInConfig::default());
        let speech = windows(Duration::ZERO, &run(800, 0.9));
        assert!(feed_barge_in(&mut detector, &speech).is_empty());
        detector.set_bot_speaking(true);
        let later = windows(Duration::from_secs(1), &run(1600, 0.9));
        assert_eq!(feed_barge_in(&mut detector, &later).len(), 1);
        // A new prompt re-arms it.
        detector.set_bot_speaking(false);
        detector.set_bot_speaking(true);
        let again = windows(Duration::from_secs(3), &run(320, 0.9));
        assert_eq!(feed_barge_in(&mut detector, &again).len(), 1);
    }

    fn feed_interruption(
        detector: &mut InterruptionDetector,
        windows: &[VadWindow],
    ) -> Vec<InterruptionEvent> {
        windows
            .iter()
            .filter_map(|w| detector.observe(*w))
            .collect()
    }

    fn talking_detector() -> InterruptionDetector {
        let mut detector = InterruptionDetector::new(BargeInConfig::default());
        detector.set_bot_speaking(true);
        detector
    }

    #[test]
    fn speech_over_frontdoor_pauses_at_its_first_window_then_barges_in() {
        let mut detector = talking_detector();
        let mut probabilities = run(640, 0.05);
        probabilities.extend(run(1600, 0.9));
        let events = feed_interruption(&mut detector, &windows(Duration::ZERO, &probabilities));
        let onset = Duration::from_millis(640);
        assert_eq!(events[0], InterruptionEvent::Pause { onset });
        assert_eq!(
            events[1],
            InterruptionEvent::BargeIn {
                onset,
                // 800 ms of speech, rounded up to a whole window.
                detected_at: onset + Duration::from_millis(800),
            }
        );
        assert_eq!(events.len(), 2, "{events:?}");
    }

    #[test]
    fn a_click_pauses_then_resumes_without_a_verdict() {
        let mut detector = talking_detector();
        let mut probabilities = run(320, 0.05);
        probabilities.extend(run(96, 0.95));
        probabilities.extend(run(640, 0.05));
        let events = feed_interruption(&mut detector, &windows(Duration::ZERO, &probabilities));
        let onset = Duration::from_millis(320);
        assert_eq!(
            events,
            vec![
                InterruptionEvent::Pause { onset },
                InterruptionEvent::Resume { onset }
            ]
        );
        assert!(!detector.holding());
        // Re-armed: the next real interruption still works.
        let later = windows(Duration::from_secs(2), &run(960, 0.9));
        assert!(
            feed_interruption(&mut detector, &later)
                .iter()
                .any(|e| matches!(e, InterruptionEvent::BargeIn { .. }))
        );
    }

    #[test]
    fn a_short_burst_waits_for_the_verdict_on_its_words() {
        let mut detector = talking_detector();
        let mut probabilities = run(320, 0.05);
        probabilities.extend(run(416, 0.9));
        probabilities.extend(run(640, 0.05));
        let events = feed_interruption(&mut detector, &windows(Duration::ZERO, &probabilities));
        let [
            InterruptionEvent::Pause { .. },
            InterruptionEvent::ShortBurst { burst, onset, end },
        ] = events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(onset, Duration::from_millis(320));
        assert_eq!(end, Duration::from_millis(736));
        assert!(detector.holding(), "held while the words are recognised");
        // "yeah": a backchannel; Frontdoor carries on and is re-armed.
        assert!(detector.verdict(burst, true));
        assert!(!detector.holding());
        assert!(!detector.verdict(burst, true), "one verdict per burst");
        // "stop": a short request is a barge-in.
        let again = windows(
            Duration::from_secs(2),
            &[&run(320, 0.9)[..], &run(320, 0.05)].concat(),
        );
        let events = feed_interruption(&mut detector, &again);
        let Some(InterruptionEvent::ShortBurst { burst, .. }) = events.last().copied() else {
            panic!("{events:?}");
        };
        assert!(detector.verdict(burst, false));
        assert!(
            feed_interruption(
                &mut detector,
                &windows(Duration::from_secs(3), &run(960, 0.9))
            )
            .is_empty()
        );
    }

    #[test]
    fn speech_resuming_after_a_burst_makes_its_verdict_moot() {
        let mut detector = talking_detector();
        let mut probabilities = run(320, 0.9);
        probabilities.extend(run(224, 0.05));
        let first = feed_interruption(&mut detector, &windows(Duration::ZERO, &probabilities));
        let Some(InterruptionEvent::ShortBurst { burst, .. }) = first.last().copied() else {
            panic!("{first:?}");
        };
        let more = feed_interruption(
            &mut detector,
            &windows(Duration::from_millis(544), &run(640, 0.9)),
        );
        assert_eq!(
            more,
            vec![InterruptionEvent::BargeIn {
                onset: Duration::ZERO,
                detected_at: Duration::from_millis(800),
            }]
        );
        assert!(!detector.verdict(burst, true), "stale verdict ignored");
    }

    #[test]
    fn nothing_is_held_while_frontdoor_is_silent() {
        let mut detector = InterruptionDetector::new(BargeInConfig::default());
        assert!(
            feed_interruption(&mut detector, &windows(Duration::ZERO, &run(1600, 0.9))).is_empty()
        );
    }

    #[test]
    fn echo_gate_passes_the_caller_and_drops_frontdoors_echo() {
        let mut gate = EchoGate::new(&BargeInConfig::default());
        let ms = Duration::from_millis;
        // Frontdoor silent: anything is the caller.
        assert!(gate.is_caller(ms(32), 500, 0));
        // Frontdoor at -1 dBFS, echo at -10 dB: echo.
        assert!(!gate.is_caller(ms(1_000), 9_200, 29_000));
        // The caller as loud as Frontdoor: double talk, held briefly over soft syllables.
        assert!(gate.is_caller(ms(1_032), 25_000, 29_000));
        assert!(gate.is_caller(ms(1_160), 4_000, 29_000));
        assert!(!gate.is_caller(ms(1_400), 4_000, 29_000));
    }

    #[test]
    fn stream_time_follows_samples() {
        assert_eq!(samples_to_time(8_000), Duration::from_secs(1));
        assert_eq!(samples_to_time(256), Duration::from_millis(32));
    }
}
