//! SIPp as the caller against the real `frontdoor` binary: call flows,
//! audio through to the recording, load, limits, and what ends up in the
//! call records. Scenarios live in tests/sipp/.
//!
//! Needs `sipp` and `sox` (scripts/test-deps.sh). Without them these tests
//! skip loudly, except under CI=true where they fail.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn peers(test: &str) -> bool {
    require_binaries(test, &["sipp"])
}

/// The single record for the call SIPp placed in `run`.
fn the_call(engine: &Engine, run: &SippRun) -> CallRecord {
    let call_id = run
        .call_ids
        .first()
        .unwrap_or_else(|| panic!("no Call-ID in SIPp's trace\n{}", run.describe()));
    engine.wait_call_ended(call_id)
}

// ------------------------------------------------------- scenario self-check

/// Runs a stand-in SIPp callee from tests/sipp/selfcheck/.
fn spawn_stand_in_callee(scenario: &str, port: u16) -> std::process::Child {
    let dir = std::env::temp_dir();
    let (media, _) = free_range(12, false);
    Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(repo_root().join("tests/sipp/selfcheck").join(scenario))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp callee")
}

/// The caller scenarios are checked against SIPp stand-ins first, so a broken
/// scenario is told apart from a broken engine.
#[test]
fn scenarios_work_against_a_sipp_stand_in_callee() {
    if !peers("scenarios_work_against_a_sipp_stand_in_callee") {
        return;
    }
    let pairs: &[(&str, &str, &[&str])] = &[
        ("uac_basic.xml", "uas_answer.xml", &["-d", "600"]),
        ("uac_hold.xml", "uas_hold.xml", &["-d", "300"]),
        ("uac_remote_bye.xml", "uas_remote_bye.xml", &[]),
        ("uac_cancel.xml", "uas_cancel.xml", &[]),
        ("uac_no_codec.xml", "uas_reject_488.xml", &[]),
        ("uac_busy.xml", "uas_reject_503.xml", &[]),
        ("uac_not_found.xml", "uas_reject_404.xml", &[]),
        ("uac_options.xml", "uas_options.xml", &[]),
        ("uac_late_offer.xml", "uas_late_offer.xml", &["-d", "600"]),
        (
            "uac_late_offer_bad_answer.xml",
            "uas_late_offer_bad_answer.xml",
            &[],
        ),
        ("uac_info_dtmf.xml", "uas_info_dtmf.xml", &[]),
        (
            "uac_reinvite_offerless.xml",
            "uas_reinvite_offerless.xml",
            &[],
        ),
    ];
    for (uac, uas, args) in pairs {
        let port = free_sip_port();
        let mut callee = spawn_stand_in_callee(uas, port);
        thread::sleep(Duration::from_millis(300));
        let run = Sipp::new(uac, &format!("127.0.0.1:{port}"))
            .args(args.iter().copied())
            .args(["-m", "1"])
            .timeout(Duration::from_secs(30))
            .run();
        let callee_status = callee.wait().expect("wait callee");
        assert!(run.success(), "{uac} against {uas}:\n{}", run.describe());
        assert!(
            callee_status.success(),
            "stand-in {uas} failed for {uac}: {callee_status}"
        );
    }

    // And a scenario must fail when the callee misbehaves: a 503 without
    // Retry-After is not what uac_busy accepts, a 488 is not a 404.
    let port = free_sip_port();
    let mut callee = spawn_stand_in_callee("uas_reject_488.xml", port);
    thread::sleep(Duration::from_millis(300));
    let run = Sipp::new("uac_busy.xml", &format!("127.0.0.1:{port}"))
        .args(["-m", "1"])
        .timeout(Duration::from_secs(15))
        .run();
    let _ = callee.kill();
    let _ = callee.wait();
    assert!(
        !run.success(),
        "uac_busy accepted a 488:\n{}",
        run.describe()
    );
}

// ------------------------------------------------------------ engine tests

#[test]
fn basic_call_with_speech_is_recorded_and_caller_hangs_up() {
    if !peers("basic_call_with_speech_is_recorded_and_caller_hangs_up") {
        return;
    }
    let mut engine = Engine::start_default();
    // 9 s on the line: the 4.5 s greeting plays while the caller's looped
    // speech is recorded the whole time.
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("1000")
        .args(["-m", "1", "-d", "9000"])
        .run();
    assert_sipp_ok(&run, &engine, "basic call");
    assert!(
        run.logs.contains("RTP/AVP 0"),
        "answer m-line not logged: {}",
        run.logs
    );

    let call = the_call(&engine, &run);
    assert_eq!(call.state.as_deref(), Some("ended"), "{call:#?}");
    assert!(call.answered_at.is_some(), "answered_at missing: {call:#?}");
    assert!(call.ended_at.is_some(), "ended_at missing: {call:#?}");
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert_eq!(call.sip_status, Some(200), "{call:#?}");
    assert_eq!(call.route.as_deref(), Some("record"), "{call:#?}");
    assert!(
        call.callee.as_deref().is_some_and(|c| c.contains("1000")),
        "callee should be the dialled number: {call:#?}"
    );
    assert!(
        call.caller
            .as_deref()
            .is_some_and(|c| c.contains("07700900123")),
        "caller should be SIPp's From user: {call:#?}"
    );
    assert!(
        call.codec
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("PCMU")),
        "codec: {call:#?}"
    );
    // 9 s at 50 packets/s; allow for setup time and the stream starting after ACK.
    let rx = call.rtp_packets_rx.unwrap_or(0);
    assert!(rx > 300, "rtp_packets_rx {rx} too low: {call:#?}");
    let tx = call.rtp_packets_tx.unwrap_or(0);
    assert!(
        tx > 150,
        "rtp_packets_tx {tx}: the greeting was not sent: {call:#?}"
    );
    assert_eq!(call.rtp_lost.unwrap_or(0), 0, "loss on loopback: {call:#?}");

    let recording = resolve_recording(
        &engine,
        call.recording_path.as_deref().expect("recording_path set"),
    );
    assert!(
        recording.is_file(),
        "recording {} missing",
        recording.display()
    );
    assert_eq!(
        wav_channels(&recording),
        2,
        "recording should be stereo caller|frontdoor"
    );
    let (rate, caller) = read_wav_channel(&recording, 0);
    let (speech_rate, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    let caller_rms = rms(&caller);
    assert!(
        caller_rms > 0.01,
        "caller channel is silent (rms {caller_rms})"
    );
    let (corr, offset_ms) = envelope_match(&speech, speech_rate, &caller, rate);
    eprintln!("caller channel vs played speech: correlation {corr:.3} at {offset_ms} ms");
    assert!(
        corr > 0.7,
        "the played speech is not in the caller channel (correlation {corr:.3})"
    );
    // The frontdoor channel carries the greeting.
    let (_, ours) = read_wav_channel(&recording, 1);
    let (greeting_rate, greeting) = read_wav_channel(&fixture("greeting_16k.wav"), 0);
    let (corr, _) = envelope_match(&greeting, greeting_rate, &ours, rate);
    assert!(
        corr > 0.7,
        "greeting not in frontdoor channel (correlation {corr:.3})"
    );

    engine.stop();
}

#[test]
fn basic_call_over_tcp() {
    if !peers("basic_call_over_tcp") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .tcp()
        .service("3000")
        .args(["-m", "1", "-d", "1500"])
        .run();
    assert_sipp_ok(&run, &engine, "basic call over TCP");
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert!(call.rtp_packets_rx.unwrap_or(0) > 0, "{call:#?}");
    engine.stop();
}

#[test]
fn hundred_calls_at_twenty_per_second_all_complete() {
    if !peers("hundred_calls_at_twenty_per_second_all_complete") {
        return;
    }
    let mut engine = Engine::start_default();
    let started = Instant::now();
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-r", "20", "-m", "100", "-l", "100", "-d", "1000"])
        .timeout(Duration::from_secs(60))
        .run();
    assert_sipp_ok(&run, &engine, "100 calls at 20 cps");
    eprintln!("100 calls at 20 cps took {:?}", started.elapsed());
    assert_eq!(
        run.call_ids.len(),
        100,
        "SIPp should have placed 100 distinct calls"
    );
    let calls = engine.wait_for_calls("100 ended calls", Duration::from_secs(30), |calls| {
        calls.iter().filter(|c| c.is_ended()).count() >= 100
    });
    assert_eq!(calls.len(), 100, "exactly one record per call");
    for call in &calls {
        assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
        assert_eq!(call.sip_status, Some(200), "{call:#?}");
        assert!(call.answered_at.is_some(), "{call:#?}");
        assert!(call.rtp_packets_rx.unwrap_or(0) > 0, "{call:#?}");
        assert!(
            run.call_ids
                .iter()
                .any(|id| call.sip_call_id.as_deref() == Some(id)),
            "record for a call SIPp did not make: {call:#?}"
        );
    }
    engine.assert_alive("after 100 calls");
    engine.stop();
}

const RINGING_DIALPLAN: &str = r#"
[[route]]
name = "slow-answer"
match.number = "*"
ring_secs = 5.0
actions = [ { play = "prompts/greeting_16k.wav" }, { hangup = {} } ]
"#;

#[test]
fn cancel_before_answer_gets_487_and_is_recorded() {
    if !peers("cancel_before_answer_gets_487_and_is_recorded") {
        return;
    }
    let mut engine = Engine::builder()
        .dialplans(&[("main.toml", RINGING_DIALPLAN)])
        .start();
    let run = Sipp::new("uac_cancel.xml", &engine.sip_target())
        .args(["-m", "1"])
        .timeout(Duration::from_secs(20))
        .run();
    assert_sipp_ok(&run, &engine, "CANCEL");
    assert!(run.logs.contains("CANCEL answered"), "{}", run.logs);
    let call = the_call(&engine, &run);
    assert_eq!(call.sip_status, Some(487), "{call:#?}");
    assert!(
        call.answered_at.is_none(),
        "a cancelled call was never answered: {call:#?}"
    );
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert!(call.ended_at.is_some(), "{call:#?}");
    engine.stop();
}

#[test]
fn hold_and_resume_by_reinvite() {
    if !peers("hold_and_resume_by_reinvite") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_hold.xml", &engine.sip_target())
        .service("1000")
        .args(["-m", "1", "-d", "1500"])
        .run();
    assert_sipp_ok(&run, &engine, "hold/resume");
    assert!(run.logs.contains("hold answer direction"), "{}", run.logs);
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert_eq!(call.sip_status, Some(200), "{call:#?}");
    // Streamed 1.5 s (75 packets) before the hold and again after the resume.
    let rx = call.rtp_packets_rx.unwrap_or(0);
    assert!(
        rx > 120,
        "rtp_packets_rx {rx}: audio after resume missing: {call:#?}"
    );
    engine.assert_alive("after hold/resume");
    engine.stop();
}

#[test]
fn engine_hangs_up_first() {
    if !peers("engine_hangs_up_first") {
        return;
    }
    let mut engine = Engine::start_default();
    // Route 2000 plays the 4.5 s greeting, pauses 1 s, then hangs up.
    let run = Sipp::new("uac_remote_bye.xml", &engine.sip_target())
        .service("2000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_sipp_ok(&run, &engine, "engine BYE");
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("frontdoor"), "{call:#?}");
    assert_eq!(call.route.as_deref(), Some("greet-and-hangup"), "{call:#?}");
    assert!(call.answered_at.is_some(), "{call:#?}");
    // The whole greeting went out before the BYE: 4.5 s is about 227 packets.
    let tx = call.rtp_packets_tx.unwrap_or(0);
    assert!(
        tx > 200,
        "greeting cut short: rtp_packets_tx {tx}: {call:#?}"
    );
    engine.stop();
}

#[test]
fn dead_call_without_rtp_is_hung_up_with_the_reason_recorded() {
    if !peers("dead_call_without_rtp_is_hung_up_with_the_reason_recorded") {
        return;
    }
    let mut engine = Engine::builder()
        .config("[media]\ninactivity_timeout_secs = 2\n")
        .start();
    // Route 3000 answers and stays quiet for 60 s; the caller sends no RTP at
    // all, so the inactivity timeout must end the call long before that.
    let started = std::time::Instant::now();
    let run = Sipp::new("uac_silent.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(40))
        .run();
    assert_sipp_ok(&run, &engine, "engine BYE on RTP inactivity");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "timeout too slow"
    );
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("system"), "{call:#?}");
    assert!(
        call.end_reason
            .as_deref()
            .is_some_and(|r| r.contains("no RTP")),
        "{call:#?}"
    );
    engine.stop();
}

#[test]
fn offer_without_common_codec_gets_488() {
    if !peers("offer_without_common_codec_gets_488") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_no_codec.xml", &engine.sip_target())
        .service("1000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(15))
        .run();
    assert_sipp_ok(&run, &engine, "G.729-only offer");
    let call = the_call(&engine, &run);
    assert_eq!(call.sip_status, Some(488), "{call:#?}");
    assert!(call.answered_at.is_none(), "{call:#?}");
    engine.stop();
}

#[test]
fn unknown_number_gets_404() {
    if !peers("unknown_number_gets_404") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_not_found.xml", &engine.sip_target())
        .service("9999")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(15))
        .run();
    assert_sipp_ok(&run, &engine, "unrouted number");
    let call = the_call(&engine, &run);
    assert_eq!(call.sip_status, Some(404), "{call:#?}");
    engine.stop();
}

#[test]
fn over_the_call_limit_gets_503_with_retry_after() {
    if !peers("over_the_call_limit_gets_503_with_retry_after") {
        return;
    }
    let mut engine = Engine::builder()
        .config("[limits]\nmax_calls = 1\n")
        .start();
    // One call holds the only slot for 8 s.
    let first = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1", "-d", "8000"])
        .spawn();
    engine.wait_for_calls(
        "the first call answered",
        Duration::from_secs(10),
        |calls| calls.iter().any(|c| c.answered_at.is_some()),
    );
    let busy = Sipp::new("uac_busy.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(10))
        .run();
    assert_sipp_ok(&busy, &engine, "second call over the limit");
    assert!(busy.logs.contains("Retry-After"), "{}", busy.logs);
    let first = first.wait();
    assert_sipp_ok(&first, &engine, "the call holding the slot");

    let rejected = the_call(&engine, &busy);
    assert_eq!(rejected.sip_status, Some(503), "{rejected:#?}");
    assert!(rejected.answered_at.is_none(), "{rejected:#?}");
    let held = the_call(&engine, &first);
    assert_eq!(held.hangup_by.as_deref(), Some("caller"), "{held:#?}");

    // The slot is free again.
    let after = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1", "-d", "500"])
        .run();
    assert_sipp_ok(&after, &engine, "call after the slot freed");
    engine.stop();
}

#[test]
fn options_keepalive_gets_200_over_udp_and_tcp() {
    if !peers("options_keepalive_gets_200_over_udp_and_tcp") {
        return;
    }
    let mut engine = Engine::start_default();
    let udp = Sipp::new("uac_options.xml", &engine.sip_target())
        .args(["-m", "1"])
        .timeout(Duration::from_secs(10))
        .run();
    assert_sipp_ok(&udp, &engine, "OPTIONS over UDP");
    let tcp = Sipp::new("uac_options.xml", &engine.sip_target())
        .tcp()
        .args(["-m", "1"])
        .timeout(Duration::from_secs(10))
        .run();
    assert_sipp_ok(&tcp, &engine, "OPTIONS over TCP");
    // A keep-alive is not a call.
    thread::sleep(Duration::from_millis(300));
    assert!(
        engine.calls().is_empty(),
        "OPTIONS created call records: {:#?}",
        engine.calls()
    );
    engine.stop();
}

#[test]
fn sigterm_during_a_call_hangs_it_up_and_exits_zero() {
    if !peers("sigterm_during_a_call_hangs_it_up_and_exits_zero") {
        return;
    }
    let mut engine = Engine::builder()
        .config("[shutdown]\ngrace_secs = 1\n")
        .start();
    // Route 3000 would stay quiet for 60 s; shutdown must end it with a BYE.
    let call = Sipp::new("uac_remote_bye.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(30))
        .spawn();
    engine.wait_for_calls("the call answered", Duration::from_secs(10), |calls| {
        calls.iter().any(|c| c.answered_at.is_some())
    });
    let started = Instant::now();
    engine.stop();
    let stop_took = started.elapsed();
    let run = call.wait();
    assert!(
        run.success(),
        "the call was not hung up with a BYE:\n{}",
        run.describe()
    );
    assert!(
        stop_took < Duration::from_secs(10),
        "shutdown took {stop_took:?}"
    );
    let records = read_calls(&engine.db_path());
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert!(
        record.is_ended(),
        "record not closed at shutdown: {record:#?}"
    );
    assert!(
        matches!(
            record.hangup_by.as_deref(),
            Some("system") | Some("frontdoor")
        ),
        "{record:#?}"
    );
}

// ---------------------------------------------------- the audio yardstick

/// The speech detector the audio assertions rely on must tell the played
/// speech apart from other audio, or those assertions prove nothing.
#[test]
fn envelope_match_tells_speech_from_other_audio() {
    let (rate, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    // Through G.711 and delayed inside a longer recording, it is found.
    let ulaw: Vec<f32> = speech.iter().map(|s| (s * 127.0).round() / 127.0).collect();
    let mut recording = vec![0.0f32; 8000];
    recording.extend_from_slice(&ulaw);
    recording.extend(std::iter::repeat_n(0.0, 4000));
    let (corr, offset) = envelope_match(&speech, rate, &recording, rate);
    assert!(corr > 0.95, "speech not found in itself: {corr}");
    assert!(
        (980..=1020).contains(&offset),
        "offset {offset} ms, expected 1000"
    );

    // Other speech (the greeting) and silence do not pass for it.
    let (g_rate, greeting) = read_wav_channel(&fixture("greeting_16k.wav"), 0);
    let (corr, _) = envelope_match(&speech, rate, &greeting, g_rate);
    eprintln!("speech vs greeting: {corr:.3}");
    assert!(
        corr < 0.6,
        "greeting mistaken for the caller's speech: {corr}"
    );
    let silence = vec![0.0f32; 40_000];
    let (corr, _) = envelope_match(&speech, rate, &silence, rate);
    assert!(corr < 0.2, "silence matched speech: {corr}");
}

// ------------------------------------------------- late offer and INFO DTMF

/// `(kind, detail)` of the call's events, in order.
fn call_events(engine: &Engine, call_id: &str) -> Vec<(String, String)> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(engine.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the call database");
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let mut stmt = conn
        .prepare("SELECT kind, detail FROM call_events WHERE call_id = ?1 ORDER BY at, rowid")
        .expect("query call_events");
    stmt.query_map([call_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("read call_events")
        .filter_map(Result::ok)
        .collect()
}

#[test]
fn late_offer_call_negotiates_from_the_ack_and_records_speech() {
    if !peers("late_offer_call_negotiates_from_the_ack_and_records_speech") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_late_offer.xml", &engine.sip_target())
        .service("1000")
        .args(["-m", "1", "-d", "6000"])
        .run();
    assert_sipp_ok(&run, &engine, "late-offer call");
    assert!(
        run.logs.contains("RTP/AVP 0 8 101"),
        "offer m-line not logged: {}",
        run.logs
    );
    let call = the_call(&engine, &run);
    assert_eq!(call.sip_status, Some(200), "{call:#?}");
    assert!(call.answered_at.is_some(), "answered_at missing: {call:#?}");
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert!(
        call.codec
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("PCMU")),
        "codec from the ACK's answer: {call:#?}"
    );
    let rx = call.rtp_packets_rx.unwrap_or(0);
    assert!(rx > 200, "rtp_packets_rx {rx} too low: {call:#?}");
    assert!(
        call.rtp_packets_tx.unwrap_or(0) > 100,
        "the greeting was not sent to the address in the ACK: {call:#?}"
    );
    let recording = resolve_recording(
        &engine,
        call.recording_path.as_deref().expect("recording_path set"),
    );
    let (rate, caller) = read_wav_channel(&recording, 0);
    let (speech_rate, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    let (corr, offset_ms) = envelope_match(&speech, speech_rate, &caller, rate);
    eprintln!(
        "late offer: caller channel vs played speech: correlation {corr:.3} at {offset_ms} ms"
    );
    assert!(
        corr > 0.7,
        "the played speech is not in the caller channel (correlation {corr:.3})"
    );
    engine.stop();
}

#[test]
fn late_offer_with_an_unusable_answer_in_the_ack_is_hung_up_with_a_reason() {
    if !peers("late_offer_with_an_unusable_answer_in_the_ack_is_hung_up_with_a_reason") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_late_offer_bad_answer.xml", &engine.sip_target())
        .args(["-m", "1"])
        .timeout(Duration::from_secs(20))
        .run();
    assert_sipp_ok(&run, &engine, "late offer, bad answer");
    assert!(
        run.logs
            .contains("BYE Reason: SIP;cause=488;text=\"unusable SDP answer in ACK"),
        "BYE without the expected Reason: {}",
        run.logs
    );
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("system"), "{call:#?}");
    assert!(
        call.end_reason
            .as_deref()
            .is_some_and(|r| r.contains("unusable SDP answer in ACK")),
        "{call:#?}"
    );
    assert!(
        call.answered_at.is_none(),
        "no media was agreed, so the call never counts as answered: {call:#?}"
    );
    let events = call_events(&engine, call.id.as_deref().expect("call id"));
    assert!(
        events.iter().any(|(kind, _)| kind == "late_offer_failed"),
        "{events:?}"
    );
    engine.assert_alive("after a bad late-offer answer");
    engine.stop();
}

const RECORD_UNTIL_HASH_DIALPLAN: &str = r#"
[[route]]
name = "voicemail"
match.number = "*"
actions = [ { record = { max_secs = 30 } }, { hangup = {} } ]
"#;

#[test]
fn info_dtmf_reaches_the_dialplan_and_hash_ends_the_recording() {
    if !peers("info_dtmf_reaches_the_dialplan_and_hash_ends_the_recording") {
        return;
    }
    let mut engine = Engine::builder()
        .dialplans(&[("main.toml", RECORD_UNTIL_HASH_DIALPLAN)])
        .start();
    let started = Instant::now();
    let run = Sipp::new("uac_info_dtmf.xml", &engine.sip_target())
        .args(["-m", "1"])
        .timeout(Duration::from_secs(30))
        .run();
    // The scenario itself checks 200 for both digits, 469 for an Info
    // Package, 415 for an unknown body and the engine's BYE after `#`.
    assert_sipp_ok(&run, &engine, "INFO DTMF");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "`#` did not end the 30 s recording"
    );
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("frontdoor"), "{call:#?}");
    assert_eq!(
        call.end_reason.as_deref(),
        Some("dialplan finished"),
        "{call:#?}"
    );
    let events = call_events(&engine, call.id.as_deref().expect("call id"));
    assert!(
        events
            .iter()
            .any(|(kind, detail)| kind == "dtmf" && detail == "5#"),
        "both INFO digits, and only those, in the call's events: {events:?}"
    );
    assert!(
        engine.log().contains("DTMF by SIP INFO"),
        "digits not logged: {}",
        engine.log()
    );
    engine.stop();
}

#[test]
fn offerless_reinvite_gets_an_offer_and_the_ack_answer_is_applied() {
    if !peers("offerless_reinvite_gets_an_offer_and_the_ack_answer_is_applied") {
        return;
    }
    let mut engine = Engine::start_default();
    let run = Sipp::new("uac_reinvite_offerless.xml", &engine.sip_target())
        .args(["-m", "1"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_sipp_ok(&run, &engine, "offerless re-INVITE");
    let call = the_call(&engine, &run);
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    let events = call_events(&engine, call.id.as_deref().expect("call id"));
    let answered: Vec<&str> = events
        .iter()
        .filter(|(kind, _)| kind == "reoffer_answered")
        .map(|(_, detail)| detail.as_str())
        .collect();
    // The caller's a=sendonly answer puts our side on receive-only, its
    // a=sendrecv answer resumes: both came only in ACKs.
    assert_eq!(
        answered,
        vec!["RecvOnly PCMU", "SendRecv PCMU"],
        "{events:?}"
    );
    engine.stop();
}
