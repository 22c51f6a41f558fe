//! One Whisper model in memory, and the per-worker transcriber that decodes
//! utterances with it.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::AsrError;
use super::audio::{
    MAX_WINDOW_SAMPLES, WHISPER_SAMPLE_RATE, active_level_dbfs, split_at_quiet_points,
};
use super::window::{
    DecodeSummary, FULL_WINDOW, GuardLimits, GuardTrip, WindowPolicy, WindowUsed, check_transcript,
    is_non_speech_annotation, restarted_sentence, token_budget, unprompted_ends_it_there,
};

/// Words a council caller is likely to say that Whisper would otherwise
/// spell as something commoner ("fly tipping" → "fly tripping").
pub const DEFAULT_VOCABULARY_PROMPT: &str = "Derby City Council: council tax, bin collection, recycling, \
     Derby Homes, fly-tipping, potholes, parking permit, housing benefit, planning application.";

/// Shortest utterance worth decoding: below this Whisper mostly invents words.
pub const MIN_UTTERANCE_SECONDS: f32 = 0.2;

/// Pieces of long audio are cut at the quietest moment of their last 10 s.
const SPLIT_SEARCH_SAMPLES: usize = 10 * WHISPER_SAMPLE_RATE as usize;

/// How a model decodes; fixed when the model is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct AsrConfig {
    /// Spoken language (`"en"`); `"auto"` lets a multilingual model detect
    /// it. English-only models ignore it.
    pub language: String,
    /// Text the decoder is conditioned on, to bias it towards council words.
    /// Empty for none.
    pub vocabulary_prompt: String,
    /// How the encoder window is chosen.
    pub window: WindowPolicy,
    /// When a fitted window's text is rejected (then the full window is used).
    pub guards: GuardLimits,
    /// Decoder token budget per second of audio (real speech is ~3/s).
    pub tokens_per_second: f32,
    /// Token budget floor, for very short utterances.
    pub min_token_budget: usize,
    /// Let whisper.cpp retry uncertain decodes at temperatures 0.4 and 0.8.
    /// Off by default: the guards and full-window retry already handle the
    /// failures it would catch, at a bounded cost.
    pub temperature_fallback: bool,
    /// Longer input is refused.
    pub max_audio_seconds: f32,
    /// Audio whose loudest quarter is quieter than this (dBFS) is returned as
    /// an empty transcript without decoding: Whisper answers silence with
    /// invented words ("you", "Thank you.").
    pub silence_gate_dbfs: f32,
    /// whisper.cpp threads per transcriber. Keep 1 and run one transcriber
    /// per core: two threads on a busy core ran 3–5× slower than one.
    pub threads: u16,
    /// whisper.cpp's fused attention: the encoder never holds a whole
    /// attention matrix (6 heads × 1500² floats for tiny at the full
    /// window), which saves ~90 MB per worker once a full window has been
    /// decoded — but it decoded 20–30 % slower on this 2-core machine, so
    /// it is off by default.
    pub flash_attention: bool,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            language: "en".to_string(),
            vocabulary_prompt: DEFAULT_VOCABULARY_PROMPT.to_string(),
            window: WindowPolicy::default(),
            guards: GuardLimits::default(),
            tokens_per_second: 8.0,
            min_token_budget: 16,
            temperature_fallback: false,
            max_audio_seconds: 600.0,
            silence_gate_dbfs: -55.0,
            threads: 1,
            flash_attention: false,
        }
    }
}

/// Per-call overrides.
#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// Use this window policy instead of the model's (tests and benchmarks
    /// compare the two).
    pub window: Option<WindowPolicy>,
    /// Decode without the vocabulary prompt.
    pub without_prompt: bool,
    /// Set to abandon the transcription (the caller hung up); checked by
    /// whisper.cpp between graph nodes, so it stops within milliseconds.
    pub cancel: Option<Arc<AtomicBool>>,
    /// whisper.cpp threads for this transcription instead of the model's
    /// `threads` (the pool lends an idle core this way; see
    /// [`super::pool::AsrPoolConfig::threads_when_alone`]).
    pub threads: Option<u16>,
}

/// The text of one utterance and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// What was said, trimmed; empty when Whisper heard no words.
    pub text: String,
    pub audio_seconds: f32,
    /// The encoder window of the (last) pass, and why a fitted one was
    /// abandoned, if it was; `audio_ctx` is 0 when the audio was silence and
    /// nothing was decoded.
    pub window: WindowUsed,
    /// Wall time spent in whisper.cpp.
    pub elapsed: Duration,
    /// Text tokens decoded (special tokens excluded).
    pub text_tokens: usize,
    /// Mean log-probability of those tokens: near 0 is confident.
    pub mean_logprob: f32,
    /// Pieces long audio was split into (1 for an utterance).
    pub chunks: usize,
}

impl Transcript {
    /// Real-time factor: processing time per second of audio.
    pub fn real_time_factor(&self) -> f32 {
        self.elapsed.as_secs_f32() / self.audio_seconds.max(f32::EPSILON)
    }
}

/// A Whisper model loaded once and shared by every transcriber.
pub struct AsrModel {
    context: WhisperContext,
    prompt_tokens: Vec<whisper_rs::WhisperTokenId>,
    end_of_text: whisper_rs::WhisperTokenId,
    config: AsrConfig,
    path: PathBuf,
}

impl std::fmt::Debug for AsrModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrModel")
            .field("path", &self.path)
            .field("prompt_tokens", &self.prompt_tokens.len())
            .field("config", &self.config)
            .finish()
    }
}

impl AsrModel {
    /// Loads a ggml Whisper model (as `frontdoor models fetch` writes it).
    pub fn load(path: &Path, config: AsrConfig) -> Result<Arc<AsrModel>, AsrError> {
        validate_config(&config)?;
        if !path.is_file() {
            return Err(AsrError::ModelMissing(path.to_path_buf()));
        }
        let load_error = |reason: String| AsrError::ModelLoad {
            path: path.to_path_buf(),
            reason,
        };
        let path_text = path
            .to_str()
            .ok_or_else(|| load_error("path is not valid UTF-8".into()))?;
        // whisper.cpp prints to stderr unless hooked; this sends its lines to
        // `tracing`. Idempotent.
        install_whisper_log_hook();
        let mut context_parameters = WhisperContextParameters::default();
        context_parameters.flash_attn(config.flash_attention);
        let context = WhisperContext::new_with_params(path_text, context_parameters)
            .map_err(|e| load_error(e.to_string()))?;
        // Tokenised once here rather than passed as text per call: whisper-rs
        // leaks the C string of every `set_initial_prompt`.
        let prompt_tokens = if config.vocabulary_prompt.trim().is_empty() {
            Vec::new()
        } else {
            context
                .tokenize(&config.vocabulary_prompt, 224)
                .map_err(|e| {
                    AsrError::Config(format!("vocabulary prompt cannot be tokenised: {e}"))
                })?
        };
        let end_of_text = context.token_eot();
        Ok(Arc::new(AsrModel {
            context,
            prompt_tokens,
            end_of_text,
            config,
            path: path.to_path_buf(),
        }))
    }

    /// A new transcriber with its own decoding state (tens of MB): one per
    /// worker thread.
    pub fn transcriber(self: &Arc<Self>) -> Result<Transcriber, AsrError> {
        let state = self
            .context
            .create_state()
            .map_err(|e| AsrError::Inference(format!("cannot create decoding state: {e}")))?;
        Ok(Transcriber {
            model: Arc::clone(self),
            state,
        })
    }

    pub fn config(&self) -> &AsrConfig {
        &self.config
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn validate_config(config: &AsrConfig) -> Result<(), AsrError> {
    if config.threads == 0 {
        return Err(AsrError::Config("threads must be at least 1".into()));
    }
    if !(config.tokens_per_second.is_finite() && config.tokens_per_second > 0.0) {
        return Err(AsrError::Config(
            "tokens_per_second must be positive".into(),
        ));
    }
    if !(config.max_audio_seconds.is_finite() && config.max_audio_seconds >= MIN_UTTERANCE_SECONDS)
    {
        return Err(AsrError::Config("max_audio_seconds is too small".into()));
    }
    if config.language.contains('\0') || config.language.is_empty() {
        return Err(AsrError::Config(
            "language must be a code such as `en`".into(),
        ));
    }
    Ok(())
}

/// Decodes utterances with one whisper.cpp state. Not shared between threads:
/// each worker owns one.
pub struct Transcriber {
    model: Arc<AsrModel>,
    state: WhisperState,
}

/// One decoder pass's output, before the guards judge it.
struct Decoded {
    text: String,
    text_tokens: usize,
    mean_logprob: f32,
}

impl Transcriber {
    /// Loads a model for a single transcriber (the CLI, tests).
    pub fn load(path: &Path, config: AsrConfig) -> Result<Transcriber, AsrError> {
        AsrModel::load(path, config)?.transcriber()
    }

    pub fn model(&self) -> &Arc<AsrModel> {
        &self.model
    }

    /// Transcribes 16 kHz mono audio in [-1, 1].
    ///
    /// Errors for empty, too short (< 0.2 s), over-long or non-finite input;
    /// audio over 30 s is split at quiet points and the texts joined.
    pub fn transcribe(
        &mut self,
        pcm_16k: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        let started = Instant::now();
        let audio_seconds = pcm_16k.len() as f32 / WHISPER_SAMPLE_RATE as f32;
        if pcm_16k.is_empty() {
            return Err(AsrError::EmptyAudio);
        }
        if audio_seconds < MIN_UTTERANCE_SECONDS {
            return Err(AsrError::TooShort {
                seconds: audio_seconds,
                minimum: MIN_UTTERANCE_SECONDS,
            });
        }
        let maximum = self.model.config.max_audio_seconds;
        if audio_seconds > maximum {
            return Err(AsrError::TooLong {
                seconds: audio_seconds,
                maximum,
            });
        }
        if pcm_16k.iter().any(|s| !s.is_finite()) {
            return Err(AsrError::InvalidAudio);
        }

        let pieces = split_at_quiet_points(pcm_16k, MAX_WINDOW_SAMPLES, SPLIT_SEARCH_SAMPLES);
        let min_piece = (MIN_UTTERANCE_SECONDS * WHISPER_SAMPLE_RATE as f32) as usize;
        let mut transcript = Transcript {
            text: String::new(),
            audio_seconds,
            // Stays 0 when every piece was below the silence gate.
            window: WindowUsed {
                audio_ctx: 0,
                fallback: None,
            },
            elapsed: Duration::ZERO,
            text_tokens: 0,
            mean_logprob: 0.0,
            chunks: pieces.len(),
        };
        let mut logprob_sum = 0.0f32;
        for piece in pieces {
            // A sliver left over by the split is a breath, not a word.
            if piece.len() < min_piece
                || active_level_dbfs(&pcm_16k[piece.clone()]) < self.model.config.silence_gate_dbfs
            {
                continue;
            }
            let (decoded, window) = self.transcribe_window(&pcm_16k[piece], options)?;
            if !decoded.text.is_empty() {
                if !transcript.text.is_empty() {
                    transcript.text.push(' ');
                }
                transcript.text.push_str(&decoded.text);
            }
            transcript.text_tokens += decoded.text_tokens;
            logprob_sum += decoded.mean_logprob * decoded.text_tokens as f32;
            transcript.window = WindowUsed {
                audio_ctx: window.audio_ctx,
                fallback: transcript.window.fallback.or(window.fallback),
            };
        }
        if transcript.text_tokens > 0 {
            transcript.mean_logprob = logprob_sum / transcript.text_tokens as f32;
        }
        transcript.elapsed = started.elapsed();
        Ok(transcript)
    }

    /// One ≤ 30 s piece: a fitted window first (when the policy allows), the
    /// full window when the guards reject it.
    fn transcribe_window(
        &mut self,
        pcm: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(Decoded, WindowUsed), AsrError> {
        let config = &self.model.config;
        let policy = options.window.unwrap_or(config.window);
        let audio_seconds = pcm.len() as f32 / WHISPER_SAMPLE_RATE as f32;
        let budget = token_budget(
            audio_seconds,
            config.tokens_per_second,
            config.min_token_budget,
        );
        let guards = config.guards;

        // A fitted window first; when the guards reject its text, a larger
        // fitted retry (if the policy has one), then the full window.
        let level = active_level_dbfs(pcm);
        let judge = |decoded: Decoded| judge_fitted(decoded, audio_seconds, budget, level, &guards);
        let mut first_trip = None;
        let mut next = policy.audio_ctx(pcm.len());
        while let Some(audio_ctx) = next {
            let decoded = self.decode(pcm, Some(audio_ctx), budget, options)?;
            let (decoded, trip) = match judge(decoded) {
                Ok(accepted) => {
                    return Ok((
                        accepted,
                        WindowUsed {
                            audio_ctx,
                            fallback: first_trip,
                        },
                    ));
                }
                Err(rejected) => rejected,
            };
            // Text ending on a comma may be cut short by a tight window, or
            // may be the prompt's doing: tiny.en with the vocabulary prompt
            // wrote "How do I pay my council tax," for 2 of 18 cuts of one
            // question, and without it "... tax." for all 18. A decode of
            // the same window without the prompt (~25 % cheaper than the
            // prompted one, about half the larger retry) settles it: when it
            // passes the guards and ends the sentence on as many words, the
            // prompted words were the whole utterance and are kept, without
            // the comma. Anything else (it stops sooner, goes on, or ends on
            // a comma too) is left to the larger windows: a 4.5 s sentence
            // ended "... is to be old as opposed," at its first window (384)
            // and "... selfish, is" unprompted, and only the full window
            // heard "ill disposed". Only a first window is settled so; a
            // larger one that ends on a comma as well goes on to the next.
            if trip == GuardTrip::Unfinished
                && first_trip.is_none()
                && !options.without_prompt
                && !self.model.prompt_tokens.is_empty()
            {
                let plain = TranscribeOptions {
                    without_prompt: true,
                    ..options.clone()
                };
                let check = self.decode(pcm, Some(audio_ctx), budget, &plain)?;
                if let Ok(check) = judge(check)
                    && unprompted_ends_it_there(&decoded.text, &check.text)
                {
                    tracing::debug!(
                        audio_ctx,
                        rejected = %decoded.text,
                        unprompted = %check.text,
                        "fitted window ended on a comma; the unprompted decode ended the sentence there"
                    );
                    let text = decoded.text.trim_end().trim_end_matches(',').to_string();
                    return Ok((
                        Decoded { text, ..decoded },
                        WindowUsed {
                            audio_ctx,
                            fallback: first_trip.or(Some(trip)),
                        },
                    ));
                }
            }
            first_trip.get_or_insert(trip);
            next = policy.retry_audio_ctx(pcm.len(), audio_ctx);
            tracing::debug!(
                audio_ctx,
                reason = trip.as_str(),
                rejected = %decoded.text,
                retry_audio_ctx = next,
                "fitted Whisper window rejected; decoding with a larger window"
            );
        }
        // No fitted window, or every fitted one rejected (`first_trip` says why).
        // The full window is not judged again, but a sentence it wrote twice
        // is still kept once.
        let decoded = self.decode(pcm, None, budget, options)?;
        let decoded = keep_restarted_sentence(&decoded).unwrap_or(decoded);
        Ok((
            decoded,
            WindowUsed {
                audio_ctx: FULL_WINDOW,
                fallback: first_trip,
            },
        ))
    }

    fn decode(
        &mut self,
        pcm: &[f32],
        audio_ctx: Option<u32>,
        token_budget: usize,
        options: &TranscribeOptions,
    ) -> Result<Decoded, AsrError> {
        let model = &self.model;
        let config = &model.config;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(i32::from(options.threads.unwrap_or(config.threads).max(1)));
        params.set_language(Some(config.language.as_str()));
        params.set_translate(false);
        // Each utterance stands alone: text from the previous caller must not
        // condition this one.
        params.set_no_context(true);
        params.set_no_timestamps(true);
        params.set_single_segment(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_max_tokens(i32::try_from(token_budget).unwrap_or(i32::MAX));
        params.set_audio_ctx(audio_ctx.map_or(0, |ctx| ctx as i32));
        params.set_temperature(0.0);
        params.set_temperature_inc(if config.temperature_fallback {
            0.4
        } else {
            0.0
        });
        if !options.without_prompt && !model.prompt_tokens.is_empty() {
            params.set_tokens(&model.prompt_tokens);
        }
        if let Some(cancel) = &options.cancel {
            // SAFETY: the callback only reads an AtomicBool, and the pointer
            // stays valid for the whole `full` call because `options` (which
            // holds an Arc to it) outlives this function's borrow of it.
            unsafe {
                params.set_abort_callback(Some(abort_requested));
                params.set_abort_callback_user_data(Arc::as_ptr(cancel) as *mut c_void);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(AsrError::Cancelled);
            }
        }

        let outcome = self.state.full(params, pcm);
        if options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(AsrError::Cancelled);
        }
        outcome.map_err(|e| AsrError::Inference(e.to_string()))?;

        let mut text = String::new();
        let mut text_tokens = 0usize;
        let mut logprob_sum = 0.0f32;
        for segment in self.state.as_iter() {
            if let Ok(piece) = segment.to_str_lossy() {
                text.push_str(&piece);
            }
            for index in 0..segment.n_tokens() {
                if let Some(token) = segment.get_token(index)
                    && token.token_id() < model.end_of_text
                {
                    text_tokens += 1;
                    logprob_sum += token.token_data().plog;
                }
            }
        }
        let mut text = text.trim().to_string();
        if is_non_speech_annotation(&text) {
            text.clear();
        }
        Ok(Decoded {
            text,
            text_tokens,
            mean_logprob: if text_tokens > 0 {
                logprob_sum / text_tokens as f32
            } else {
                0.0
            },
        })
    }
}

/// A fitted window's decode as the guards judge it: accepted, kept up to
/// the end of a sentence it then began again (if that passes), or rejected
/// with the first guard it tripped.
fn judge_fitted(
    decoded: Decoded,
    audio_seconds: f32,
    token_budget: usize,
    active_level_dbfs: f32,
    guards: &GuardLimits,
) -> Result<Decoded, (Decoded, GuardTrip)> {
    let summary = DecodeSummary {
        text: &decoded.text,
        audio_seconds,
        text_tokens: decoded.text_tokens,
        token_budget,
        mean_logprob: decoded.mean_logprob,
        active_level_dbfs,
    };
    let Some(trip) = check_transcript(&summary, guards) else {
        return Ok(decoded);
    };
    // A decode that finished the caller's sentence and then began it again
    // is kept up to the sentence's end (if that passes the guards) instead
    // of paying for a second, larger decode.
    if matches!(trip, GuardTrip::TooManyWords | GuardTrip::Repetition)
        && let Some(trimmed) = keep_restarted_sentence(&decoded)
    {
        let summary = DecodeSummary {
            text: &trimmed.text,
            text_tokens: trimmed.text_tokens,
            ..summary
        };
        if check_transcript(&summary, guards).is_none() {
            tracing::debug!(
                rejected = %decoded.text,
                kept = %trimmed.text,
                "fitted Whisper window restarted its sentence; kept the sentence"
            );
            return Ok(trimmed);
        }
    }
    Err((decoded, trip))
}

/// `decoded` up to the end of its first sentence when the rest only says
/// that sentence again (see [`restarted_sentence`]), its token count scaled
/// to the text kept.
fn keep_restarted_sentence(decoded: &Decoded) -> Option<Decoded> {
    let sentence = restarted_sentence(&decoded.text)?;
    let share = sentence.len() as f32 / decoded.text.len().max(1) as f32;
    Some(Decoded {
        text: sentence.to_string(),
        text_tokens: (decoded.text_tokens as f32 * share).ceil() as usize,
        mean_logprob: decoded.mean_logprob,
    })
}

/// whisper.cpp's abort hook: `data` is the `AtomicBool` of a
/// [`TranscribeOptions::cancel`].
unsafe extern "C" fn abort_requested(data: *mut c_void) -> bool {
    // SAFETY: set only in `Transcriber::decode`, from a live `Arc<AtomicBool>`.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

/// Sends whisper.cpp's and ggml's log lines to `tracing` (ggml's through
/// whisper-rs, targets `whisper_rs::*`; whisper.cpp's through
/// [`whisper_log_line`]), once per process.
fn install_whisper_log_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        whisper_rs::install_logging_hooks();
        // SAFETY: the callback never unwinds (tracing macros do not panic)
        // and reads `text` only as whisper.cpp's NUL-terminated string.
        unsafe { whisper_rs::set_log_callback(Some(whisper_log_line), std::ptr::null_mut()) };
    });
}

/// whisper.cpp's log levels (ggml_log_level).
const WHISPER_LOG_INFO: std::os::raw::c_uint = 2;
const WHISPER_LOG_WARN: std::os::raw::c_uint = 3;
const WHISPER_LOG_ERROR: std::os::raw::c_uint = 4;

/// One whisper.cpp log line into `tracing`. A cancelled job (a hang-up, a
/// partial transcript preempted by a turn) aborts mid-run, and whisper.cpp
/// reports that as "failed to encode/decode": expected, so not an error.
/// Real failures still surface as [`AsrError::Inference`] from `full`.
unsafe extern "C" fn whisper_log_line(
    level: std::os::raw::c_uint,
    text: *const std::os::raw::c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: whisper.cpp passes a NUL-terminated string valid for the call.
    let line = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    match level {
        WHISPER_LOG_ERROR if is_abort_report(line) => {
            tracing::debug!(target: "whisper", "{line}")
        }
        WHISPER_LOG_ERROR => tracing::error!(target: "whisper", "{line}"),
        WHISPER_LOG_WARN => tracing::warn!(target: "whisper", "{line}"),
        WHISPER_LOG_INFO => tracing::info!(target: "whisper", "{line}"),
        _ => tracing::debug!(target: "whisper", "{line}"),
    }
}

/// How whisper.cpp reports a run stopped by the abort callback.
fn is_abort_report(line: &str) -> bool {
    line.ends_with("failed to encode") || line.ends_with("failed to decode")
}

#[cfg(test)]
mod log_tests {
    use super::is_abort_report;

    #[test]
    fn aborted_runs_are_told_apart_from_other_whisper_errors() {
        assert!(is_abort_report("whisper_full_with_state: failed to encode"));
        assert!(is_abort_report("whisper_full_with_state: failed to decode"));
        assert!(!is_abort_report("whisper_model_load: failed to load model"));
    }
}
