//! Speech recognition: Whisper (whisper.cpp via whisper-rs) on worker threads. Issue 4.
//!
//! - [`Transcriber`] owns one whisper.cpp decoding state and turns one
//!   utterance (16 kHz mono f32) into a [`Transcript`]. Its main trick is a
//!   fitted encoder window (see [`window`]): Whisper's encoder normally
//!   processes 30 s of audio however short the utterance is, which makes a
//!   2 s question cost as much as a 30 s monologue.
//! - [`AsrPool`] runs one transcriber per core on dedicated OS threads behind
//!   a bounded queue, so inference never blocks the async runtime and a full
//!   queue answers [`AsrError::Busy`] at once instead of piling up.
//! - [`audio`] prepares input: 8 kHz telephony → 16 kHz, WAV files of any
//!   rate, and the split of over-long audio at quiet points.
//! - [`wer`] normalises text and scores word error rate, for the accuracy
//!   tests and benchmarks.

pub mod audio;
pub mod pool;
pub mod wer;
pub mod whisper;
pub mod window;

use std::path::Path;

pub use audio::{WHISPER_SAMPLE_RATE, resample_8k_to_16k};
pub use pool::{
    AsrMetrics, AsrMetricsSnapshot, AsrPool, AsrPoolConfig, JobClass, JobDoneHook, JobOutcome,
    JobReport, Utterance,
};
pub use whisper::{AsrConfig, AsrModel, TranscribeOptions, Transcriber, Transcript};
pub use window::{GuardTrip, WindowPolicy, WindowUsed};

/// Everything that can go wrong turning audio into text.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("no audio to transcribe")]
    EmptyAudio,
    #[error("utterance too short to transcribe ({seconds:.2} s; at least {minimum:.2} s needed)")]
    TooShort { seconds: f32, minimum: f32 },
    #[error("audio too long to transcribe ({seconds:.0} s; at most {maximum:.0} s accepted)")]
    TooLong { seconds: f32, maximum: f32 },
    #[error("audio contains non-finite samples (NaN or infinity)")]
    InvalidAudio,
    #[error("Whisper model not found at {0}; run `frontdoor models fetch`")]
    ModelMissing(std::path::PathBuf),
    #[error("cannot load Whisper model {path}: {reason}")]
    ModelLoad {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("whisper.cpp failed: {0}")]
    Inference(String),
    #[error("speech recognition is busy (queue full); try again shortly")]
    Busy,
    #[error("transcription cancelled")]
    Cancelled,
    #[error("transcription dropped: newer record-only audio filled the backlog")]
    Dropped,
    #[error("speech recognition pool has shut down")]
    ShutDown,
    #[error("cannot read WAV file {path}: {reason}")]
    Wav {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("invalid ASR configuration: {0}")]
    Config(String),
}

/// Transcribes a WAV file of any sample rate, sample format and channel count
/// (channels are averaged), for `frontdoor transcribe FILE.wav`.
///
/// Files longer than 30 s are split at quiet points and the pieces joined.
pub fn transcribe_file(model: &Path, wav: &Path) -> Result<String, AsrError> {
    let audio = audio::read_wav_16k_mono(wav)?;
    let model = AsrModel::load(model, AsrConfig::default())?;
    let mut transcriber = model.transcriber()?;
    let transcript = transcriber.transcribe(&audio, &TranscribeOptions::default())?;
    tracing::debug!(
        text = %transcript.text,
        mean_logprob = transcript.mean_logprob,
        text_tokens = transcript.text_tokens,
        audio_seconds = transcript.audio_seconds,
        "transcribed"
    );
    Ok(transcript.text)
}
