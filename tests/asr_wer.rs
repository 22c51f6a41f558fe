//! Accuracy of Whisper on real recorded speech over a telephone line: the
//! fitted encoder window must not cost accuracy against the full 30 s window.
//!
//! Recordings: Debian's `pocketsphinx-testdata` (LibriVox read speech and
//! spoken playing-card phrases, with reference transcripts), resampled to
//! 8 kHz and µ-law encoded as on a SIP call, then upsampled as the pipeline
//! does. Needs the tiny.en model and the recordings; skips loudly without
//! them, fails under CI=true.

mod asr_common;

use std::time::Duration;

use asr_common::{Clip, load_clips, pocketsphinx_data, skip, whisper_model};
use frontdoor::asr::wer::{WordErrors, word_errors};
use frontdoor::asr::window::GuardLimits;
use frontdoor::asr::{AsrConfig, AsrModel, TranscribeOptions, Transcriber, WindowPolicy};

/// Measured WER summary for one way of decoding.
struct Run {
    label: String,
    per_set: Vec<(&'static str, WordErrors)>,
    total: WordErrors,
    fallbacks: usize,
    elapsed: Duration,
}

fn evaluate(
    transcriber: &mut Transcriber,
    clips: &[Clip],
    label: &str,
    options: &TranscribeOptions,
) -> Run {
    let mut per_set: Vec<(&'static str, WordErrors)> = Vec::new();
    let mut total = WordErrors::default();
    let mut fallbacks = 0;
    let mut elapsed = Duration::ZERO;
    for clip in clips {
        let transcript = transcriber
            .transcribe(&clip.telephone_16k, options)
            .unwrap_or_else(|e| panic!("{}: {e}", clip.name));
        let errors = word_errors(&clip.reference, &transcript.text);
        eprintln!(
            "  [{label}] {}/{} ctx={} fallback={:?} {:.2}s errors={}/{}\n      ref: {}\n      hyp: {}",
            clip.set,
            clip.name,
            transcript.window.audio_ctx,
            transcript.window.fallback,
            transcript.elapsed.as_secs_f32(),
            errors.errors,
            errors.reference_words,
            clip.reference,
            transcript.text
        );
        fallbacks += usize::from(transcript.window.fallback.is_some());
        elapsed += transcript.elapsed;
        total = total + errors;
        match per_set.iter_mut().find(|(set, _)| *set == clip.set) {
            Some((_, sum)) => *sum = *sum + errors,
            None => per_set.push((clip.set, errors)),
        }
    }
    Run {
        label: label.to_string(),
        per_set,
        total,
        fallbacks,
        elapsed,
    }
}

fn print_runs(runs: &[&Run]) {
    eprintln!(
        "\n{:<44} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "decoding", "librivox", "cards", "all", "fallbacks", "time"
    );
    for run in runs {
        let set = |name: &str| {
            run.per_set
                .iter()
                .find(|(set, _)| *set == name)
                .map_or(f64::NAN, |(_, e)| 100.0 * e.rate())
        };
        eprintln!(
            "{:<44} {:>9.1}% {:>9.1}% {:>9.1}% {:>9} {:>7.2}s",
            run.label,
            set("librivox"),
            set("cards"),
            100.0 * run.total.rate(),
            run.fallbacks,
            run.elapsed.as_secs_f32()
        );
    }
}

fn inputs(test: &str) -> Option<(std::path::PathBuf, Vec<Clip>)> {
    let Some(model) = whisper_model() else {
        skip(test, "Whisper tiny.en model not found");
        return None;
    };
    let Some(data) = pocketsphinx_data() else {
        skip(test, "pocketsphinx-testdata recordings not found");
        return None;
    };
    Some((model, load_clips(&data)))
}

/// The fitted window (the default policy, with its guards) is within one
/// point of the full window's WER on 8 kHz µ-law speech, and both are under
/// an absolute bound. Figures measured on this data with tiny.en: see the
/// table this test prints (`--nocapture`).
#[test]
fn asr_wer_fitted_window_matches_full_window_on_telephone_speech() {
    let Some((model, clips)) =
        inputs("asr_wer_fitted_window_matches_full_window_on_telephone_speech")
    else {
        return;
    };
    assert_eq!(clips.len(), 10, "expected 5 LibriVox and 5 card clips");
    let mut transcriber = Transcriber::load(&model, AsrConfig::default()).expect("load model");
    let full = evaluate(
        &mut transcriber,
        &clips,
        "full window (1500)",
        &TranscribeOptions {
            window: Some(WindowPolicy::Full),
            ..Default::default()
        },
    );
    let fitted = evaluate(
        &mut transcriber,
        &clips,
        "fitted window (default policy)",
        &TranscribeOptions::default(),
    );
    print_runs(&[&full, &fitted]);

    // Measured with tiny.en (whisper.cpp 1.8.3, council prompt): full 5.4 %,
    // fitted 6.5 % (6 and 5 errors in 92 words). The same clips decoded with
    // a fitted window and no guards scored 14–85 %, so these bounds catch a
    // regression in the window policy or the guards, while leaving room for
    // one or two words of drift between whisper.cpp versions.
    const ABSOLUTE_BOUND: f64 = 0.10;
    const MARGIN_OVER_FULL: f64 = 0.025;
    assert!(
        full.total.rate() < ABSOLUTE_BOUND,
        "full-window WER {:.3}",
        full.total.rate()
    );
    assert!(
        fitted.total.rate() < ABSOLUTE_BOUND,
        "fitted-window WER {:.3}",
        fitted.total.rate()
    );
    assert!(
        fitted.total.rate() <= full.total.rate() + MARGIN_OVER_FULL,
        "fitted window WER {:.3} vs full {:.3}",
        fitted.total.rate(),
        full.total.rate()
    );
    // The point of the fitted window: most utterances must not need the
    // full-window retry, or it would cost more than it saves.
    assert!(
        fitted.fallbacks <= clips.len() / 2,
        "{} of {} fell back",
        fitted.fallbacks,
        clips.len()
    );
}

/// Measurement aid, not a check: WER and time for a range of window
/// policies and with/without the vocabulary prompt.
/// `cargo test --release --test asr_wer -- --ignored --nocapture`
/// `ASR_SWEEP_QUICK=1` keeps only the shipped prompt with guards;
/// `ASR_SWEEP_MINIMUMS=128,192,256` sets the minimum windows tried (margin 64).
#[test]
#[ignore = "slow sweep for choosing the window policy"]
fn asr_wer_window_policy_sweep() {
    let Some((model, clips)) = inputs("asr_wer_window_policy_sweep") else {
        return;
    };
    let mut runs = Vec::new();
    let quick = std::env::var_os("ASR_SWEEP_QUICK").is_some();
    let windows: Vec<(u32, u32)> = match std::env::var("ASR_SWEEP_MINIMUMS") {
        Ok(list) => list
            .split(',')
            .filter_map(|m| m.trim().parse().ok())
            .map(|minimum| (64, minimum))
            .collect(),
        Err(_) => vec![(64, 256), (64, 384), (128, 384)],
    };
    let prompts = [
        (
            "council prompt",
            frontdoor::asr::whisper::DEFAULT_VOCABULARY_PROMPT,
        ),
        (
            "short prompt",
            "Council tax, bin collection, Derby Homes, fly-tipping, potholes.",
        ),
        ("no prompt", ""),
    ];
    let prompts = if quick { &prompts[..1] } else { &prompts[..] };
    let guard_choices: &[bool] = if quick { &[true] } else { &[true, false] };
    for &(prompt_label, prompt) in prompts {
        for &guarded in guard_choices {
            let mut config = AsrConfig {
                vocabulary_prompt: prompt.to_string(),
                ..AsrConfig::default()
            };
            if !guarded {
                config.guards = GuardLimits::disabled();
            }
            let label = format!(
                "{}, {}",
                prompt_label,
                if guarded { "guards" } else { "no guards" }
            );
            let model = AsrModel::load(&model, config).expect("load model");
            let mut transcriber = model.transcriber().expect("state");
            let mut policies = Vec::new();
            if guarded {
                policies.push(("full".to_string(), WindowPolicy::Full));
            }
            for &(margin, minimum) in &windows {
                policies.push((
                    format!("m={margin} min={minimum}"),
                    WindowPolicy::Fitted {
                        margin,
                        minimum,
                        granularity: 64,
                    },
                ));
            }
            for (name, policy) in policies {
                runs.push(evaluate(
                    &mut transcriber,
                    &clips,
                    &format!("{label}, {name}"),
                    &TranscribeOptions {
                        window: Some(policy),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    print_runs(&runs.iter().collect::<Vec<_>>());
}
