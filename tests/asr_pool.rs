//! The Whisper worker pool: concurrency, back-pressure, cancellation and
//! metrics, with the real tiny.en model on real speech.

mod asr_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use asr_common::{load_clips, pocketsphinx_data, skip, whisper_model};
use frontdoor::asr::wer::word_errors;
use frontdoor::asr::{
    AsrConfig, AsrError, AsrModel, AsrPool, AsrPoolConfig, Utterance, WindowPolicy,
};

struct Inputs {
    model: Arc<AsrModel>,
    /// (reference, 16 kHz telephone-path audio)
    clips: Vec<(String, Vec<f32>)>,
}

fn inputs(test: &str) -> Option<Inputs> {
    let Some(model_path) = whisper_model() else {
        skip(test, "Whisper tiny.en model not found");
        return None;
    };
    let Some(data) = pocketsphinx_data() else {
        skip(test, "pocketsphinx-testdata recordings not found");
        return None;
    };
    let model = AsrModel::load(&model_path, AsrConfig::default()).expect("load model");
    let clips = load_clips(&data)
        .into_iter()
        .map(|clip| (clip.reference, clip.telephone_16k))
        .collect();
    Some(Inputs { model, clips })
}

/// 25 s of speech, long enough to keep a worker busy for a while.
fn long_utterance(clips: &[(String, Vec<f32>)]) -> Vec<f32> {
    clips
        .iter()
        .take(5)
        .flat_map(|(_, audio)| audio.iter().copied())
        .collect()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asr_pool_transcribes_concurrent_utterances_on_every_worker() {
    let Some(inputs) = inputs("asr_pool_transcribes_concurrent_utterances_on_every_worker") else {
        return;
    };
    let reports = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reports);
    let pool = Arc::new(
        AsrPool::start(
            &inputs.model,
            AsrPoolConfig {
                workers: 2,
                queue_capacity: 10,
                on_job_done: Some(Arc::new(move |report| {
                    assert!(report.audio_seconds > 0.5);
                    counted.fetch_add(1, Ordering::Relaxed);
                })),
                threads_when_alone: 2,
                shed_prompt_when_busy: true,
            },
        )
        .expect("start pool"),
    );
    assert_eq!(pool.workers(), 2);

    let mut tasks = Vec::new();
    for (reference, audio) in inputs.clips.iter().skip(5).cloned() {
        let pool = Arc::clone(&pool);
        // Submitted as 8 kHz, the way a G.711 call delivers it.
        let narrow: Vec<f32> = audio.iter().step_by(2).copied().collect();
        tasks.push(tokio::spawn(async move {
            let transcript = pool
                .submit(Utterance::Telephony8k(narrow))
                .await
                .expect("transcribe");
            (reference, transcript.text)
        }));
    }
    for task in tasks {
        let (reference, text) = task.await.expect("task");
        let errors = word_errors(&reference, &text);
        assert!(errors.errors <= 1, "{reference:?} heard as {text:?}");
    }
    let metrics = pool.metrics().snapshot();
    assert_eq!(metrics.submitted, 5);
    assert_eq!(metrics.completed, 5);
    assert_eq!(metrics.queued, 0);
    assert_eq!(metrics.in_progress, 0);
    assert!(metrics.processing_micros > 0 && metrics.audio_micros > 5_000_000);
    assert_eq!(reports.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asr_pool_answers_busy_when_the_queue_is_full_and_recovers() {
    let Some(inputs) = inputs("asr_pool_answers_busy_when_the_queue_is_full_and_recovers") else {
        return;
    };
    let pool = Arc::new(
        AsrPool::start(
            &inputs.model,
            AsrPoolConfig {
                workers: 1,
                queue_capacity: 1,
                on_job_done: None,
                threads_when_alone: 1,
                shed_prompt_when_busy: true,
            },
        )
        .expect("start pool"),
    );
    let long = long_utterance(&inputs.clips);
    let first = {
        let pool = Arc::clone(&pool);
        let long = long.clone();
        tokio::spawn(async move {
            pool.submit_with(Utterance::Wideband16k(long), Some(WindowPolicy::Full))
                .await
        })
    };
    wait_until("the worker starts", || {
        pool.metrics().snapshot().in_progress == 1
    })
    .await;
    let queued = {
        let pool = Arc::clone(&pool);
        let short = inputs.clips[5].1.clone();
        tokio::spawn(async move { pool.submit(Utterance::Wideband16k(short)).await })
    };
    wait_until("the second job is queued", || {
        pool.metrics().snapshot().queued == 1
    })
    .await;

    let refused_at = Instant::now();
    let refused = pool
        .submit(Utterance::Wideband16k(inputs.clips[6].1.clone()))
        .await;
    assert!(matches!(refused, Err(AsrError::Busy)), "{refused:?}");
    assert!(
        refused_at.elapsed() < Duration::from_millis(50),
        "Busy must be immediate"
    );

    assert!(first.await.expect("task").is_ok());
    assert!(queued.await.expect("task").is_ok());
    // Once drained, the pool takes work again.
    assert!(
        pool.submit(Utterance::Wideband16k(inputs.clips[6].1.clone()))
            .await
            .is_ok()
    );
    let metrics = pool.metrics().snapshot();
    assert_eq!(metrics.rejected_busy, 1);
    assert_eq!(metrics.completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asr_pool_cancels_jobs_when_the_caller_hangs_up() {
    let Some(inputs) = inputs("asr_pool_cancels_jobs_when_the_caller_hangs_up") else {
        return;
    };
    let pool = Arc::new(
        AsrPool::start(
            &inputs.model,
            AsrPoolConfig {
                workers: 1,
                queue_capacity: 2,
                on_job_done: None,
                threads_when_alone: 1,
                shed_prompt_when_busy: true,
            },
        )
        .expect("start pool"),
    );
    let long = long_utterance(&inputs.clips);
    let submit_long = |pool: &Arc<AsrPool>| {
        let pool = Arc::clone(pool);
        let long = long.clone();
        tokio::spawn(async move {
            pool.submit_with(Utterance::Wideband16k(long), Some(WindowPolicy::Full))
                .await
        })
    };

    // A running job whose caller hangs up (the submitting task is aborted).
    let running = submit_long(&pool);
    wait_until("the worker starts", || {
        pool.metrics().snapshot().in_progress == 1
    })
    .await;
    // A queued job whose caller hangs up before a worker reaches it.
    let waiting = submit_long(&pool);
    wait_until("the second job is queued", || {
        pool.metrics().snapshot().queued == 1
    })
    .await;
    waiting.abort();
    running.abort();

    // whisper.cpp checks the abort flag between graphs, so a running encoder
    // pass finishes first (≤ ~2 s for a full window) but no decoding follows,
    // and the queued job is dropped without being decoded at all.
    wait_until("both jobs are cancelled", || {
        pool.metrics().snapshot().cancelled == 2
    })
    .await;
    let metrics = pool.metrics().snapshot();
    assert_eq!(metrics.completed, 0);
    assert_eq!(metrics.queued, 0);
    let next = pool
        .submit(Utterance::Wideband16k(inputs.clips[5].1.clone()))
        .await;
    assert!(next.is_ok(), "{next:?}");
    assert_eq!(pool.metrics().snapshot().completed, 1);
}

#[tokio::test]
async fn asr_pool_reports_bad_audio_as_errors_and_shuts_down_cleanly() {
    let Some(inputs) = inputs("asr_pool_reports_bad_audio_as_errors_and_shuts_down_cleanly") else {
        return;
    };
    let pool = AsrPool::start(
        &inputs.model,
        AsrPoolConfig {
            workers: 1,
            queue_capacity: 4,
            on_job_done: None,
            threads_when_alone: 1,
            shed_prompt_when_busy: true,
        },
    )
    .expect("start pool");
    assert!(matches!(
        pool.submit(Utterance::Wideband16k(Vec::new())).await,
        Err(AsrError::EmptyAudio)
    ));
    assert!(matches!(
        pool.submit(Utterance::Telephony8k(vec![0.1; 800])).await,
        Err(AsrError::TooShort { .. })
    ));
    assert!(matches!(
        pool.submit(Utterance::Wideband16k(vec![f32::NAN; 16_000]))
            .await,
        Err(AsrError::InvalidAudio)
    ));
    assert_eq!(pool.metrics().snapshot().failed, 3);
    assert!(matches!(
        AsrPool::start(
            &inputs.model,
            AsrPoolConfig {
                workers: 0,
                queue_capacity: 1,
                on_job_done: None,
                threads_when_alone: 1,
                shed_prompt_when_busy: true,
            }
        ),
        Err(AsrError::Config(_))
    ));
    tokio::task::spawn_blocking(move || pool.shutdown())
        .await
        .expect("shutdown");
}

/// Under load (turns waiting behind the one being decoded) a turn is decoded
/// without the vocabulary prompt, which is cheaper; alone, with it. Both
/// give the recording's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asr_pool_sheds_the_vocabulary_prompt_only_while_turns_wait() {
    let Some(inputs) = inputs("asr_pool_sheds_the_vocabulary_prompt_only_while_turns_wait") else {
        return;
    };
    for shed in [true, false] {
        let prompted = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = Arc::clone(&prompted);
        let pool = Arc::new(
            AsrPool::start(
                &inputs.model,
                AsrPoolConfig {
                    workers: 1,
                    queue_capacity: 8,
                    on_job_done: Some(Arc::new(move |report| {
                        seen.lock().push(report.prompted);
                    })),
                    threads_when_alone: 1,
                    shed_prompt_when_busy: shed,
                },
            )
            .expect("start pool"),
        );
        let mut tasks = Vec::new();
        for (reference, audio) in inputs.clips.iter().skip(5).take(4).cloned() {
            let pool = Arc::clone(&pool);
            tasks.push(tokio::spawn(async move {
                let transcript = pool.submit(Utterance::Wideband16k(audio)).await;
                (reference, transcript.expect("transcribe").text)
            }));
        }
        for task in tasks {
            let (reference, text) = task.await.expect("task");
            let errors = word_errors(&reference, &text);
            assert!(errors.errors <= 1, "{reference:?} heard as {text:?}");
        }
        let prompted = prompted.lock().clone();
        assert_eq!(prompted.len(), 4);
        if shed {
            // The first three had others queued behind them (submitted
            // together, decoded one at a time); the last had nobody.
            assert!(prompted[3], "{prompted:?}");
            assert!(
                prompted[..3].iter().filter(|p| !**p).count() >= 2,
                "{prompted:?}"
            );
        } else {
            assert!(prompted.iter().all(|p| *p), "{prompted:?}");
        }
        let pool = Arc::try_unwrap(pool).ok().expect("sole owner");
        tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .expect("shutdown");
    }
}
