//! Whisper latency for one short utterance on one thread: full 30 s encoder
//! window against the fitted window.
//!
//! `cargo bench --bench asr`. The clip is LibriVox "he was not an ill
//! disposed young man" (2.99 s) from pocketsphinx-testdata, through the
//! telephone path (8 kHz µ-law). Real-time factor = time / 2.99 s.

#[path = "../tests/asr_common/mod.rs"]
mod asr_common;

use std::time::Duration;

use asr_common::{load_clips, pocketsphinx_data, skip, whisper_model};
use criterion::{Criterion, criterion_group, criterion_main};
use frontdoor::asr::{AsrConfig, TranscribeOptions, Transcriber, WindowPolicy};

fn whisper_latency(c: &mut Criterion) {
    let (Some(model), Some(data)) = (whisper_model(), pocketsphinx_data()) else {
        skip(
            "benches/asr",
            "Whisper model or pocketsphinx-testdata not found",
        );
        return;
    };
    let clip = load_clips(&data)
        .into_iter()
        .find(|clip| clip.name.ends_with("-0880"))
        .expect("LibriVox clip 0880");
    let seconds = clip.telephone_16k.len() as f32 / 16_000.0;
    let mut transcriber = Transcriber::load(&model, AsrConfig::default()).expect("load model");

    let mut group = c.benchmark_group("asr_tiny_en_1_thread");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(2));
    for (name, window) in [
        ("full_window", WindowPolicy::Full),
        ("fitted_window", WindowPolicy::default()),
    ] {
        let options = TranscribeOptions {
            window: Some(window),
            ..Default::default()
        };
        let transcript = transcriber
            .transcribe(&clip.telephone_16k, &options)
            .expect("transcribe");
        eprintln!(
            "{name}: audio {seconds:.2} s, audio_ctx {}, fallback {:?}, {:.3} s (RTF {:.3}): {}",
            transcript.window.audio_ctx,
            transcript.window.fallback,
            transcript.elapsed.as_secs_f32(),
            transcript.real_time_factor(),
            transcript.text
        );
        group.bench_function(format!("{name}_{seconds:.1}s_clip"), |b| {
            b.iter(|| {
                transcriber
                    .transcribe(&clip.telephone_16k, &options)
                    .expect("transcribe")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, whisper_latency);
criterion_main!(benches);
