//! Bridged transfer with real phones: baresip agents register with digest
//! authentication and auto-answer; a baresip caller is put through. Each
//! side's recording must hold the other side's speech, and the audit log
//! must say why the call was handed over.
//!
//! Needs `baresip` and `sox` (scripts/test-deps.sh).

mod common;
mod handoff_support;

use std::time::Duration;

use common::speech::{greeting_fixture_8k, speech_fixture_8k};
use common::*;
use frontdoor::answer::{Priority, TransferReason};
use frontdoor::handoff::{AgentState, TransferOutcome};
use handoff_support::*;

const SECTION: &str = r#"
realm = "frontdoor"
wrap_up_secs = 0
[[agent]]
id = "agent1"
password = "correct-horse-9"
[[queue]]
name = "general"
members = ["agent1"]
ring_timeout_secs = 10
announce_every_secs = 30
"#;

async fn wait_state(board: &Switchboard, agent: &str, state: AgentState, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let statuses = board
            .handoff
            .directory()
            .statuses(&[agent.to_owned()])
            .await;
        if statuses.first().is_some_and(|s| s.state == state) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distressed_caller_is_bridged_to_a_registered_agent_with_audio_both_ways() {
    if !require_binaries("handoff bridge", &["baresip", "sox"]) {
        return;
    }
    let mut board = Switchboard::start(
        SECTION,
        Plan::Bridged(request(TransferReason::Distress, Priority::Urgent)),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let (caller_speech, agent_speech) = (speech_fixture_8k(), greeting_fixture_8k());
    let speech_ms = caller_speech.len() as u32 / 8;
    let agent_ms = agent_speech.len() as u32 / 8;
    // The agent answers, hears the summary (1 s tone), then says its piece
    // and stays on until the caller has spoken; then its file ends and it
    // hangs up, which ends the bridge.
    let agent_wav = work.path().join("agent.wav");
    write_wav(&agent_wav, 2500, &agent_speech, speech_ms + 4000);
    let caller_wav = work.path().join("caller.wav");
    write_wav(&caller_wav, 2500 + agent_ms + 1500, &caller_speech, 30_000);

    let agent = Baresip::agent("agent1", "correct-horse-9", board.port, &agent_wav);
    assert!(
        wait_state(
            &board,
            "agent1",
            AgentState::Available,
            Duration::from_secs(10)
        )
        .await,
        "agent registered:\n{}",
        agent.log()
    );
    let caller = Baresip::caller(&caller_wav);
    caller.command("dial", &format!("sip:1000@127.0.0.1:{}", board.port));
    assert!(
        agent
            .wait_for_log("Call established", Duration::from_secs(10))
            .await,
        "agent's phone rang and answered:\n{}",
        agent.log()
    );
    let (id, outcome) = board.next_outcome(Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, TransferOutcome::Completed { ref agent, .. } if agent == "agent1"),
        "{outcome:?}"
    );
    let mut caller = caller;
    caller.stop();
    let agent = agent_handle_stop(agent);
    // The phones' own recordings of what they heard.
    let agent_heard = agent.heard_wav().expect("agent's sndfile dump");
    let (rate, heard) = read_wav_channel(&agent_heard, 0);
    // On failure the best offset and the recording's length tell clipped
    // speech (the bridge up late) from damaged audio (packets late or lost).
    let (corr, offset) = envelope_match(&caller_speech, 8000, &heard, rate);
    assert!(
        corr > 0.7,
        "the agent's phone heard the caller: {corr} (best at {offset} ms into a {} ms recording; the caller's speech is {speech_ms} ms)",
        heard.len() as u64 * 1000 / u64::from(rate.max(1))
    );
    let caller_heard = caller.heard_wav().expect("caller's sndfile dump");
    let (rate, heard) = read_wav_channel(&caller_heard, 0);
    let (corr, offset) = envelope_match(&agent_speech, 8000, &heard, rate);
    assert!(
        corr > 0.7,
        "the caller's phone heard the agent: {corr} (best at {offset} ms into a {} ms recording; the agent's speech is {agent_ms} ms)",
        heard.len() as u64 * 1000 / u64::from(rate.max(1))
    );

    let audit = board.audit(&id).await;
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for wanted in [
        "handoff_requested",
        "handoff_answered",
        "handoff_connected",
        "handoff_ended",
    ] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
    let requested = audit
        .iter()
        .find(|a| a.action == "handoff_requested")
        .unwrap();
    assert!(
        requested.detail.contains("reason=distress"),
        "{}",
        requested.detail
    );

    // Frontdoor's recording of the caller's leg: channel 1 (what the caller
    // was sent) holds the agent's speech; the agent leg's recording
    // channel 1 holds the caller's speech.
    let caller_leg = board.recording(&format!("{id}.wav"));
    let (rate, sent_to_caller) = read_wav_channel(&caller_leg, 1);
    let (agent_heard_corr, _) = envelope_match(&agent_speech, 8000, &sent_to_caller, rate);
    assert!(
        agent_heard_corr > 0.7,
        "caller was sent the agent's speech: {agent_heard_corr}"
    );
    let agent_leg = board.recording(&format!("{id}-agent-agent1.wav"));
    let (rate, sent_to_agent) = read_wav_channel(&agent_leg, 1);
    let (caller_heard_corr, _) = envelope_match(&caller_speech, 8000, &sent_to_agent, rate);
    assert!(
        caller_heard_corr > 0.7,
        "agent was sent the caller's speech: {caller_heard_corr}"
    );
}

/// Stops baresip before reading its dumps (sndfile finalises on exit).
fn agent_handle_stop(mut agent: Baresip) -> Baresip {
    agent.stop();
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agents_queue_the_caller_with_hold_audio_until_one_frees() {
    if !require_binaries("handoff queue", &["baresip", "sox"]) {
        return;
    }
    let mut board = Switchboard::start(
        SECTION,
        Plan::Bridged(request(TransferReason::HumanRequest, Priority::Normal)),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let agent_wav = work.path().join("agent.wav");
    write_wav(&agent_wav, 2000, &greeting_fixture_8k(), 1000);
    let caller_wav = work.path().join("caller.wav");
    write_wav(&caller_wav, 60_000, &[], 0);
    let agent = Baresip::agent("agent1", "correct-horse-9", board.port, &agent_wav);
    assert!(
        wait_state(
            &board,
            "agent1",
            AgentState::Available,
            Duration::from_secs(10)
        )
        .await
    );
    // The only agent is busy on another call.
    board
        .handoff
        .directory()
        .set_state("agent1", AgentState::OnCall)
        .await;
    let caller = Baresip::caller(&caller_wav);
    caller.command("dial", &format!("sip:1000@127.0.0.1:{}", board.port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while board.handoff.waiting("general") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "caller queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        board.handoff.waiting("general"),
        1,
        "still waiting while the agent is busy"
    );
    assert!(
        !agent.log().contains("Call established"),
        "busy agent not rung"
    );
    // The agent finishes the other call.
    board
        .handoff
        .directory()
        .set_state("agent1", AgentState::Available)
        .await;
    assert!(
        agent
            .wait_for_log("Call established", Duration::from_secs(5))
            .await,
        "freed agent is rung:\n{}",
        agent.log()
    );
    let (id, outcome) = board.next_outcome(Duration::from_secs(30)).await;
    assert!(
        matches!(outcome, TransferOutcome::Completed { .. }),
        "{outcome:?}"
    );
    drop(caller);
    drop(agent);
    // The caller heard hold audio (the queue's tone) before the agent.
    let (rate, sent_to_caller) = read_wav_channel(&board.recording(&format!("{id}.wav")), 1);
    let held = &sent_to_caller[..(rate as usize * 3).min(sent_to_caller.len())];
    assert!(
        rms(held) > 0.01,
        "hold audio while queued: rms {}",
        rms(held)
    );
    let actions: Vec<String> = board
        .audit(&id)
        .await
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(
        actions.iter().any(|a| a == "handoff_connected"),
        "{actions:?}"
    );
}
