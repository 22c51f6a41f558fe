//! Speech: text to speech (Piper on ONNX Runtime), voice activity detection
//! (Silero) and the turn-taking state machines built on it. Issue 4.
//!
//! - [`runtime`]: loads ONNX Runtime once per process, after checking the
//!   library so that a missing or old `.so` is an error, never a hang.
//! - [`normalize`]: text → words a voice can say (money, times, postcodes,
//!   reference numbers).
//! - [`phonemize`]: words → espeak-ng IPA phonemes, clause by clause, keeping
//!   the punctuation that carries pauses and question intonation.
//! - [`tts`]: [`PiperVoice`], the [`TtsWorkerPool`] and the [`PromptCache`].
//! - [`resample`]: voice rate → 8 kHz telephony audio.
//! - [`vad`]: [`SileroVad`] per call, and the sans-IO [`EndpointDetector`]
//!   and [`BargeInDetector`].

pub mod normalize;
pub mod phonemize;
pub mod resample;
pub mod runtime;
pub mod tts;
pub mod vad;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use runtime::{OnnxRuntimeInfo, init_onnxruntime};
pub use tts::{
    PiperVoice, PiperVoiceOptions, PromptCache, SentenceStore, SpokenSentence, TtsChunk,
    TtsPoolConfig, TtsStream, TtsWorkerPool, say_to_wav,
};
pub use vad::{
    BargeInConfig, BargeInDetector, BargeInEvent, EndpointConfig, EndpointDetector, EndpointEvent,
    SileroVad, SileroVadModel, VadWindow,
};

/// Telephony sample rate (G.711): what the per-call pipeline sends and receives.
pub const TELEPHONY_RATE: u32 = 8_000;

#[derive(Debug, Error)]
pub enum SpeechError {
    #[error("ONNX Runtime library {}: {reason}", path.display())]
    OnnxRuntimeLibrary { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime is not initialised and no library was found ({tried}); run `frontdoor models fetch` or set FRONTDOOR_ONNXRUNTIME_LIB"
    )]
    OnnxRuntimeNotFound { tried: String },
    #[error("model {} not found", path.display())]
    ModelNotFound { path: PathBuf },
    #[error("loading model {}: {reason}", path.display())]
    ModelLoad { path: PathBuf, reason: String },
    #[error("voice config {}: {reason}", path.display())]
    VoiceConfig { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("espeak-ng: {0}")]
    Espeak(String),
    #[error("text too long to speak ({chars} characters; the limit is {limit})")]
    TextTooLong { chars: usize, limit: usize },
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("writing {}: {reason}", path.display())]
    WavWrite { path: PathBuf, reason: String },
    #[error("synthesis cancelled")]
    Cancelled,
    #[error("the TTS queue is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the TTS workers have stopped")]
    WorkersStopped,
    #[error("starting a TTS worker thread: {0}")]
    WorkerSpawn(String),
}

impl From<ort::Error> for SpeechError {
    fn from(error: ort::Error) -> Self {
        SpeechError::Inference(error.to_string())
    }
}

/// Paths to the model files the speech blocks load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechModelPaths {
    pub piper_onnx: PathBuf,
    pub piper_config: PathBuf,
    pub onnxruntime_lib: PathBuf,
    pub silero_vad: PathBuf,
}

impl SpeechModelPaths {
    /// `FRONTDOOR_PIPER_ONNX` (its config beside it as `<onnx>.json`),
    /// `FRONTDOOR_ONNXRUNTIME_LIB` and `FRONTDOOR_SILERO_VAD` where set, else
    /// where `frontdoor models fetch` puts each file in the default cache.
    pub fn from_env_or_cache() -> Self {
        let cache = crate::models::ModelSet::in_cache(
            &crate::models::default_cache_dir(),
            crate::models::WhisperModel::default(),
        );
        let env_path = |key: &str| {
            std::env::var_os(key)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        let (piper_onnx, piper_config) = match env_path("FRONTDOOR_PIPER_ONNX") {
            Some(onnx) => {
                let config = config_beside(&onnx);
                (onnx, config)
            }
            None => (cache.piper_onnx, cache.piper_config),
        };
        Self {
            piper_onnx,
            piper_config,
            onnxruntime_lib: env_path("FRONTDOOR_ONNXRUNTIME_LIB").unwrap_or(cache.onnxruntime_lib),
            silero_vad: env_path("FRONTDOOR_SILERO_VAD").unwrap_or(cache.silero_vad),
        }
    }

    /// The files that are missing, if any.
    pub fn missing_files(&self) -> Vec<&Path> {
        [
            &self.piper_onnx,
            &self.piper_config,
            &self.onnxruntime_lib,
            &self.silero_vad,
        ]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|path| !path.is_file())
        .collect()
    }
}

/// Piper ships `voice.onnx` with `voice.onnx.json`.
fn config_beside(onnx: &Path) -> PathBuf {
    let mut name = onnx.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}
