//! The supervisor dashboard end to end, as a person uses it: headless
//! Chromium (Playwright, `tests/e2e/dashboard.mjs`) logs in to the real
//! engine, watches real SIP calls arrive on the live board, reads a
//! transcript Whisper produced, listens in, takes a call over to a baresip
//! agent that registered with digest authentication, hangs up, finds the call
//! in history and plays its recording, then sees a distress call flagged.
//!
//! The browser script decides when each call is placed: it prints
//! `@e2e place <kind>` once it is watching the board, and this test starts
//! the SIPp caller. It ends with `@e2e result {json}` naming the call ids,
//! which this test then checks in the database (the audit trail of what the
//! supervisor did).
//!
//! Needs: sipp, baresip, sox, chromium, node and `npm ci --prefix tests/e2e`
//! (all from `scripts/test-deps.sh`), and the speech models.
//! Screenshots land in `target/e2e-screenshots`.

mod common;
mod handoff_support;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::db::{open_read_only, rows_of, timestamp};
use common::speech::*;
use common::*;
use handoff_support::{Baresip, write_wav};

const TEST: &str = "dashboard_end_to_end_in_headless_chromium";

const SUPERVISOR: &str = "sue";
const SUPERVISOR_PASSWORD: &str = "e2e-supervisor-Tq7!wide-margin";
const ADMIN: &str = "ada";
const ADMIN_PASSWORD: &str = "e2e-admin-Lk3!another-margin";
const AGENT: &str = "agent1";
const AGENT_PASSWORD: &str = "correct-horse-9";

const CONFIG: &str = r#"
[dashboard]
[[dashboard.user]]
name = "sue"
role = "supervisor"
password_env = "FRONTDOOR_E2E_SUE_PASSWORD"
agent = "agent1"
[[dashboard.user]]
name = "ada"
role = "admin"
password_env = "FRONTDOOR_E2E_ADA_PASSWORD"

[handoff]
wrap_up_secs = 0
default_queue = "general"
[[handoff.agent]]
id = "agent1"
password = "correct-horse-9"
[[handoff.queue]]
name = "general"
members = ["agent1"]
ring_timeout_secs = 20
"#;

/// The longest silence before a reprompt, so the assistant stays quiet and
/// keeps the routine caller on the line while the supervisor acts.
const DIALPLAN: &str = r#"
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 120 } }]
"#;

/// What the routine caller says, and the words the browser looks for in the
/// transcript and searches history with (Whisper tiny hears these reliably).
const ROUTINE_SENTENCE: &str = "When is my bin collection day?";
const ROUTINE_WORDS: &str = "bin,collection";
const SEARCH_WORD: &str = "collection";
const ROUTINE_CALLER: &str = "07700900222";
/// The sentence handoff_assistant_call.rs uses: the assistant flags distress
/// and hands the call to agent1 by itself.
const DISTRESS_SENTENCE: &str = "I can't cope any more. I just want it all to end.";
/// How long the distress caller stays on: long enough for the flag to be seen
/// on the board while the call is live.
const DISTRESS_CALL_MS: u32 = 60_000;
/// The routine caller waits this long for the supervisor's hang-up before it
/// hangs up itself (the scenario accepts either).
const ROUTINE_MAX_MS: u32 = 300_000;
/// The whole browser run, every step's own timeout included.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// A caller that speaks, then waits for the far end to hang up (the
/// supervisor's hang-up), and hangs up itself only if that never comes.
/// uac_basic.xml would hang up at `-d` regardless, and treats a BYE from
/// Frontdoor as a failure.
const ROUTINE_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_wait_for_hangup">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Routine caller" <sip:CALLER@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:CALLER@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-Agent: SIPp frontdoor-e2e
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Routine caller" <sip:CALLER@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:CALLER@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec rtp_stream="speech_8k.ul,-1,0"/>
    </action>
  </nop>
  <recv request="BYE" timeout="MAX_MS" ontimeout="1"/>
  <nop>
    <action>
      <exec rtp_stream="pause"/>
    </action>
  </nop>
  <send next="2">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:CALLER@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <label id="1"/>
  <nop>
    <action>
      <exec rtp_stream="pause"/>
    </action>
  </nop>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Routine caller" <sip:CALLER@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:CALLER@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <label id="2"/>
  <!-- Stay a little so a retransmitted BYE (our 200 lost) is answered too. -->
  <pause milliseconds="500"/>
</scenario>
"#;

/// Raw µ-law for SIPp: silence, the sentence, then a long silence so the
/// looping stream does not repeat the sentence within the call.
fn caller_audio(dir: &Path, name: &str, sentence: &[f32], lead_ms: u32, tail_ms: u32) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, lead_ms, sentence, tail_ms);
    let ulaw = dir.join(format!("{name}.ul"));
    sox_to_ulaw(&wav, &ulaw);
    ulaw
}

fn playwright_installed() -> bool {
    let e2e = repo_root().join("tests/e2e");
    if e2e
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{TEST}: tests/e2e/node_modules missing under CI (run scripts/test-deps.sh)"
    );
    eprintln!("*** SKIPPED {TEST}: run `npm ci --prefix tests/e2e` (scripts/test-deps.sh) ***");
    false
}

/// One audit_log row: who did what to which call, when.
struct AuditRow {
    at: String,
    actor: String,
    action: String,
    call_id: Option<String>,
}

impl std::fmt::Debug for AuditRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let call = self.call_id.as_deref().unwrap_or("-");
        write!(f, "{} {} {} {call}", self.at, self.actor, self.action)
    }
}

fn audit(engine: &Engine) -> Vec<AuditRow> {
    let db = open_read_only(&engine.db_path());
    db.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    rows_of(
        &db,
        "SELECT at, actor, action, call_id FROM audit_log ORDER BY seq",
        |r| {
            Ok(AuditRow {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                call_id: r.get(3)?,
            })
        },
    )
}

/// The browser script's process, killed if the test panics first so no
/// headless Chromium outlives the test.
struct ScriptProcess(std::process::Child);

impl Drop for ScriptProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What the browser script printed, kept for the failure message.
struct ScriptOutput {
    lines: Vec<String>,
}

impl ScriptOutput {
    fn tail(&self, n: usize) -> String {
        let from = self.lines.len().saturating_sub(n);
        self.lines[from..].join("\n")
    }
}

enum ScriptLine {
    Out(String),
    Err(String),
}

fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<ScriptLine>,
    wrap: fn(String) -> ScriptLine,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    });
}

#[test]
fn dashboard_end_to_end_in_headless_chromium() {
    if !require_binaries(TEST, &["sipp", "baresip", "sox", "chromium", "node"]) {
        return;
    }
    if !speech_models_present(TEST) || !playwright_installed() {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("dashboard-e2e-")
        .tempdir()
        .expect("tempdir");

    let routine_audio = caller_audio(
        work.path(),
        "routine",
        &spoken_8k_samples(work.path(), "routine", ROUTINE_SENTENCE),
        3000,
        ROUTINE_MAX_MS,
    );
    let distress_audio = caller_audio(
        work.path(),
        "distress",
        &spoken_8k_samples(work.path(), "distress", DISTRESS_SENTENCE),
        3000,
        DISTRESS_CALL_MS,
    );
    let routine_scenario = work.path().join("uac_wait_for_hangup.xml");
    fs::write(
        &routine_scenario,
        ROUTINE_SCENARIO
            .replace("CALLER", ROUTINE_CALLER)
            .replace("MAX_MS", &ROUTINE_MAX_MS.to_string()),
    )
    .expect("write routine scenario");

    let mut engine = Engine::builder()
        .config(CONFIG)
        .dialplans(&[("council.toml", DIALPLAN)])
        .env("FRONTDOOR_E2E_SUE_PASSWORD", SUPERVISOR_PASSWORD)
        .env("FRONTDOOR_E2E_ADA_PASSWORD", ADMIN_PASSWORD)
        .start();

    // The agent answers every call and stays on the line: baresip closes a
    // call when its source file ends, so the file is minutes long.
    let agent_voice = greeting_fixture_8k();
    let agent_wav = work.path().join("agent.wav");
    write_wav(&agent_wav, 2000, &agent_voice, 400_000);
    let mut agent = Baresip::agent(AGENT, AGENT_PASSWORD, engine.sip_port, &agent_wav);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.log().contains("200 OK") {
        assert!(
            Instant::now() < deadline,
            "agent never registered:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(100));
    }

    let screenshots = repo_root().join("target/e2e-screenshots");
    // Stale pictures from an earlier run would pass for this run's.
    let _ = fs::remove_dir_all(&screenshots);
    fs::create_dir_all(&screenshots).expect("screenshot dir");

    let mut script = ScriptProcess(
        Command::new("node")
            .arg(repo_root().join("tests/e2e/dashboard.mjs"))
            .current_dir(repo_root())
            .env("BASE_URL", format!("http://127.0.0.1:{}", engine.http_port))
            .env("E2E_USER", SUPERVISOR)
            .env("E2E_PASSWORD", SUPERVISOR_PASSWORD)
            .env("E2E_ADMIN_USER", ADMIN)
            .env("E2E_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SCREENSHOT_DIR", &screenshots)
            .env("ROUTINE_WORDS", ROUTINE_WORDS)
            .env("SEARCH_WORD", SEARCH_WORD)
            .env("TAKEOVER_TARGET", "me")
            .env("AGENT_ID", AGENT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node tests/e2e/dashboard.mjs"),
    );
    let (tx, rx) = mpsc::channel();
    forward_lines(
        script.0.stdout.take().expect("stdout"),
        tx.clone(),
        ScriptLine::Out,
    );
    forward_lines(script.0.stderr.take().expect("stderr"), tx, ScriptLine::Err);

    let mut output = ScriptOutput { lines: Vec::new() };
    let mut calls: HashMap<String, SippHandle> = HashMap::new();
    let mut result: Option<serde_json::Value> = None;
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ScriptLine::Out(line)) => {
                eprintln!("{line}");
                if let Some(command) = line.strip_prefix("@e2e ") {
                    match command.split_once(' ') {
                        Some(("place", "routine")) => {
                            let sipp = Sipp::new(
                                routine_scenario.to_str().expect("utf-8 temp path"),
                                &engine.sip_target(),
                            )
                            .audio(&routine_audio)
                            .args(["-m", "1"])
                            .timeout(Duration::from_millis(u64::from(ROUTINE_MAX_MS) + 60_000));
                            calls.insert("routine".into(), sipp.spawn());
                        }
                        Some(("place", "distress")) => {
                            let sipp = Sipp::new("uac_basic.xml", &engine.sip_target())
                                .audio(&distress_audio)
                                .args(["-m", "1", "-d", &DISTRESS_CALL_MS.to_string()])
                                .timeout(Duration::from_secs(180));
                            calls.insert("distress".into(), sipp.spawn());
                        }
                        Some(("result", json)) => {
                            result = Some(serde_json::from_str(json).unwrap_or_else(|e| {
                                panic!("@e2e result is not JSON ({e}): {json}")
                            }));
                        }
                        _ => panic!("unknown control line from the script: {line}"),
                    }
                }
                output.lines.push(line);
            }
            Ok(ScriptLine::Err(line)) => {
                eprintln!("{line}");
                output.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break script.0.wait().expect("wait for node");
            }
        }
        if Instant::now() > deadline {
            drop(script);
            panic!(
                "the browser script ran past {SCRIPT_DEADLINE:?}; its output:\n{}",
                output.tail(200)
            );
        }
    };
    engine.assert_alive("after the browser script");
    assert!(
        status.success(),
        "the browser script failed ({status}); screenshots in {}\n--- script output (tail) ---\n{}",
        screenshots.display(),
        output.tail(120)
    );
    let result = result.expect("the script passed but printed no `@e2e result`");
    let routine_id = result["routine_call"]
        .as_str()
        .expect("result.routine_call")
        .to_owned();
    let distress_id = result["distress_call"]
        .as_str()
        .expect("result.distress_call")
        .to_owned();

    // Both callers' calls ended the way they should: the routine one by the
    // supervisor's hang-up, the distress one by the caller.
    for (kind, handle) in calls {
        let run = handle.wait();
        assert_sipp_ok(&run, &engine, &format!("{kind} caller"));
    }
    let records = engine.wait_for_calls("both calls ended", Duration::from_secs(30), |calls| {
        [&routine_id, &distress_id].iter().all(|id| {
            calls
                .iter()
                .any(|c| c.id.as_deref() == Some(id.as_str()) && c.is_ended())
        })
    });
    let routine = records
        .iter()
        .find(|c| c.id.as_deref() == Some(routine_id.as_str()))
        .expect("routine call record");
    assert_eq!(routine.caller.as_deref(), Some(ROUTINE_CALLER));
    let recording = resolve_recording(
        &engine,
        routine
            .recording_path
            .as_deref()
            .expect("routine call recorded"),
    );
    assert_eq!(wav_channels(&recording), 2, "recordings are stereo");
    agent.stop();

    // The audit trail says what the supervisor did to the routine call.
    let entries = audit(&engine);
    let on_routine_by_sue: Vec<&AuditRow> = entries
        .iter()
        .filter(|e| e.actor == SUPERVISOR && e.call_id.as_deref() == Some(routine_id.as_str()))
        .collect();
    // Underscores dropped: "take_over" and "takeover" name the same action.
    let did = |wanted: &str| {
        on_routine_by_sue
            .iter()
            .any(|e| e.action.replace('_', "").starts_with(wanted))
    };
    for wanted in [
        "viewtranscript",
        "listenin",
        "takeover",
        "hangup",
        "playrecording",
    ] {
        assert!(
            did(wanted),
            "no audit entry {wanted} by {SUPERVISOR} on {routine_id}; \
             audit: {entries:#?}"
        );
    }
    // The live call view may fetch the recording too; history's playback
    // comes after the call ended and must be audited on its own.
    let ended = timestamp(routine.ended_at.as_deref().expect("routine call ended_at"));
    assert!(
        on_routine_by_sue
            .iter()
            .any(|e| e.action == "play_recording" && timestamp(&e.at) >= ended),
        "playing the recording from history (after {ended}) was not audited: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e.actor == SUPERVISOR && e.action == "login"),
        "no login audited for {SUPERVISOR}: {entries:#?}"
    );
    assert!(
        entries.iter().any(|e| e.action == "login_failed"),
        "the wrong password was not audited: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e.action == "escalate" && e.call_id.as_deref() == Some(distress_id.as_str())),
        "the distress call has no escalation in the audit log: {entries:#?}"
    );

    for shot in [
        "board-live-call.png",
        "call-view.png",
        "history.png",
        "board-distress.png",
    ] {
        let path = screenshots.join(shot);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "screenshot {} missing or empty",
            path.display()
        );
    }
    engine.stop();
}
