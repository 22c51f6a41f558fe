//! Redaction end to end, with real peers and real models: a caller reads out
//! a payment card number (Piper's voice, sent by SIPp), Whisper hears it, and
//! the number must appear nowhere Frontdoor writes text: not in the
//! transcript (turns), not in the call events or the audit log, not in the
//! engine's log. The recording keeps the audio; that is by design.

mod common;

use std::path::Path;
use std::time::Duration;

use common::db::{open_read_only, rows_of};
use common::speech::*;
use common::*;

/// Luhn-valid (checked by `the_test_card_number_is_luhn_valid`).
const CARD: &str = "4929123456789015";
/// How the caller says it: digit by digit, in groups, as people read a card.
const CALLER_SAYS: &str = "My card number is four nine two nine, one two three four, five six seven eight, nine zero one five.";

/// When the caller starts speaking: the short greeting is over by then.
const SPEAKS_AT_MS: u32 = 4_500;

fn peers_and_models(test: &str) -> bool {
    require_binaries(test, &["sipp", "sox"]) && speech_models_present(test)
}

/// A copy of the knowledge base with a short greeting (the call takes
/// seconds instead of the full greeting's 12), and the config that uses it,
/// with every kind of redaction on.
fn config(dir: &Path) -> String {
    format!(
        "{}\n\
         [governance]\nredact = [\"card\", \"sort_code\", \"account_number\", \"ni_number\", \"phone\", \"email\"]\n",
        assistant_config_with_greeting(dir, SHORT_GREETING)
    )
}

/// Length of a raw 8 kHz µ-law file in milliseconds.
fn ulaw_ms(path: &Path) -> u32 {
    let bytes = std::fs::metadata(path).expect("caller audio").len();
    u32::try_from(bytes / 8).expect("short audio")
}

/// Every text column Frontdoor writes, as (where, text).
fn stored_texts(db: &Path) -> Vec<(String, String)> {
    let db = open_read_only(db);
    let mut texts = Vec::new();
    for (table, sql) in [
        (
            "turns",
            "SELECT speaker || ': ' || text || ' | ' || coalesce(reason, '') FROM turns",
        ),
        (
            "call_events",
            "SELECT kind || ': ' || detail FROM call_events",
        ),
        (
            "audit_log",
            "SELECT actor || ' ' || action || ': ' || detail FROM audit_log",
        ),
        (
            "requests",
            "SELECT kind || ': ' || details_json FROM requests",
        ),
    ] {
        let rows: Vec<String> = rows_of(&db, sql, |r| r.get(0));
        texts.extend(rows.into_iter().map(|t| (table.to_string(), t)));
    }
    texts
}

/// Runs of digits in `text` joined across the separators a transcript
/// uses between groups (space, dash, comma, full stop), but not `:` or
/// `/`, so timestamps and dates stay apart.
fn digit_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run = String::new();
    let mut pending_separator = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
            pending_separator = false;
        } else if matches!(c, ' ' | '-' | ',' | '.') && !run.is_empty() && !pending_separator {
            pending_separator = true;
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
            pending_separator = false;
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Whether `text` still carries (part of) the card number, as digits or as
/// the words the caller said.
fn leaks_card(text: &str) -> bool {
    let (first_half, second_half) = CARD.split_at(8);
    let digits_leak = digit_runs(text)
        .iter()
        .any(|run| run.contains(first_half) || run.contains(second_half));
    let lower = text.to_lowercase();
    let words_leak = [
        "four nine two nine",
        "five six seven eight",
        "nine zero one five",
        "nine oh one five",
    ]
    .iter()
    .any(|words| lower.contains(words));
    digits_leak || words_leak
}

/// A plain HTTP/1.1 GET on the engine's HTTP port; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of the sample `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[test]
fn the_test_card_number_is_luhn_valid() {
    let sum: u32 = CARD
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    assert_eq!(sum % 10, 0);
    assert!(leaks_card("card 4929 1234 5678 9015"));
    assert!(leaks_card("card 4929-1234-5678-9015."));
    assert!(leaks_card("Four nine two nine, one two"));
    assert!(!leaks_card("card [card] at 05:49:29.1234Z on 2026/11/23"));
}

#[test]
fn a_card_number_read_out_is_redacted_in_transcript_database_and_logs() {
    let test = "a_card_number_read_out_is_redacted_in_transcript_database_and_logs";
    if !peers_and_models(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let voice = caller_voice_ulaw(dir.path(), "caller", CALLER_SAYS, SPEAKS_AT_MS, 12_000);
    let mut engine = Engine::builder()
        .config(&config)
        .dialplans(&[("council.toml", ASSISTANT_DIALPLAN)])
        .start();
    let run = Sipp::new("uac_basic.xml", &engine.sip_target())
        .audio(&voice)
        .args(["-m", "1", "-d", &ulaw_ms(&voice).to_string()])
        .timeout(Duration::from_secs(120))
        .run();
    assert_sipp_ok(&run, &engine, "card number call");
    engine.wait_call_ended(run.call_ids.first().expect("call id"));
    // Records are written in order by the store's writer; the call's end is
    // the last of them, but give a queued audit a moment all the same.
    std::thread::sleep(Duration::from_millis(300));

    let texts = stored_texts(&engine.db_path());
    let caller_turns: Vec<&String> = texts
        .iter()
        .filter(|(table, text)| table == "turns" && text.starts_with("caller: "))
        .map(|(_, text)| text)
        .collect();
    eprintln!("caller turns: {caller_turns:#?}");
    // Proof that Whisper heard the number (so the test would fail without
    // redaction): the caller's turn carries the redaction token.
    assert!(
        caller_turns.iter().any(|t| t.contains("[card]")),
        "no caller turn with [card]: Whisper did not hear a Luhn-valid card number.\n\
         stored: {texts:#?}\nlog:\n{}",
        engine.log()
    );
    for (table, text) in &texts {
        assert!(
            !leaks_card(text),
            "the card number is stored in {table}: {text:?}"
        );
    }
    let log = engine.log();
    assert!(
        log.contains("[card]"),
        "the transcript line in the log is not the redacted one:\n{log}"
    );
    for line in log.lines() {
        assert!(!leaks_card(line), "the card number is in the log: {line}");
    }

    // The speech pipeline's metrics saw this call.
    let metrics = http_get(engine.http_port, "/metrics");
    assert!(
        sample(&metrics, "frontdoor_asr_latency_seconds_count") >= 1.0,
        "{metrics}"
    );
    assert!(sample(&metrics, r#"frontdoor_workers{pool="asr"}"#) >= 1.0);
    assert!(sample(&metrics, r#"frontdoor_workers{pool="tts"}"#) >= 1.0);
    assert_eq!(
        sample(&metrics, r#"frontdoor_worker_busy{pool="asr"}"#),
        0.0
    );
    assert_eq!(
        sample(&metrics, r#"frontdoor_worker_queue_depth{pool="asr"}"#),
        0.0
    );
    engine.stop();
}
