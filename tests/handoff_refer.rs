//! Blind transfer by REFER (RFC 3515) to the caller's side: a SIPp caller
//! that accepts it (202, NOTIFY with the target's 200) is handed away; one
//! that refuses (603) gets the bridged transfer to a registered agent.
//!
//! Needs `sipp` and `baresip`.

mod common;
mod handoff_support;

use std::time::Duration;

use common::*;
use frontdoor::answer::{Priority, TransferReason};
use frontdoor::handoff::{AgentState, TransferOutcome};
use handoff_support::*;

const SECTION: &str = r#"
wrap_up_secs = 0
[[agent]]
id = "agent1"
password = "pw-agent1"
[[queue]]
name = "general"
members = ["agent1"]
ring_timeout_secs = 10
"#;

fn plan() -> Plan {
    Plan::Blind(
        "sip:desk@127.0.0.1:5999".into(),
        request(TransferReason::HumanRequest, Priority::Normal),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_accepted_by_the_caller_side_hands_the_call_away() {
    if !require_binaries("handoff refer accept", &["sipp"]) {
        return;
    }
    let mut board = Switchboard::start(SECTION, plan()).await;
    let target = format!("127.0.0.1:{}", board.port);
    let sipp = Sipp::new("uac_refer_accept.xml", &target)
        .timeout(Duration::from_secs(30))
        .args(["-m", "1"])
        .spawn();
    let run = tokio::task::spawn_blocking(move || sipp.wait())
        .await
        .unwrap();
    assert!(run.success(), "{}", run.describe());
    let (id, outcome) = board.next_outcome(Duration::from_secs(5)).await;
    assert_eq!(outcome, TransferOutcome::Referred);
    assert!(
        run.describe().contains("REFER to desk@127.0.0.1:5999"),
        "{}",
        run.describe()
    );
    let actions: Vec<String> = board
        .audit(&id)
        .await
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(actions.iter().any(|a| a == "refer_sent"), "{actions:?}");
    assert!(
        actions.iter().any(|a| a == "refer_completed"),
        "{actions:?}"
    );
    assert!(
        !actions.iter().any(|a| a == "handoff_connected"),
        "{actions:?}"
    );
    // While the far end took 1.5 s to complete the transfer, the caller
    // heard the queue's hold audio (channel 1: what Frontdoor sent): the
    // default hold tone's 0.4 s beep, where there used to be silence.
    let recording = board
        .data
        .path()
        .join("recordings")
        .join(format!("{id}.wav"));
    let (rate, sent) = read_wav_channel(&recording, 1);
    let loud = sent.iter().filter(|s| s.abs() > 0.05).count();
    assert!(
        loud as f64 / f64::from(rate) > 0.15,
        "hold audio during the pending REFER: {loud} loud samples of {}",
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refer_falls_back_to_a_bridged_transfer() {
    if !require_binaries("handoff refer refuse", &["sipp", "baresip"]) {
        return;
    }
    let mut board = Switchboard::start(SECTION, plan()).await;
    let work = tempfile::tempdir().unwrap();
    let agent_wav = work.path().join("agent.wav");
    // The agent talks briefly and hangs up, which ends the call.
    let (_, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    write_wav(&agent_wav, 1500, &speech, 1000);
    let agent = Baresip::agent("agent1", "pw-agent1", board.port, &agent_wav);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while board.handoff.directory().statuses(&["agent1".into()]).await[0].state
        != AgentState::Available
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = format!("127.0.0.1:{}", board.port);
    let sipp = Sipp::new("uac_refer_refuse.xml", &target)
        .timeout(Duration::from_secs(60))
        .args(["-m", "1"])
        .spawn();
    let (id, outcome) = board.next_outcome(Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, TransferOutcome::Completed { ref agent, .. } if agent == "agent1"),
        "{outcome:?}\n{}",
        agent.log()
    );
    let run = tokio::task::spawn_blocking(move || sipp.wait())
        .await
        .unwrap();
    assert!(run.success(), "{}", run.describe());
    let audit = board.audit(&id).await;
    let failed = audit
        .iter()
        .find(|a| a.action == "refer_failed")
        .expect("refer_failed audited");
    assert!(failed.detail.contains("603"), "{}", failed.detail);
    assert!(audit.iter().any(|a| a.action == "handoff_connected"));
}
