//! Locating the real speech models for the `speech_*` tests.
//!
//! Included by each speech test binary with `#[path]`; each uses a subset,
//! so unused-item warnings here are noise.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use frontdoor::speech::{SpeechModelPaths, init_onnxruntime};

/// The model files (env vars `FRONTDOOR_PIPER_ONNX`, `FRONTDOOR_ONNXRUNTIME_LIB`,
/// `FRONTDOOR_SILERO_VAD`, else the `frontdoor models fetch` cache), with ONNX
/// Runtime initialised. `None` (after a loud message) when they are missing
/// outside CI; under `CI=true` a missing model fails the test.
pub fn models() -> Option<SpeechModelPaths> {
    let paths = SpeechModelPaths::from_env_or_cache();
    let missing = paths.missing_files();
    if !missing.is_empty() {
        let message = format!(
            "speech models missing: {missing:?}; run `frontdoor models fetch` or set FRONTDOOR_PIPER_ONNX / FRONTDOOR_ONNXRUNTIME_LIB / FRONTDOOR_SILERO_VAD"
        );
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            panic!("{message}");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return None;
    }
    if let Err(error) = init_onnxruntime(&paths.onnxruntime_lib) {
        panic!(
            "ONNX Runtime at {}: {error}",
            paths.onnxruntime_lib.display()
        );
    }
    Some(paths)
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A mono 16-bit WAV as samples and rate.
pub fn read_wav(path: &std::path::Path) -> (Vec<i16>, u32) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(spec.channels, 1, "{} is not mono", path.display());
    assert_eq!(spec.bits_per_sample, 16, "{} is not 16-bit", path.display());
    let samples = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    (samples, spec.sample_rate)
}

pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Deterministic white noise (no RNG crate API to depend on).
pub fn white_noise(len: usize, amplitude: f64, seed: u64) -> Vec<i16> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
            (unit * amplitude) as i16
        })
        .collect()
}

pub fn shared<T>(value: T) -> Arc<T> {
    Arc::new(value)
}
