//! Conversational calls end to end, with real peers and real models: SIPp
//! calls Frontdoor and speaks a recorded question (made with `frontdoor say`); Frontdoor recognises it with Whisper, answers
//! with the answer engine and speaks with Piper. The test then transcribes
//! what Frontdoor actually sent (the right channel of its call recording) with
//! Whisper and checks it is the right answer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const ASSISTANT_DIALPLAN: &str = r#"
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 30 } }]
"#;

fn peers_and_models(test: &str) -> bool {
    if !require_binaries(test, &["sipp", "sox"]) {
        return false;
    }
    let missing: Vec<PathBuf> = frontdoor::config::Config::default()
        .model_set()
        .missing_files()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: models missing under CI: {missing:?} (run `frontdoor models fetch`)");
        }
        eprintln!(
            "*** SKIPPED {test}: models missing {missing:?}; run `frontdoor models fetch` ***"
        );
        return false;
    }
    true
}

/// Speaks `text` with a neural voice (`frontdoor say`, Piper) into raw µ-law
/// at 8 kHz, with silence around it: a caller's recorded question.
fn caller_voice(dir: &Path, text: &str, lead_ms: u32, tail_ms: u32) -> PathBuf {
    let wav = dir.join("q.wav");
    let status = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("say")
        .arg(text)
        .arg("-o")
        .arg(&wav)
        .status()
        .expect("frontdoor say");
    assert!(status.success());
    let ulaw = dir.join("q.ul");
    let status = Command::new("sox")
        .arg(&wav)
        .args(["-r", "8000", "-c", "1", "-t", "ul"])
        .arg(&ulaw)
        .args([
            "pad",
            &format!("{:.3}", lead_ms as f64 / 1000.0),
            &format!("{:.3}", tail_ms as f64 / 1000.0),
        ])
        .status()
        .expect("sox");
    assert!(status.success());
    ulaw
}

/// Transcribes part of one channel of a recording with Frontdoor's Whisper.
fn transcribe_channel(recording: &Path, channel: u16, from_s: f32, to_s: f32) -> String {
    let (rate, samples) = read_wav_channel(recording, channel);
    let from = ((from_s * rate as f32) as usize).min(samples.len());
    let to = ((to_s * rate as f32) as usize).clamp(from, samples.len());
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&part, spec).unwrap();
    for s in &samples[from..to] {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let model = frontdoor::config::Config::default()
        .model_set()
        .whisper_ggml;
    frontdoor::asr::transcribe_file(&model, &part)
        .expect("transcribe")
        .to_lowercase()
}

fn turns(engine: &Engine) -> Vec<(String, String, Option<String>)> {
    let db = rusqlite::Connection::open_with_flags(
        engine.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open db");
    let mut stmt = db
        .prepare("SELECT speaker, text, intent FROM turns ORDER BY rowid")
        .expect("turns table");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn audit_actions(engine: &Engine) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        engine.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open db");
    let mut stmt = db
        .prepare("SELECT action FROM audit_log ORDER BY seq")
        .expect("audit table");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Linear RMS of each 20 ms frame of one channel.
fn frame_rms(recording: &Path, channel: u16) -> Vec<f32> {
    let (rate, samples) = read_wav_channel(recording, channel);
    samples.chunks((rate / 50) as usize).map(rms).collect()
}

#[test]
fn spoken_question_gets_the_right_spoken_answer() {
    let test = "spoken_question_gets_the_right_spoken_answer";
    if !peers_and_models(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The greeting takes about 12 s; the caller waits for it, then asks.
    let voice = caller_voice(dir.path(), "When is my bin collection day?", 15_000, 30_000);
    let mut engine = Engine::builder()
        .dialplans(&[("council.toml", ASSISTANT_DIALPLAN)])
        .start();
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .audio(&voice)
        .args(["-m", "1", "-d", "32000"])
        .timeout(std::time::Duration::from_secs(90))
        .run();
    assert_sipp_ok(&run, &engine, "conversational call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let turns = turns(&engine);
    let caller: Vec<_> = turns.iter().filter(|t| t.0 == "caller").collect();
    assert!(
        caller.iter().any(|t| {
            let t = t.1.to_lowercase();
            t.contains("bin") || t.contains("collection")
        }),
        "caller's question not recognised: {turns:#?}\n{}",
        engine.log()
    );
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("bin_day")),
        "no bin_day answer: {turns:#?}"
    );

    // What Frontdoor really sent: transcribe its channel after the question.
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let heard = transcribe_channel(&recording, 1, 17.0, 32.0);
    assert!(
        heard.contains("collect") || heard.contains("bin"),
        "Frontdoor's spoken answer does not talk about bin collection: {heard:?}"
    );
    engine.stop();
}

#[test]
fn caller_talking_over_the_greeting_stops_it_and_is_answered() {
    let test = "caller_talking_over_the_greeting_stops_it_and_is_answered";
    if !peers_and_models(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The caller speaks 3 s in, while the (12 s) greeting is still playing.
    let lead_ms = 3_000;
    let voice = caller_voice(
        dir.path(),
        "I want to report a pothole on my road.",
        lead_ms,
        25_000,
    );
    let mut engine = Engine::builder()
        .dialplans(&[("council.toml", ASSISTANT_DIALPLAN)])
        .start();
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .audio(&voice)
        .args(["-m", "1", "-d", "20000"])
        .timeout(std::time::Duration::from_secs(90))
        .run();
    assert_sipp_ok(&run, &engine, "barge-in call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let actions = audit_actions(&engine);
    assert!(
        actions.iter().any(|a| a == "barge_in"),
        "no barge-in recorded: {actions:?}"
    );

    // The recording is aligned per 20 ms tick: left = caller, right = Frontdoor.
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let caller = frame_rms(&recording, 0);
    let bot = frame_rms(&recording, 1);
    let onset = caller
        .iter()
        .position(|&e| e > 0.02)
        .expect("caller speech in the recording");
    assert!(
        bot[..onset].iter().any(|&e| e > 0.02),
        "the greeting was not playing before the caller spoke"
    );
    // Frontdoor must fall silent soon after the caller starts: find the first
    // 200 ms of silence on its channel after the onset.
    let silent_at = (onset..bot.len().saturating_sub(10))
        .find(|&i| bot[i..i + 10].iter().all(|&e| e < 0.01))
        .expect("Frontdoor never stopped talking");
    let stop_ms = (silent_at - onset) * 20;
    eprintln!(
        "barge-in: caller onset at {} ms, Frontdoor silent {stop_ms} ms later",
        onset * 20
    );
    assert!(
        stop_ms <= 600,
        "Frontdoor kept talking {stop_ms} ms over the caller"
    );

    // The interrupting words were recognised and answered.
    let turns = turns(&engine);
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "caller" && t.1.to_lowercase().contains("pothole")),
        "the caller's words after the barge-in were not recognised: {turns:#?}"
    );
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("highways")),
        "no highways answer: {turns:#?}"
    );
    engine.stop();
}
