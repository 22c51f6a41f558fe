//! Getting audio into the shape Whisper wants: 16 kHz mono f32, at most 30 s
//! per encoder pass.

use std::ops::Range;
use std::path::Path;

use super::AsrError;

/// Whisper's only input rate.
pub const WHISPER_SAMPLE_RATE: u32 = 16_000;

/// The telephony rate G.711 carries.
pub const TELEPHONY_SAMPLE_RATE: u32 = 8_000;

/// One encoder window: Whisper never sees more than 30 s at once.
pub const MAX_WINDOW_SAMPLES: usize = 30 * WHISPER_SAMPLE_RATE as usize;

/// Files longer than this are refused rather than loaded into memory: an hour
/// of 16 kHz f32 is already 230 MB.
pub const MAX_FILE_SECONDS: f32 = 3600.0;

/// Half the length of the interpolation filter, in input samples. 16 gives a
/// 32-tap filter whose stop band is below -70 dB, far under G.711's own
/// quantisation noise, at 32 multiply-adds per output sample.
const HALF_BAND_HALF_TAPS: usize = 16;

/// Upsamples 8 kHz telephony audio to Whisper's 16 kHz.
///
/// Every input sample is kept as an even output sample; each odd output sample
/// is interpolated by a Blackman-windowed sinc (a half-band polyphase filter).
/// Linear interpolation would instead leave a mirror image of the voice band
/// between 4 and 8 kHz, which Whisper hears as hiss.
pub fn resample_8k_to_16k(input: &[f32]) -> Vec<f32> {
    let taps = half_band_taps();
    let mut output = Vec::with_capacity(input.len() * 2);
    let len = input.len() as isize;
    let half = HALF_BAND_HALF_TAPS as isize;
    for n in 0..len {
        output.push(input[n as usize]);
        // Samples n-K+1 ..= n+K surround the midpoint n + 1/2; outside the
        // input the signal is taken as silence.
        let mut acc = 0.0f32;
        for (j, tap) in taps.iter().enumerate() {
            let m = n - half + 1 + j as isize;
            if (0..len).contains(&m) {
                acc += tap * input[m as usize];
            }
        }
        output.push(acc);
    }
    output
}

/// Coefficients for the midpoint phase, normalised to unity gain at DC.
fn half_band_taps() -> [f32; 2 * HALF_BAND_HALF_TAPS] {
    let mut taps = [0.0f32; 2 * HALF_BAND_HALF_TAPS];
    let half = HALF_BAND_HALF_TAPS as f64;
    let mut sum = 0.0f64;
    for (j, tap) in taps.iter_mut().enumerate() {
        // Distance from the midpoint, in input samples: -K+1/2 ..= K-1/2.
        let d = j as f64 - half + 0.5;
        let x = std::f64::consts::PI * d;
        let sinc = x.sin() / x;
        let phase = std::f64::consts::PI * d / half;
        let window = 0.42 + 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
        let value = sinc * window;
        *tap = value as f32;
        sum += value;
    }
    for tap in &mut taps {
        *tap = (*tap as f64 / sum) as f32;
    }
    taps
}

/// Resamples mono audio between any two rates (used for WAV files).
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, AsrError> {
    if from_rate == to_rate || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    if from_rate == TELEPHONY_SAMPLE_RATE && to_rate == WHISPER_SAMPLE_RATE {
        return Ok(resample_8k_to_16k(samples));
    }
    if from_rate == 0 || to_rate == 0 {
        return Err(AsrError::Resample(format!(
            "invalid sample rates {from_rate} Hz → {to_rate} Hz"
        )));
    }
    // One windowed-FFT resampler serves the whole crate (speech::resample).
    crate::speech::resample::resample(samples, from_rate, to_rate)
        .map_err(|e| AsrError::Resample(e.to_string()))
}

/// Reads a WAV file of any rate, sample format and channel count and returns
/// 16 kHz mono f32 (channels averaged).
pub fn read_wav_16k_mono(path: &Path) -> Result<Vec<f32>, AsrError> {
    let wav_error = |reason: String| AsrError::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| wav_error(e.to_string()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 || spec.sample_rate == 0 {
        return Err(wav_error(
            "header declares no channels or a 0 Hz rate".into(),
        ));
    }
    let frames = reader.duration() as usize;
    let seconds = frames as f32 / spec.sample_rate as f32;
    if seconds > MAX_FILE_SECONDS {
        return Err(AsrError::TooLong {
            seconds,
            maximum: MAX_FILE_SECONDS,
        });
    }

    let mut mono = Vec::with_capacity(frames);
    let mut frame_sum = 0.0f32;
    let mut in_frame = 0usize;
    let mut push = |value: f32| {
        frame_sum += value;
        in_frame += 1;
        if in_frame == channels {
            mono.push(frame_sum / channels as f32);
            frame_sum = 0.0;
            in_frame = 0;
        }
    };
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for sample in reader.samples::<f32>() {
                push(sample.map_err(|e| wav_error(e.to_string()))?);
            }
        }
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(wav_error(format!(
                    "unsupported {} bits per sample",
                    spec.bits_per_sample
                )));
            }
            let full_scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            for sample in reader.samples::<i32>() {
                push(sample.map_err(|e| wav_error(e.to_string()))? as f32 / full_scale);
            }
        }
    }
    if mono.iter().any(|s| !s.is_finite()) {
        return Err(AsrError::InvalidAudio);
    }
    resample(&mono, spec.sample_rate, WHISPER_SAMPLE_RATE)
}

/// Splits audio longer than `max_len` samples into pieces of at most
/// `max_len`, cutting each at the quietest 20 ms within the last `search_len`
/// samples of the piece, so that words are rarely cut in half.
pub fn split_at_quiet_points(
    samples: &[f32],
    max_len: usize,
    search_len: usize,
) -> Vec<Range<usize>> {
    const FRAME: usize = 320; // 20 ms at 16 kHz
    const HOP: usize = 160;
    let max_len = max_len.max(2 * FRAME);
    let search_len = search_len.clamp(FRAME, max_len / 2);
    let mut pieces = Vec::with_capacity(samples.len() / max_len + 1);
    let mut start = 0;
    while samples.len() - start > max_len {
        let search_from = start + max_len - search_len;
        let mut best_cut = start + max_len;
        let mut best_energy = f32::INFINITY;
        let mut frame_start = search_from;
        while frame_start + FRAME <= start + max_len {
            let energy: f32 = samples[frame_start..frame_start + FRAME]
                .iter()
                .map(|s| s * s)
                .sum();
            if energy < best_energy {
                best_energy = energy;
                best_cut = frame_start + FRAME / 2;
            }
            frame_start += HOP;
        }
        pieces.push(start..best_cut);
        start = best_cut;
    }
    if start < samples.len() {
        pieces.push(start..samples.len());
    }
    pieces
}

/// Root-mean-square level in dBFS of the loudest 25 % of 20 ms frames: a
/// robust "is there a voice in here" level that leading and trailing silence
/// do not dilute.
pub fn active_level_dbfs(samples: &[f32]) -> f32 {
    const FRAME: usize = 320;
    let mut frame_energies: Vec<f32> = samples
        .chunks(FRAME)
        .map(|frame| frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32)
        .collect();
    if frame_energies.is_empty() {
        return f32::NEG_INFINITY;
    }
    frame_energies.sort_by(|a, b| b.total_cmp(a));
    let loudest = &frame_energies[..frame_energies.len().div_ceil(4)];
    let mean = loudest.iter().sum::<f32>() / loudest.len() as f32;
    10.0 * mean.max(1e-12).log10()
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
    fn upsampling_keeps_originals_and_doubles_length() {
        let input = tone(440.0, 8000, 0.1);
        let output = resample_8k_to_16k(&input);
        assert_eq!(output.len(), input.len() * 2);
        for (i, sample) in input.iter().enumerate() {
            assert_eq!(output[2 * i], *sample);
        }
    }

    #[test]
    fn upsampled_tone_matches_a_tone_generated_at_16k() {
        // Away from the edges, the interpolated samples must be the tone
        // itself: no image, no droop at a typical voice frequency.
        let output = resample_8k_to_16k(&tone(1000.0, 8000, 0.5));
        let reference = tone(1000.0, 16000, 0.5);
        let middle = 400..output.len() - 400;
        let error: Vec<f32> = middle.clone().map(|i| output[i] - reference[i]).collect();
        assert!(
            rms(&error) < 0.005,
            "interpolation error rms {}",
            rms(&error)
        );
    }

    #[test]
    fn upsampling_empty_and_single_sample_inputs_is_safe() {
        assert!(resample_8k_to_16k(&[]).is_empty());
        assert_eq!(resample_8k_to_16k(&[0.5]).len(), 2);
    }

    #[test]
    fn generic_resampler_changes_length_by_the_rate_ratio() {
        let output = resample(&tone(500.0, 44_100, 1.0), 44_100, 16_000).expect("resample");
        assert!(
            (output.len() as i64 - 16_000).abs() < 50,
            "{}",
            output.len()
        );
        assert!((rms(&output) - 0.3535).abs() < 0.02);
    }

    #[test]
    fn long_audio_is_split_into_window_sized_pieces_at_the_quiet_point() {
        // 70 s of tone with a 100 ms silence at 25 s: the first cut must land
        // in that silence, and every piece must fit one encoder window.
        let mut samples = tone(300.0, 16_000, 70.0);
        let gap = 25 * 16_000..25 * 16_000 + 1600;
        samples[gap.clone()].fill(0.0);
        let pieces = split_at_quiet_points(&samples, MAX_WINDOW_SAMPLES, 10 * 16_000);
        assert!(gap.contains(&pieces[0].end), "cut at {}", pieces[0].end);
        assert!(pieces.iter().all(|p| p.len() <= MAX_WINDOW_SAMPLES));
        assert_eq!(pieces.first().map(|p| p.start), Some(0));
        assert_eq!(pieces.last().map(|p| p.end), Some(samples.len()));
        assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn short_audio_is_one_piece() {
        assert_eq!(
            split_at_quiet_points(&[0.0; 1000], MAX_WINDOW_SAMPLES, 16_000),
            vec![0..1000]
        );
        assert!(split_at_quiet_points(&[], MAX_WINDOW_SAMPLES, 16_000).is_empty());
    }

    #[test]
    fn active_level_ignores_surrounding_silence() {
        let mut samples = vec![0.0; 16_000];
        samples.extend(tone(300.0, 16_000, 1.0));
        samples.extend(vec![0.0; 16_000]);
        let level = active_level_dbfs(&samples);
        assert!((level - (-9.0)).abs() < 1.0, "{level}");
        assert_eq!(active_level_dbfs(&[]), f32::NEG_INFINITY);
    }
}
