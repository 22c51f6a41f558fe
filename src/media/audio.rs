//! Prompt loading (any WAV → 8 kHz mono i16) and call recording (stereo WAV).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use thiserror::Error;

use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Longest prompt accepted: a council greeting is seconds, a 10-minute file is a mistake.
pub const MAX_PROMPT_SECONDS: u64 = 600;
/// Caps decoded input size independently of duration (a 10-minute 192 kHz file would
/// otherwise need ~0.5 GB of floats).
const MAX_INPUT_FRAMES: u64 = MAX_PROMPT_SECONDS * 48_000;
/// Header fix-up cadence for recordings, in 20 ms frames (one second).
const RECORDER_FLUSH_FRAMES: u32 = 50;
/// Chunk size for the FFT resampler: large enough for good quality, small enough to be quick.
const RESAMPLER_CHUNK: usize = 1024;

#[derive(Debug, Error)]
pub enum AudioError {
    #[error("audio file {} not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid WAV file: {reason}", path.display())]
    NotWav { path: PathBuf, reason: String },
    #[error("{} has an unsupported WAV format: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{} contains no audio", path.display())]
    Empty { path: PathBuf },
    #[error("{} is too long ({seconds} s; the limit is {MAX_PROMPT_SECONDS} s at up to 48 kHz)", path.display())]
    TooLong { path: PathBuf, seconds: u64 },
    #[error("resampling {} failed: {reason}", path.display())]
    Resample { path: PathBuf, reason: String },
    #[error("recording to {} failed: {reason}", path.display())]
    Recording { path: PathBuf, reason: String },
}

fn map_hound_error(path: &Path, error: hound::Error) -> AudioError {
    let path = path.to_path_buf();
    match error {
        hound::Error::IoError(source) if source.kind() == std::io::ErrorKind::NotFound => {
            AudioError::NotFound { path }
        }
        hound::Error::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::NotWav {
                path,
                reason: "file is truncated".into(),
            }
        }
        hound::Error::IoError(source) => AudioError::Io { path, source },
        hound::Error::FormatError(reason) => AudioError::NotWav {
            path,
            reason: reason.into(),
        },
        other => AudioError::Unsupported {
            path,
            reason: other.to_string(),
        },
    }
}

/// Loads a prompt as 8 kHz mono 16-bit PCM, whatever the WAV's rate, channels and depth.
pub fn load_prompt(path: impl AsRef<Path>) -> Result<Arc<[i16]>, AudioError> {
    let path = path.as_ref();
    let reader = hound::WavReader::open(path).map_err(|error| map_hound_error(path, error))?;
    let spec = reader.spec();
    let unsupported = |reason: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(unsupported(format!(
            "{} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    let frames = reader.duration() as u64;
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    let seconds = frames / spec.sample_rate as u64;
    if seconds > MAX_PROMPT_SECONDS || frames > MAX_INPUT_FRAMES {
        return Err(AudioError::TooLong {
            path: path.to_path_buf(),
            seconds,
        });
    }
    let mono = read_mono(reader, path)?;
    let resampled = if spec.sample_rate == SAMPLE_RATE {
        mono
    } else {
        resample(&mono, spec.sample_rate, path)?
    };
    let samples: Vec<i16> = resampled
        .iter()
        .map(|sample| (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    if samples.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Arc::from(samples))
}

/// Reads and averages all channels into one, as floats in [-1, 1).
fn read_mono(
    mut reader: hound::WavReader<std::io::BufReader<File>>,
    path: &Path,
) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let mut mono = Vec::with_capacity(reader.duration() as usize);
    let mut accumulator = 0.0f32;
    let mut channel = 0;
    let mut push = |value: f32| {
        accumulator += value;
        channel += 1;
        if channel == channels {
            mono.push(accumulator / channels as f32);
            accumulator = 0.0;
            channel = 0;
        }
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            for sample in reader.samples::<f32>() {
                let sample = sample.map_err(|error| map_hound_error(path, error))?;
                push(if sample.is_finite() { sample } else { 0.0 });
            }
        }
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for sample in reader.samples::<i32>() {
                let sample = sample.map_err(|error| map_hound_error(path, error))?;
                push(sample as f32 * scale);
            }
        }
        (format, bits) => {
            return Err(AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("{bits}-bit {format:?} samples"),
            });
        }
    }
    Ok(mono)
}

fn resample(mono: &[f32], input_rate: u32, path: &Path) -> Result<Vec<f32>, AudioError> {
    let failed = |reason: String| AudioError::Resample {
        path: path.to_path_buf(),
        reason,
    };
    let mut resampler = Fft::<f32>::new(
        input_rate as usize,
        SAMPLE_RATE as usize,
        RESAMPLER_CHUNK,
        1,
        FixedSync::Input,
    )
    .map_err(|error| failed(error.to_string()))?;
    let input =
        InterleavedSlice::new(mono, 1, mono.len()).map_err(|error| failed(error.to_string()))?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|error| failed(error.to_string()))?;
    Ok(output.take_data())
}

/// Records a call as a stereo 8 kHz WAV: left = caller, right = Frontdoor.
///
/// Frames are written as they happen, and the RIFF header is rewritten every second, so a
/// crash leaves a playable file missing at most the last second.
pub struct CallRecorder {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    frames_since_flush: u32,
    frames_written: u64,
}

impl std::fmt::Debug for CallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecorder")
            .field("path", &self.path)
            .field("frames_written", &self.frames_written)
            .finish()
    }
}

impl CallRecorder {
    pub fn create(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref().to_path_buf();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer =
            hound::WavWriter::create(&path, spec).map_err(|error| AudioError::Recording {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        Ok(CallRecorder {
            path,
            writer: Some(writer),
            frames_since_flush: 0,
            frames_written: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seconds recorded so far.
    pub fn duration_secs(&self) -> f64 {
        self.frames_written as f64 * FRAME_SAMPLES as f64 / SAMPLE_RATE as f64
    }

    fn recording_error(&self, error: hound::Error) -> AudioError {
        AudioError::Recording {
            path: self.path.clone(),
            reason: error.to_string(),
        }
    }

    /// Writes one 20 ms tick; a missing side is recorded as silence so both stay aligned.
    pub fn write_frame(
        &mut self,
        caller: Option<&Frame>,
        sent: Option<&Frame>,
    ) -> Result<(), AudioError> {
        const SILENCE: Frame = [0; FRAME_SAMPLES];
        let caller = caller.unwrap_or(&SILENCE);
        let sent = sent.unwrap_or(&SILENCE);
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut result = Ok(());
        for (left, right) in caller.iter().zip(sent.iter()) {
            if let Err(error) = writer
                .write_sample(*left)
                .and_then(|()| writer.write_sample(*right))
            {
                result = Err(error);
                break;
            }
        }
        if result.is_ok() {
            self.frames_written += 1;
            self.frames_since_flush += 1;
            if self.frames_since_flush >= RECORDER_FLUSH_FRAMES {
                self.frames_since_flush = 0;
                result = writer.flush();
            }
        }
        result.map_err(|error| self.recording_error(error))
    }

    /// Writes the final header and closes the file; returns the recorded duration in seconds.
    pub fn finalize(mut self) -> Result<f64, AudioError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<f64, AudioError> {
        match self.writer.take() {
            Some(writer) => writer
                .finalize()
                .map(|()| self.duration_secs())
                .map_err(|error| self.recording_error(error)),
            None => Ok(self.duration_secs()),
        }
    }
}

impl Drop for CallRecorder {
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::warn!(%error, "recording not finalized cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, spec: hound::WavSpec, frames: usize, value: impl Fn(usize) -> f32) {
        let mut writer = hound::WavWriter::create(path, spec).expect("create");
        for frame in 0..frames {
            for _ in 0..spec.channels {
                let v = value(frame);
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => writer.write_sample(v).expect("write"),
                    (_, 8) => writer.write_sample((v * 127.0) as i8).expect("write"),
                    (_, 16) => writer.write_sample((v * 32767.0) as i16).expect("write"),
                    (_, 24) => writer
                        .write_sample((v * 8_388_607.0) as i32)
                        .expect("write"),
                    _ => writer
                        .write_sample((v * 2_147_483_000.0) as i32)
                        .expect("write"),
                }
            }
        }
        writer.finalize().expect("finalize");
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn loads_8k_mono_16_bit_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.wav");
        write_wav(&path, spec(1, 8000, 16, false), 800, |i| {
            if i % 2 == 0 { 0.25 } else { -0.25 }
        });
        let samples = load_prompt(&path).expect("loads");
        assert_eq!(samples.len(), 800);
        assert_eq!(samples[0], (0.25 * 32767.0) as i16);
        assert_eq!(samples[1], -(0.25 * 32767.0) as i16);
    }

    #[test]
    fn resamples_and_mixes_down_any_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            spec(2, 44100, 16, false),
            spec(1, 16000, 24, false),
            spec(2, 48000, 32, true),
            spec(1, 22050, 8, false),
        ];
        for (index, case) in cases.iter().enumerate() {
            let path = dir.path().join(format!("p{index}.wav"));
            let rate = case.sample_rate as usize;
            // One second of a 400 Hz tone at half scale.
            write_wav(&path, *case, rate, |i| {
                0.5 * (2.0 * std::f32::consts::PI * 400.0 * i as f32 / rate as f32).sin()
            });
            let samples = load_prompt(&path).expect("loads");
            let expected = 8000usize;
            assert!(
                samples.len().abs_diff(expected) <= 2,
                "{case:?}: {} samples",
                samples.len()
            );
            let peak = samples[1000..7000]
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap_or(0);
            assert!((14000..=18000).contains(&peak), "{case:?}: peak {peak}");
        }
    }

    #[test]
    fn clear_errors_for_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.wav");
        assert!(matches!(
            load_prompt(&missing),
            Err(AudioError::NotFound { .. })
        ));

        let text = dir.path().join("notes.wav");
        std::fs::write(&text, b"this is not audio at all, just some text").expect("write");
        assert!(matches!(load_prompt(&text), Err(AudioError::NotWav { .. })));

        let empty = dir.path().join("empty.wav");
        write_wav(&empty, spec(1, 8000, 16, false), 0, |_| 0.0);
        assert!(matches!(load_prompt(&empty), Err(AudioError::Empty { .. })));

        let zero_bytes = dir.path().join("zero.wav");
        std::fs::write(&zero_bytes, b"").expect("write");
        assert!(load_prompt(&zero_bytes).is_err());

        // A header claiming 11 minutes: refused before decoding anything.
        let long = dir.path().join("long.wav");
        write_wav(&long, spec(1, 8000, 16, false), 8000 * 660, |_| 0.0);
        let error = load_prompt(&long).expect_err("too long");
        assert!(
            matches!(error, AudioError::TooLong { seconds: 660, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("660 s"));
    }

    #[test]
    fn recorder_writes_aligned_stereo_and_survives_without_finalize() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("call.wav");
        let mut recorder = CallRecorder::create(&path).expect("create");
        let caller = [100i16; FRAME_SAMPLES];
        let sent = [-200i16; FRAME_SAMPLES];
        for tick in 0..120 {
            let sent_side = (tick % 2 == 0).then_some(&sent);
            recorder
                .write_frame(Some(&caller), sent_side)
                .expect("write");
        }
        // Simulate a crash: read the file before finalize. The header was fixed up at 100
        // frames (2 s), so at least that much is playable.
        {
            let reader = hound::WavReader::open(&path).expect("playable before finalize");
            assert_eq!(reader.spec().channels, 2);
            assert!(reader.duration() >= 100 * FRAME_SAMPLES as u32);
        }
        let seconds = recorder.finalize().expect("finalize");
        assert!((seconds - 2.4).abs() < 1e-9);
        let mut reader = hound::WavReader::open(&path).expect("open");
        assert_eq!(reader.duration(), 120 * FRAME_SAMPLES as u32);
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        assert_eq!(&samples[..4], &[100, -200, 100, -200]);
        // Second tick had no sent audio: right channel is silence, still aligned.
        let second_tick = FRAME_SAMPLES * 2;
        assert_eq!(&samples[second_tick..second_tick + 2], &[100, 0]);
    }
}
