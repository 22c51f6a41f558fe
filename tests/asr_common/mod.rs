//! Shared by the ASR integration tests and benchmark: where the model and the
//! recorded speech live, and the telephone path (16 kHz → 8 kHz µ-law → 16 kHz).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use frontdoor::asr::audio::{read_wav_16k_mono, resample};
use frontdoor::asr::resample_8k_to_16k;
use frontdoor::media::g711::{linear_to_ulaw, ulaw_to_linear};
use frontdoor::models::{ModelSet, WhisperModel, default_cache_dir};

/// One recording with its reference transcript.
pub struct Clip {
    pub set: &'static str,
    pub name: String,
    pub reference: String,
    /// 16 kHz audio after the telephone path.
    pub telephone_16k: Vec<f32>,
}

/// True on CI, where missing models or recordings are a failure, not a skip.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Explains loudly why a test cannot run; panics on CI.
pub fn skip(test: &str, why: &str) {
    let message = format!(
        "{test}: SKIPPED: {why}. Run `cargo run -- models fetch` and `scripts/test-deps.sh`."
    );
    if on_ci() {
        panic!("{message} (CI=true: missing test inputs are a failure)");
    }
    eprintln!("\n*** {message} ***\n");
}

/// The tiny.en model (or `$FRONTDOOR_WHISPER_MODEL`), if present.
pub fn whisper_model() -> Option<PathBuf> {
    let path = std::env::var_os("FRONTDOOR_WHISPER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            ModelSet::in_cache(&default_cache_dir(), WhisperModel::TinyEn).whisper_ggml
        });
    path.is_file().then_some(path)
}

/// pocketsphinx-testdata's `test/data` folder, as `scripts/test-deps.sh`
/// unpacks it.
pub fn pocketsphinx_data() -> Option<PathBuf> {
    let root = std::env::var_os("FRONTDOOR_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_cache_dir().join("testdata"));
    let data = root.join("usr/share/pocketsphinx/test/data");
    data.join("librivox/transcription")
        .is_file()
        .then_some(data)
}

/// Simulates the phone network: resample to 8 kHz, µ-law encode and decode
/// (G.711, what a SIP call carries), then back to 16 kHz the way the
/// pipeline does.
pub fn telephone_path(audio_16k: &[f32]) -> Vec<f32> {
    let narrow = resample(audio_16k, 16_000, 8_000).expect("resample to 8 kHz");
    let companded: Vec<f32> = narrow
        .iter()
        .map(|s| {
            let linear = (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
            f32::from(ulaw_to_linear(linear_to_ulaw(linear))) / 32768.0
        })
        .collect();
    resample_8k_to_16k(&companded)
}

/// Sphinx transcription lines look like `<s> ten of clubs </s> (001)`.
fn parse_transcription(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("read transcription");
    text.lines()
        .filter_map(|line| {
            let open = line.rfind('(')?;
            let id = line[open + 1..].trim().trim_end_matches(')').to_string();
            let words: Vec<&str> = line[..open]
                .split_whitespace()
                .filter(|w| *w != "<s>" && *w != "</s>")
                .collect();
            Some((id, words.join(" ")))
        })
        .collect()
}

/// The LibriVox read-speech clips (3–7 s) and the playing-card phrases
/// (1–3.5 s), through the telephone path.
pub fn load_clips(data: &Path) -> Vec<Clip> {
    let mut clips = Vec::new();
    for (set, folder, transcription) in [
        ("librivox", "librivox", "transcription"),
        ("cards", "cards", "cards.transcription"),
    ] {
        for (id, reference) in parse_transcription(&data.join(folder).join(transcription)) {
            let wav = data.join(folder).join(format!("{id}.wav"));
            let audio = read_wav_16k_mono(&wav).expect("read test clip");
            clips.push(Clip {
                set,
                name: id,
                reference,
                telephone_16k: telephone_path(&audio),
            });
        }
    }
    clips
}
