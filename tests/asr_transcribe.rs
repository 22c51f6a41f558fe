//! The transcriber on real and awkward input: WAV files of any format, long
//! audio, silence, and input that must be refused without a panic.

mod asr_common;

use std::path::Path;

use asr_common::{load_clips, pocketsphinx_data, skip, whisper_model};
use frontdoor::asr::wer::word_errors;
use frontdoor::asr::{AsrConfig, AsrError, TranscribeOptions, Transcriber, transcribe_file};

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &sample in samples {
        for _ in 0..channels {
            writer
                .write_sample((sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
                .expect("write");
        }
    }
    writer.finalize().expect("finalize");
}

#[test]
fn asr_transcribe_file_reads_8k_stereo_wav() {
    let test = "asr_transcribe_file_reads_8k_stereo_wav";
    let (Some(model), Some(data)) = (whisper_model(), pocketsphinx_data()) else {
        skip(test, "Whisper model or pocketsphinx-testdata not found");
        return;
    };
    let clip = load_clips(&data)
        .into_iter()
        .find(|c| c.name == "005")
        .expect("card clip 005");
    let narrow =
        frontdoor::asr::audio::resample(&clip.telephone_16k, 16_000, 8_000).expect("resample");
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("caller.wav");
    write_wav(&wav, 8_000, 2, &narrow);
    let text = transcribe_file(&model, &wav).expect("transcribe");
    assert!(
        word_errors(&clip.reference, &text).errors <= 1,
        "{:?} heard as {text:?}",
        clip.reference
    );

    assert!(matches!(
        transcribe_file(&model, &dir.path().join("absent.wav")),
        Err(AsrError::Wav { .. })
    ));
    assert!(matches!(
        transcribe_file(&dir.path().join("absent.bin"), &wav),
        Err(AsrError::ModelMissing(_))
    ));
}

#[test]
fn asr_transcribe_splits_audio_over_30_seconds_at_quiet_points() {
    let test = "asr_transcribe_splits_audio_over_30_seconds_at_quiet_points";
    let (Some(model), Some(data)) = (whisper_model(), pocketsphinx_data()) else {
        skip(test, "Whisper model or pocketsphinx-testdata not found");
        return;
    };
    let clips = load_clips(&data);
    // All ten clips with 0.5 s pauses: ~38 s, so two encoder windows.
    let pause = vec![0.0f32; 8_000];
    let mut audio = Vec::new();
    let mut reference = String::new();
    for clip in &clips {
        audio.extend_from_slice(&clip.telephone_16k);
        audio.extend_from_slice(&pause);
        reference.push_str(&clip.reference);
        reference.push(' ');
    }
    let mut transcriber = Transcriber::load(&model, AsrConfig::default()).expect("load");
    let transcript = transcriber
        .transcribe(&audio, &TranscribeOptions::default())
        .expect("transcribe");
    assert_eq!(transcript.chunks, 2);
    let errors = word_errors(&reference, &transcript.text);
    assert!(
        errors.rate() < 0.15,
        "WER {:.2}: {}",
        errors.rate(),
        transcript.text
    );
}

#[test]
fn asr_transcribe_refuses_bad_input_without_panicking() {
    let test = "asr_transcribe_refuses_bad_input_without_panicking";
    let Some(model) = whisper_model() else {
        skip(test, "Whisper model not found");
        return;
    };
    let mut transcriber = Transcriber::load(&model, AsrConfig::default()).expect("load");
    let options = TranscribeOptions::default();
    assert!(matches!(
        transcriber.transcribe(&[], &options),
        Err(AsrError::EmptyAudio)
    ));
    assert!(matches!(
        transcriber.transcribe(&[0.2; 3_000], &options),
        Err(AsrError::TooShort { .. })
    ));
    let mut with_nan = vec![0.0; 16_000];
    with_nan[100] = f32::NAN;
    assert!(matches!(
        transcriber.transcribe(&with_nan, &options),
        Err(AsrError::InvalidAudio)
    ));
    assert!(matches!(
        transcriber.transcribe(&vec![0.0; 16_000 * 601], &options),
        Err(AsrError::TooLong { .. })
    ));

    // Digital silence and quiet hiss: no words, and no invented ones.
    let silence = transcriber
        .transcribe(&vec![0.0; 32_000], &options)
        .expect("silence");
    assert_eq!(silence.text, "", "silence heard as {:?}", silence.text);
    let mut state = 12345u32;
    let hiss: Vec<f32> = (0..32_000)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 0.002 - 0.001
        })
        .collect();
    let hiss = transcriber.transcribe(&hiss, &options).expect("hiss");
    assert!(
        hiss.text.split_whitespace().count() <= 2,
        "hiss heard as {:?}",
        hiss.text
    );

    // Full-scale clipping noise must not crash or loop forever.
    let loud: Vec<f32> = (0..48_000)
        .map(|i| if (i / 7) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let loud = transcriber
        .transcribe(&loud, &options)
        .expect("square wave");
    assert!(
        loud.text_tokens <= 40,
        "{} tokens for 3 s of buzz",
        loud.text_tokens
    );
}

#[test]
fn asr_model_rejects_a_vocabulary_prompt_with_a_nul_byte() {
    let Some(model) = whisper_model() else {
        skip(
            "asr_model_rejects_a_vocabulary_prompt_with_a_nul_byte",
            "Whisper model not found",
        );
        return;
    };
    let config = AsrConfig {
        vocabulary_prompt: "council\0tax".into(),
        ..AsrConfig::default()
    };
    assert!(matches!(
        Transcriber::load(&model, config),
        Err(AsrError::Config(_))
    ));
    let config = AsrConfig {
        threads: 0,
        ..AsrConfig::default()
    };
    assert!(matches!(
        Transcriber::load(&model, config),
        Err(AsrError::Config(_))
    ));
}
