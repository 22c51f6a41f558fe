//! Speech costs on this machine: TTS time to first 8 kHz audio and real-time
//! factor, and Silero VAD cost per 20 ms frame.
//!
//! `cargo bench --bench tts` needs the models (`frontdoor models fetch`, or the
//! FRONTDOOR_* paths). It prints a summary (first-audio latency percentiles,
//! RTF, VAD µs per frame and the share of one core per call), then runs the
//! criterion groups.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use frontdoor::speech::{
    PiperVoice, PiperVoiceOptions, SileroVad, SileroVadModel, SpeechModelPaths, TELEPHONY_RATE,
    init_onnxruntime,
};

const ONE_SENTENCE: &str = "Your green bin is collected every other Tuesday.";
const ANSWER: &str = "Your green bin is collected every other Tuesday. \
    You can check the dates online, or I can send them to you by text message.";

struct Models {
    voice: PiperVoice,
    vad: Arc<SileroVadModel>,
}

fn load() -> Option<Models> {
    let paths = SpeechModelPaths::from_env_or_cache();
    if !paths.missing_files().is_empty() {
        eprintln!("tts bench skipped: missing {:?}", paths.missing_files());
        return None;
    }
    init_onnxruntime(&paths.onnxruntime_lib).expect("ONNX Runtime");
    let started = Instant::now();
    let voice = PiperVoice::load_with(
        &paths.piper_onnx,
        &paths.piper_config,
        PiperVoiceOptions::default(),
    )
    .expect("voice");
    println!("voice load: {:.2} s", started.elapsed().as_secs_f64());
    let vad = SileroVadModel::load(&paths.silero_vad).expect("vad");
    Some(Models { voice, vad })
}

fn first_audio(voice: &PiperVoice, text: &str) -> Duration {
    let started = Instant::now();
    let first = voice
        .synthesize_8k(text)
        .next()
        .expect("a sentence")
        .expect("synthesis");
    black_box(first);
    started.elapsed()
}

fn summary(models: &Models) {
    let voice = &models.voice;
    // Warm-up: the first run allocates ONNX Runtime's arenas.
    first_audio(voice, ONE_SENTENCE);
    let mut latencies: Vec<Duration> = (0..15).map(|_| first_audio(voice, ONE_SENTENCE)).collect();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "TTS first 8 kHz audio, one-sentence answer: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 9 / 10]),
        ms(latencies[latencies.len() - 1])
    );

    let mut audio_seconds = 0.0;
    let started = Instant::now();
    for _ in 0..5 {
        for sentence in voice.synthesize_8k(ANSWER) {
            audio_seconds += sentence.expect("synthesis").len() as f64 / f64::from(TELEPHONY_RATE);
        }
    }
    let compute = started.elapsed().as_secs_f64();
    println!(
        "TTS real-time factor (audio s / compute s, 1 thread): {:.1} ({audio_seconds:.1} s of audio in {compute:.2} s)",
        audio_seconds / compute
    );

    let mut vad = SileroVad::new(Arc::clone(&models.vad));
    let frame = [0i16; 160];
    let frames = 5_000;
    let started = Instant::now();
    for _ in 0..frames {
        black_box(vad.push_frame(&frame).expect("vad"));
    }
    let per_frame = started.elapsed() / frames;
    println!(
        "Silero VAD per 20 ms frame (amortised over 32 ms windows): {:.1} µs = {:.2}% of one core per call",
        per_frame.as_secs_f64() * 1e6,
        per_frame.as_secs_f64() / 0.020 * 100.0
    );
}

fn criterion_benches(c: &mut Criterion, models: &Models) {
    let mut group = c.benchmark_group("tts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("first_8k_audio_one_sentence", |b| {
        b.iter(|| first_audio(&models.voice, ONE_SENTENCE))
    });
    group.finish();

    let mut vad = SileroVad::new(Arc::clone(&models.vad));
    let frame = [0i16; 160];
    c.bench_function("vad_20ms_frame", |b| {
        b.iter(|| black_box(vad.push_frame(black_box(&frame)).expect("vad")))
    });
}

fn benches(c: &mut Criterion) {
    let Some(models) = load() else { return };
    summary(&models);
    criterion_benches(c, &models);
}

criterion_group!(speech, benches);

fn main() {
    speech();
    Criterion::default().configure_from_args().final_summary();
}
