//! Voice-rate audio → telephony rate.
//!
//! Piper speaks at 22 050 Hz; G.711 carries 8 kHz. Decimating without a
//! low-pass filter folds everything above 4 kHz (sibilants) back into the
//! band as hiss, so rubato's FFT resampler is used: it filters with a
//! Blackman-Harris windowed sinc below the new Nyquist, and `process_all`
//! trims its delay so sentence boundaries stay aligned.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::SpeechError;

/// FFT chunk for one-shot sentence resampling: quick, and long enough for a
/// sharp anti-alias filter.
const CHUNK_FRAMES: usize = 1024;

/// Resamples mono f32 audio from `from_rate` to `to_rate`.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, SpeechError> {
    if from_rate == to_rate || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let failed = |e: &dyn std::fmt::Display| SpeechError::Resample(e.to_string());
    let mut resampler = Fft::<f32>::new(
        from_rate as usize,
        to_rate as usize,
        CHUNK_FRAMES,
        1,
        FixedSync::Input,
    )
    .map_err(|e| failed(&e))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| failed(&e))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| failed(&e))?;
    Ok(output.take_data())
}

/// f32 in [-1, 1] → i16, clamped (resampling can overshoot a full-scale peak).
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    #[test]
    fn in_band_tones_pass_and_the_length_scales() {
        let input = tone(1000.0, 22_050, 1.0);
        let output = resample(&input, 22_050, 8_000).unwrap();
        assert!((output.len() as i64 - 8_000).abs() <= 2, "{}", output.len());
        let middle = &output[1000..7000];
        assert!((rms(middle) - rms(&input)).abs() < 0.02, "{}", rms(middle));
    }

    #[test]
    fn tones_above_the_new_nyquist_are_filtered_not_aliased() {
        // 6 kHz would alias to 2 kHz at 8 kHz without an anti-alias filter.
        let input = tone(6000.0, 22_050, 1.0);
        let output = resample(&input, 22_050, 8_000).unwrap();
        let middle = &output[1000..7000];
        assert!(rms(middle) < 0.01, "aliased energy {}", rms(middle));
    }

    #[test]
    fn conversion_to_i16_clamps() {
        assert_eq!(
            to_i16(&[0.0, 1.5, -1.5, 0.5]),
            vec![0, 32767, -32768, 16384]
        );
    }
}
