//! Classification cost per utterance (target: p95 <= 5 ms on one core).
//! `cargo bench --bench answer` prints criterion's timing and a p95 line.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use frontdoor::answer::AnswerEngine;

fn engine() -> AnswerEngine {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    AnswerEngine::load(
        &root.join("knowledge"),
        &root.join("governance/safeguarding.toml"),
    )
    .expect("the shipped knowledge and governance files load")
}

fn utterances() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("tests/data/answer_heldout.jsonl")).unwrap_or_default();
    let mut all: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    all.push("council tax ".repeat(1_000));
    all
}

fn classify(c: &mut Criterion) {
    let engine = engine();
    let texts = utterances();

    // Per-utterance p95, which criterion's mean does not show.
    let mut samples: Vec<f64> = Vec::with_capacity(texts.len() * 20);
    for _ in 0..20 {
        for text in &texts {
            let start = Instant::now();
            black_box(engine.classify(black_box(text)));
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(f64::total_cmp);
    let p95 = samples[(samples.len() * 95 / 100).min(samples.len() - 1)];
    let max = samples.last().copied().unwrap_or_default();
    println!(
        "classify p95 {p95:.3} ms, max {max:.3} ms over {} calls",
        samples.len()
    );

    // The semantic layer's model run alone (texts differ call to call, so
    // its one-utterance cache never hits).
    if let Some(scorer) = engine.governance().semantic() {
        let mut embed_ms: Vec<f64> = Vec::with_capacity(texts.len() * 5);
        for _ in 0..5 {
            for text in &texts {
                let start = Instant::now();
                let _ = black_box(scorer.embed(black_box(text)));
                embed_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        embed_ms.sort_by(f64::total_cmp);
        let p50 = embed_ms[embed_ms.len() / 2];
        let p95 = embed_ms[(embed_ms.len() * 95 / 100).min(embed_ms.len() - 1)];
        println!("semantic embedding alone p50 {p50:.3} ms, p95 {p95:.3} ms");
    } else {
        println!("semantic layer disabled: timings are rules and lexical classifier only");
    }

    c.bench_function("classify_alternating_utterances_with_embedding", |b| {
        let pair = [
            "my neighbour hasnt been seen for days and her curtains are shut",
            "um the recycling lorry didn't come down our street yesterday",
        ];
        let mut turn = 0usize;
        b.iter(|| {
            turn += 1;
            engine.classify(black_box(pair[turn % 2]))
        })
    });
    c.bench_function("classify_typical_utterance", |b| {
        b.iter(|| {
            engine.classify(black_box(
                "um the recycling lorry didn't come down our street yesterday",
            ))
        })
    });
    c.bench_function("classify_10k_chars", |b| {
        let long = "x".repeat(10_000);
        b.iter(|| engine.classify(black_box(&long)))
    });
}

criterion_group!(benches, classify);
criterion_main!(benches);
