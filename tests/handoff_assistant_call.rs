//! The whole path a distressed caller takes, through the real engine: SIPp
//! calls `frontdoor serve`, says a distress sentence to the assistant
//! (Whisper hears it, the answer engine escalates), and Frontdoor bridges the
//! call to a baresip agent that registered with digest authentication. The
//! agent's phone must ring soon after the sentence ends, audio must pass both
//! ways, and the record must say why the call was handed over.

mod common;
mod handoff_support;

use std::time::{Duration, Instant};

use common::db::{query_rows, timestamp};
use common::speech::*;
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

/// (at, action, detail) of every audit entry, in order.
fn audit(engine: &Engine) -> Vec<(String, String, String)> {
    query_rows(
        &engine.db_path(),
        "SELECT at, action, detail FROM audit_log ORDER BY seq",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// (speaker, text) of every stored turn, in order.
fn turns(engine: &Engine) -> Vec<(String, String)> {
    query_rows(
        &engine.db_path(),
        "SELECT speaker, text FROM turns ORDER BY rowid",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

#[test]
fn distressed_caller_reaches_a_registered_agent_with_audio_both_ways() {
    let test = "distressed_caller_reaches_a_registered_agent_with_audio_both_ways";
    if !require_binaries(test, &["sipp", "baresip", "sox"]) {
        return;
    }
    if !speech_models_present(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sentence = spoken_8k_samples(
        work.path(),
        "sentence",
        "I can't cope any more. I just want it all to end.",
    );
    let sentence_ms = sentence.len() as u32 / 8;
    let later_speech = speech_fixture_8k();
    let agent_voice = greeting_fixture_8k();

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
    let answered = timestamp(call.answered_at.as_deref().expect("answered"));
    let requested = entries
        .iter()
        .find(|e| e.1 == "handoff_requested")
        .map(|e| timestamp(&e.0))
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
        .map(|e| timestamp(&e.0))
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
