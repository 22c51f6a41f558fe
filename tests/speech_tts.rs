//! Piper TTS on the real voice: audio is plausible speech, punctuation is
//! kept, the worker pool streams and cancels, prompts are cached.

#[path = "speech_support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor::speech::{
    PiperVoice, PiperVoiceOptions, PromptCache, SpeechError, TtsPoolConfig, TtsWorkerPool,
    say_to_wav,
};

const GREETING: &str = "Hello, you have reached the city council. How can I help?";

fn voice_with(options: PiperVoiceOptions) -> Option<PiperVoice> {
    let paths = support::models()?;
    Some(
        PiperVoice::load_with(&paths.piper_onnx, &paths.piper_config, options)
            .expect("voice loads"),
    )
}

fn deterministic() -> PiperVoiceOptions {
    PiperVoiceOptions {
        noise_scale: Some(0.0),
        noise_w: Some(0.0),
        ..PiperVoiceOptions::default()
    }
}

#[test]
fn greeting_at_8k_is_plausible_speech_sentence_by_sentence() {
    let Some(voice) = voice_with(PiperVoiceOptions::default()) else {
        return;
    };
    assert_eq!(voice.sample_rate(), 22_050);
    let sentences: Vec<Vec<i16>> = voice
        .synthesize_8k(GREETING)
        .collect::<Result<_, _>>()
        .expect("synthesis");
    assert_eq!(sentences.len(), 2, "one chunk per sentence");
    let audio: Vec<i16> = sentences.concat();
    let seconds = audio.len() as f64 / 8_000.0;
    // About 13 words: 2.5–7 s at a normal speaking rate.
    assert!((2.5..7.0).contains(&seconds), "duration {seconds:.2} s");
    let level = support::rms(&audio);
    assert!(level > 1_000.0, "RMS {level:.0} is too quiet for speech");
    for sentence in &sentences {
        assert!(support::rms(sentence) > 500.0);
    }
}

#[test]
fn a_question_mark_changes_the_speech() {
    let Some(voice) = voice_with(deterministic()) else {
        return;
    };
    let say = |text: &str| {
        voice
            .synthesize(text)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .concat()
    };
    let statement = say("You can pay your council tax online.");
    let again = say("You can pay your council tax online.");
    let question = say("You can pay your council tax online?");
    // With the noise off synthesis is deterministic, so a difference is the mark's doing.
    assert_eq!(statement, again);
    assert_ne!(statement, question, "the question mark was dropped");
    let length_ratio = question.len() as f64 / statement.len() as f64;
    let overlap = statement.len().min(question.len());
    let diff: f64 = statement[..overlap]
        .iter()
        .zip(&question[..overlap])
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        / overlap as f64;
    assert!(
        diff.sqrt() > 0.05 * support::rms(&statement) || (length_ratio - 1.0).abs() > 0.02,
        "question and statement are nearly identical (diff {:.0}, length ratio {length_ratio:.3})",
        diff.sqrt()
    );
}

#[test]
fn a_comma_adds_a_pause() {
    let Some(voice) = voice_with(deterministic()) else {
        return;
    };
    let say = |text: &str| {
        voice
            .synthesize(text)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .concat()
    };
    let run_on = say("Yes we can help with that.");
    let paused = say("Yes, we can help with that.");
    assert!(
        paused.len() > run_on.len() + 22_050 / 20,
        "comma added only {} samples",
        paused.len() as i64 - run_on.len() as i64
    );
}

#[test]
fn say_to_wav_writes_an_8k_file() {
    let Some(voice) = voice_with(PiperVoiceOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("greeting.wav");
    say_to_wav(&voice, "Your reference is FD-123456.", &out, 8_000).expect("wav written");
    let (samples, rate) = support::read_wav(&out);
    assert_eq!(rate, 8_000);
    // Ten spelled-out symbols take a few seconds.
    assert!(samples.len() > 8_000 * 2, "{} samples", samples.len());
    assert!(support::rms(&samples) > 1_000.0);
}

#[test]
fn worker_pool_streams_sentences_and_cancels_promptly() {
    let Some(voice) = voice_with(PiperVoiceOptions::default()) else {
        return;
    };
    let pool = TtsWorkerPool::start(Arc::new(voice), TtsPoolConfig::default()).unwrap();
    let long_answer = "Your bin is collected on Tuesdays. Recycling goes out every other week. \
        Garden waste needs a permit, which costs £45 a year. You can apply online. \
        If a collection is missed, report it within two working days. ";
    let mut stream = pool.try_speak(&long_answer.repeat(3)).unwrap();
    let first = stream
        .blocking_next()
        .expect("a first sentence")
        .expect("synthesised");
    assert_eq!(first.sentence_index, 0);
    assert_eq!(first.sample_rate, 8_000);
    assert!(first.text.starts_with("Your bin is collected"));
    assert!(support::rms(&first.samples) > 500.0);

    // Barge-in: cancel, then a new request must not wait for the old text.
    stream.cancel();
    assert!(stream.blocking_next().is_none(), "audio after cancel");
    let asked = Instant::now();
    let mut next = pool.try_speak("One moment.").unwrap();
    let chunk = next.blocking_next().expect("chunk").expect("synthesised");
    let waited = asked.elapsed();
    assert_eq!(chunk.text, "One moment.");
    assert!(
        waited < Duration::from_secs(2),
        "the cancelled request kept the worker busy for {waited:?}"
    );
    assert!(next.blocking_next().is_none());
    pool.shutdown();
}

#[test]
fn a_full_queue_pushes_back_instead_of_piling_up() {
    let Some(voice) = voice_with(PiperVoiceOptions::default()) else {
        return;
    };
    let config = TtsPoolConfig {
        queue_capacity: 1,
        ..TtsPoolConfig::default()
    };
    let pool = TtsWorkerPool::start(Arc::new(voice), config).unwrap();
    let text = "This is a fairly long sentence that keeps the only worker busy for a while.";
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match pool.try_speak(text) {
            Ok(stream) => streams.push(stream),
            Err(SpeechError::QueueFull { capacity }) => {
                assert_eq!(capacity, 1);
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of 6 refused with a queue of 1"
    );
    drop(streams);
}

#[test]
fn prompt_cache_synthesises_once() {
    let Some(voice) = voice_with(PiperVoiceOptions::default()) else {
        return;
    };
    let cache = PromptCache::new(Arc::new(voice), 8);
    assert!(cache.get("One moment, please.").is_none());
    cache.warm(["One moment, please.", GREETING]).unwrap();
    assert_eq!(cache.len(), 2);
    let started = Instant::now();
    let first = cache.get_or_synthesize("One moment, please.").unwrap();
    let second = cache.get("One moment, please.").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "cache hit was slow"
    );
    assert!(Arc::ptr_eq(&first, &second));
    assert!(first.len() > 8_000 / 2, "{} samples at 8 kHz", first.len());
}
