//! A supervisor hangs up a live call from the dashboard, against the real
//! engine: a SIPp caller on a quiet route, `POST /api/calls/{id}/hangup`
//! with a session and its CSRF token, and the engine's BYE reaches the
//! caller; the record says who hung up. Once the call is gone the same
//! request is answered 404.
//!
//! Needs `sipp` (scripts/test-deps.sh).

mod common;

use std::time::Duration;

use common::dashboard::{self, http};
use common::*;

const PASSWORD: &str = "sue-Correct-Horse-1";

/// Logs in as sue; returns the session cookie and the session's CSRF token.
fn login(engine: &Engine) -> (String, String) {
    dashboard::login(engine.http_port, "sue", PASSWORD)
}

#[test]
fn a_supervisor_hangs_up_a_live_call() {
    if !require_binaries("a_supervisor_hangs_up_a_live_call", &["sipp"]) {
        return;
    }
    let mut engine = Engine::builder()
        .config(
            "[dashboard]\n[[dashboard.user]]\nname = \"sue\"\nrole = \"supervisor\"\npassword_env = \"FD_TEST_SUE_PASSWORD\"\n",
        )
        .env("FD_TEST_SUE_PASSWORD", PASSWORD)
        .start();
    // Route 3000 answers and stays quiet for 60 s; the caller sends no RTP
    // and waits for Frontdoor's BYE.
    let sipp = Sipp::new("uac_silent.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(40))
        .spawn();
    let calls = engine.wait_for_calls("the call answered", Duration::from_secs(10), |calls| {
        calls
            .iter()
            .any(|c| c.answered_at.is_some() && !c.is_ended())
    });
    let call = calls
        .iter()
        .find(|c| !c.is_ended())
        .expect("found above")
        .clone();
    let id = call.id.clone().expect("call id");
    let (session, csrf) = login(&engine);
    let cookie = format!("frontdoor_session={session}");
    let path = format!("/api/calls/{id}/hangup");
    let hangup = http(
        engine.http_port,
        "POST",
        &path,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(hangup.status, 202, "{} {}", hangup.head, hangup.body);

    let run = sipp.wait();
    assert_sipp_ok(&run, &engine, "supervisor BYE");
    let record = engine.wait_call_ended(call.sip_call_id.as_deref().expect("sip call id"));
    assert_eq!(
        record.end_reason.as_deref(),
        Some("hung up by supervisor sue"),
        "{record:#?}"
    );
    assert_eq!(
        record.hangup_by.as_deref(),
        Some("frontdoor"),
        "{record:#?}"
    );

    // The call has left the live registry.
    let again = http(
        engine.http_port,
        "POST",
        &path,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(again.status, 404, "{} {}", again.head, again.body);
    engine.stop();
}
