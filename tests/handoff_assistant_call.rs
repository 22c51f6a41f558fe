//! The whole path a distressed caller takes, through the real engine: SIPp
//! calls `frontdoor serve`, says a distress sentence to the assistant
//! (Whisper hears it, the answer engine escalates), and Frontdoor bridges the
//! call to a baresip agent that registered with digest authentication. The
//! agent's phone must ring soon after the sentence ends, audio must pass both
//! ways, and the record must say why the call was handed over.

mod common;
mod handoff_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use handoff_support::{Baresip, write_wav};

const CONFIG: &str = r#"
[handoff]
wrap_up_secs = 0
default_queue = "general"
[[handoff.agent]]
id = "agent1"
password = "correct-horse-9"
[[handoff.queue]]
name = "general"
members = ["agent1"]
ring_timeout_secs = 15
"#;

const DIALPLAN: &str = r#"
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 60 } }]
"#;

/// A neural voice (`frontdoor say`) for the caller's sentence, 8 kHz samples.
fn spoken(dir: &Path, text: &str) -> Vec<f32> {
    let wav = dir.join("said.wav");
    let status = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("say")
        .arg(text)
        .arg("-o")
        .arg(&wav)
        .status()
        .expect("frontdoor say");
    assert!(status.success());
    read_wav_channel(&wav, 0).1
}

fn audit(engine: &Engine) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        engine.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open db");
    let mut stmt = db
        .prepare("SELECT at, action, detail FROM audit_log ORDER BY seq")
        .expect("audit");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// (speaker, text) of every stored turn, in order.
fn turns(engine: &Engine) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        engine.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open db");
    let mut stmt = db
        .prepare("SELECT speaker, text FROM turns ORDER BY rowid")
        .expect("turns");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("timestamp")
        .to_utc()
}

#[test]
fn distressed_caller_reaches_a_registered_agent_with_audio_both_ways() {
    let test = "distressed_caller_reaches_a_registered_agent_with_audio_both_ways";
    if !require_binaries(test, &["sipp", "baresip", "sox"]) {
        return;
    }
    if !frontdoor::config::Config::default()
        .model_set()
        .missing_files()
        .is_empty()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: models missing under CI"
        );
        eprintln!("*** SKIPPED {test}: run `frontdoor models fetch` ***");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sentence = spoken(
        work.path(),
        "I can't cope any more. I just want it all to end.",
    );
    let sentence_ms = sentence.len() as u32 / 8;
    let (_, later_speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    let (_, agent_voice) = {
        let wav = work.path().join("agent_src.wav");
        sox_convert(&fixture("greeting_16k.wav"), &wav, 8000);
        read_wav_channel(&wav, 0)
    };

    // Caller: speaks over the greeting 3 s in, waits, then talks to the agent.
    let lead_ms = 3000;
    let caller_wav = work.path().join("caller.wav");
    let mut caller = vec![0.0f32; (lead_ms * 8) as usize];
    caller.extend_from_slice(&sentence);
    caller.extend(std::iter::repeat_n(0.0, 15 * 8000));
    caller.extend_from_slice(&later_speech);
    write_wav(&caller_wav, 0, &caller, 20_000);
    let caller_ulaw = work.path().join("caller.ul");
    sox_to_ulaw(&caller_wav, &caller_ulaw);

    let mut engine = Engine::builder()
        .config(CONFIG)
        .dialplans(&[("council.toml", DIALPLAN)])
        .start();
    let port = engine.sip_addr().port();

    // The agent answers, says its piece a few seconds after the summary, and
    // stays on the line.
    let agent_wav = work.path().join("agent.wav");
    write_wav(&agent_wav, 20_000, &agent_voice, 60_000);
    let mut agent = Baresip::agent("agent1", "correct-horse-9", port, &agent_wav);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent.log().contains("200 OK") {
        assert!(
            Instant::now() < deadline,
            "agent never registered:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .audio(&caller_ulaw)
        .args(["-m", "1", "-d", "42000"])
        .timeout(Duration::from_secs(120))
        .run();
    assert_sipp_ok(&run, &engine, "distressed caller");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));
    agent.stop();

    let entries = audit(&engine);
    let actions: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    assert!(
        entries
            .iter()
            .any(|e| e.1 == "escalate" && e.2.starts_with("distress")),
        "no distress escalation: {entries:#?}\n{}",
        engine.log()
    );
    assert!(
        actions.contains(&"handoff_connected"),
        "never bridged: {actions:?}\n{}",
        engine.log()
    );

    // The agent's phone rang soon after the sentence ended.
    let answered = ts(call.answered_at.as_deref().expect("answered"));
    let requested = entries
        .iter()
        .find(|e| e.1 == "handoff_requested")
        .map(|e| ts(&e.0))
        .expect("handoff_requested");
    let sentence_end = answered + chrono::Duration::milliseconds(i64::from(lead_ms + sentence_ms));
    let ring_after = (requested - sentence_end).num_milliseconds();
    eprintln!("agent rung {ring_after} ms after the end of the caller's sentence");
    assert!(
        ring_after < 3000,
        "agent rung {ring_after} ms after the sentence ended"
    );

    // Audio both ways: the agent heard the caller's later speech, and the
    // caller (Frontdoor's outgoing channel) carried the agent's voice.
    let heard = agent
        .heard_wav()
        .expect("agent's recording of what it heard");
    let (rate, agent_heard) = read_wav_channel(&heard, 0);
    let (c_agent, _) = envelope_match(&later_speech, 8000, &agent_heard, rate);
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let (rate, to_caller) = read_wav_channel(&recording, 1);
    // Only what the caller heard once bridged (before that: the assistant).
    let connected = entries
        .iter()
        .find(|e| e.1 == "handoff_connected")
        .map(|e| ts(&e.0))
        .expect("handoff_connected");
    let from = ((connected - answered).num_milliseconds().max(0) as usize * rate as usize / 1000)
        .min(to_caller.len());
    let (c_caller, _) = envelope_match(&agent_voice, 8000, &to_caller[from..], rate);
    eprintln!("agent heard caller: {c_agent:.2}; caller heard agent: {c_caller:.2}");
    assert!(
        c_agent > 0.6,
        "agent did not hear the caller ({c_agent:.2})"
    );
    assert!(
        c_caller > 0.6,
        "caller did not hear the agent ({c_caller:.2})"
    );

    // Both sides of the bridged conversation are transcribed: the agent's
    // words, and the caller's later speech (the assistant had left by then).
    // The last utterances may still be in recognition when the call ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bridged_turns = loop {
        let turns = turns(&engine);
        let agent_spoke = turns
            .iter()
            .any(|(who, text)| who == "agent" && text.to_lowercase().contains("council"));
        let caller_spoke = turns.iter().any(|(who, text)| {
            let text = text.to_lowercase();
            who == "caller" && (text.contains("young") || text.contains("disposed"))
        });
        if (agent_spoke && caller_spoke) || Instant::now() > deadline {
            break (agent_spoke, caller_spoke, turns);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        bridged_turns.0 && bridged_turns.1,
        "bridged conversation not transcribed for both speakers: {:#?}\n{}",
        bridged_turns.2,
        engine.log()
    );
    engine.stop();
}
