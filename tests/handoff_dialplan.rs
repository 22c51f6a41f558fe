//! Dialplan-level hand-off and agent state, against the real engine with
//! real phones: a route's `transfer = { queue = ... }` rings a baresip
//! agent registered with digest authentication and bridges the call (audio
//! both ways); the agent puts the caller on hold and resumes from the phone
//! (re-INVITEs answered mid-bridge); a supervisor sets the agent's state
//! from the dashboard API (audited) and a caller then finds nobody, hears
//! the unavailable tone and the route's next action runs; the agent dials
//! the `*1` feature code and is available again. Dialplans naming queues
//! the configuration lacks are refused with file and line.
//!
//! Needs `baresip`, `sox` and `sipp` (scripts/test-deps.sh).

mod common;
mod handoff_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::dashboard::{self, http};
use common::speech::{greeting_fixture_8k, speech_fixture_8k};
use common::*;
use handoff_support::*;

const SUE_PASSWORD: &str = "sue-Correct-Horse-1";
const AGENT_PASSWORD: &str = "agent1-Battery-Staple-7";

const CONFIG: &str = r#"
[handoff]
wrap_up_secs = 0
default_queue = "general"
[[handoff.agent]]
id = "agent1"
password_env = "FD_TEST_AGENT1_PASSWORD"
[[handoff.queue]]
name = "general"
members = ["agent1"]
ring_timeout_secs = 10
max_wait_secs = 2
announce_every_secs = 60

[dashboard]
[[dashboard.user]]
name = "sue"
role = "supervisor"
password_env = "FD_TEST_SUE_PASSWORD"
"#;

const DIALPLAN: &str = r#"
[[route]]
name = "people"
match.number = "0"
actions = [
  { transfer = { queue = "general" } },
  { pause = { secs = 1 } },
  { hangup = {} },
]
"#;

/// Logs in as sue: the session cookie header and the CSRF token.
fn login(port: u16) -> (String, String) {
    let (session, csrf) = dashboard::login(port, "sue", SUE_PASSWORD);
    (format!("frontdoor_session={session}"), csrf)
}

/// agent1's state as `/api/live` shows it.
fn live_state(port: u16, session: &str) -> String {
    let live = http(port, "GET", "/api/live", &[("Cookie", session)], "");
    assert_eq!(live.status, 200, "{}", live.head);
    let live: serde_json::Value = serde_json::from_str(&live.body).expect("json");
    live["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["id"] == "agent1"))
        .and_then(|a| a["state"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

async fn wait_live_state(port: u16, session: &str, wanted: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let state = live_state(port, session);
        if state == wanted || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_log(engine: &Engine, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if engine.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Rows of a query on the engine's database, each column as text.
fn rows(engine: &Engine, sql: &str) -> Vec<Vec<String>> {
    let db = rusqlite::Connection::open(engine.db_path()).expect("open db");
    let mut statement = db.prepare(sql).expect("prepare");
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .map(|v| v.unwrap_or_default())
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

async fn wait_rows(engine: &Engine, sql: &str, within: Duration) -> Vec<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let found = rows(engine, sql);
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialplan_transfer_bridges_to_a_registered_agent_whose_state_people_set() {
    if !require_binaries("handoff dialplan", &["baresip", "sox", "sipp"]) {
        return;
    }
    let mut engine = Engine::builder()
        .config(CONFIG)
        .dialplans(&[("main.toml", DIALPLAN)])
        .env("FD_TEST_SUE_PASSWORD", SUE_PASSWORD)
        .env("FD_TEST_AGENT1_PASSWORD", AGENT_PASSWORD)
        .start();
    let port = engine.http_port;
    let sip_port = engine.sip_addr().port();
    let (session, csrf) = login(port);

    let work = tempfile::tempdir().unwrap();
    let (caller_speech, agent_speech) = (speech_fixture_8k(), greeting_fixture_8k());
    let speech_ms = caller_speech.len() as u32 / 8;
    let agent_ms = agent_speech.len() as u32 / 8;
    // The agent greets the caller, listens, holds and resumes, and hangs
    // up when its file ends (which ends the bridge).
    let agent_wav = work.path().join("agent.wav");
    write_wav(&agent_wav, 1000, &agent_speech, speech_ms + 9000);
    let caller_wav = work.path().join("caller.wav");
    write_wav(&caller_wav, 1000 + agent_ms + 1000, &caller_speech, 40_000);

    let agent = Baresip::agent("agent1", AGENT_PASSWORD, sip_port, &agent_wav);
    let state = wait_live_state(port, &session, "available", Duration::from_secs(10)).await;
    assert_eq!(state, "available", "agent registered:\n{}", agent.log());

    // 1. The route sends the caller to the queue; the agent's phone rings.
    let mut caller = Baresip::caller(&caller_wav);
    caller.command("dial", &format!("sip:0@127.0.0.1:{sip_port}"));
    assert!(
        agent
            .wait_for_log("Call established", Duration::from_secs(10))
            .await,
        "agent's phone rang and answered:\n{}\n{}",
        agent.log(),
        engine.log()
    );
    assert_eq!(
        wait_live_state(port, &session, "on_call", Duration::from_secs(5)).await,
        "on_call"
    );
    // A person on a call keeps it: the dashboard cannot take them off.
    let busy = http(
        port,
        "POST",
        "/api/agents/agent1/state",
        &[
            ("Cookie", &session),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        r#"{"state":"break"}"#,
    );
    assert_eq!(busy.status, 409, "{}", busy.body);

    // 2. Hold and resume from the agent's phone, after the caller spoke.
    tokio::time::sleep(Duration::from_millis(u64::from(
        1000 + agent_ms + 1000 + speech_ms + 500,
    )))
    .await;
    agent.command("hold", "");
    assert!(
        wait_log(
            &engine,
            "agent put the caller on hold",
            Duration::from_secs(5)
        )
        .await,
        "hold re-INVITE answered:\n{}\n{}",
        engine.log(),
        agent.log()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    agent.command("resume", "");
    assert!(
        wait_log(&engine, "agent resumed the caller", Duration::from_secs(5)).await,
        "resume re-INVITE answered:\n{}\n{}",
        engine.log(),
        agent.log()
    );

    // 3. The agent's file ends, it hangs up; the dialplan goes on and
    // Frontdoor hangs the caller up. The record says who asked and who took it.
    let transfer = wait_rows(
        &engine,
        "SELECT requested_by, reason, queue, agent, answered_at, outcome FROM transfers WHERE ended_at IS NOT NULL",
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(transfer.len(), 1, "{transfer:?}\n{}", engine.log());
    let t = &transfer[0];
    assert_eq!(
        (t[0].as_str(), t[1].as_str(), t[2].as_str(), t[3].as_str()),
        ("dialplan", "human_request", "general", "agent1"),
        "{t:?}"
    );
    assert!(!t[4].is_empty(), "answered: {t:?}");
    assert_eq!(t[5], "completed", "{t:?}");
    caller.stop();
    let connected = rows(
        &engine,
        "SELECT detail FROM audit_log WHERE action = 'handoff_connected'",
    );
    assert_eq!(connected.len(), 1, "{connected:?}");
    // Both voices went both ways: the agent's phone heard the caller.
    let caller_leg = rows(
        &engine,
        "SELECT id FROM calls WHERE callee = '0' ORDER BY started_at",
    );
    let call_id = caller_leg[0][0].clone();
    let holds = rows(
        &engine,
        &format!(
            "SELECT kind FROM call_events WHERE call_id = '{call_id}' AND kind LIKE 'agent_%' ORDER BY at"
        ),
    );
    assert_eq!(
        holds,
        vec![
            vec!["agent_hold".to_owned()],
            vec!["agent_resume".to_owned()]
        ],
        "the record shows the agent's hold"
    );
    let agent_leg = engine
        .db_path()
        .parent()
        .expect("data dir")
        .join("recordings")
        .join(format!("{call_id}-agent-agent1.wav"));
    let (rate, sent_to_agent) = read_wav_channel(&agent_leg, 1);
    let (corr, _) = envelope_match(&caller_speech, 8000, &sent_to_agent, rate);
    assert!(corr > 0.7, "agent was sent the caller's speech: {corr}");
    let (rate, from_agent) = read_wav_channel(&agent_leg, 0);
    let (corr, _) = envelope_match(&agent_speech, 8000, &from_agent, rate);
    assert!(corr > 0.7, "agent's speech reached Frontdoor: {corr}");

    // 4. A supervisor puts the agent on a break: audited, shown live.
    assert_eq!(
        wait_live_state(port, &session, "available", Duration::from_secs(5)).await,
        "available"
    );
    let no_csrf = http(
        port,
        "POST",
        "/api/agents/agent1/state",
        &[("Cookie", &session), ("Content-Type", "application/json")],
        r#"{"state":"break"}"#,
    );
    assert_eq!(no_csrf.status, 403);
    let set = http(
        port,
        "POST",
        "/api/agents/agent1/state",
        &[
            ("Cookie", &session),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        r#"{"state":"break"}"#,
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert!(set.body.contains(r#""state":"break""#), "{}", set.body);
    assert_eq!(live_state(port, &session), "break");
    let audited = rows(
        &engine,
        "SELECT actor, detail FROM audit_log WHERE action = 'agent_state'",
    );
    assert!(
        audited
            .iter()
            .any(|r| r[0] == "sue" && r[1].contains("agent1: break")),
        "{audited:?}"
    );

    // 5. Nobody free: the caller waits the queue's maximum, hears the
    // unavailable tone and the route's next actions run (never dropped).
    let run = Sipp::new("uac_silent.xml", &engine.sip_target())
        .service("0")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_sipp_ok(&run, &engine, "no agent: the dialplan goes on and hangs up");
    let no_agent = wait_rows(
        &engine,
        "SELECT outcome FROM transfers WHERE outcome = 'no_agent'",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(no_agent.len(), 1, "{no_agent:?}");
    let ended = rows(
        &engine,
        "SELECT end_reason FROM calls WHERE callee = '0' ORDER BY started_at",
    );
    assert_eq!(
        ended.last().map(|r| r[0].as_str()),
        Some("dialplan finished"),
        "{ended:?}"
    );

    // 6. The agent dials *1 from their phone: available again, audited
    // with the agent as actor, and the phone heard the confirmation.
    agent.command("dial", &format!("sip:*1@127.0.0.1:{sip_port}"));
    assert_eq!(
        wait_live_state(port, &session, "available", Duration::from_secs(10)).await,
        "available",
        "{}\n{}",
        engine.log(),
        agent.log()
    );
    let by_phone = wait_rows(
        &engine,
        "SELECT detail FROM audit_log WHERE action = 'agent_state' AND actor = 'agent1'",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        by_phone
            .first()
            .is_some_and(|r| r[0].contains("feature code *1: available")),
        "{by_phone:?}"
    );
    // Someone else claiming to be agent1 is refused before any dialplan.
    let spoofed = Sipp::new("uac_feature_forbidden.xml", &engine.sip_target())
        .service("*2")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(15))
        .run();
    assert_sipp_ok(
        &spoofed,
        &engine,
        "a feature code from a stranger is refused",
    );
    assert_eq!(live_state(port, &session), "available");
    engine.assert_alive("after the feature codes");
}

#[test]
fn transfers_to_queues_the_configuration_lacks_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir(&plans).unwrap();
    std::fs::write(
        plans.join("main.toml"),
        "[[route]]\nname = \"main\"\nmatch.number = \"*\"\nactions = [\n  { play = \"beep.wav\" },\n  { transfer = { queue = \"billing\" } },\n]\n",
    )
    .unwrap();
    let beep: Vec<f32> = vec![0.1; 800];
    write_wav(&plans.join("beep.wav"), 0, &beep, 0);
    std::fs::write(
        dir.path().join("config.toml"),
        "[handoff]\n[[handoff.agent]]\nid = \"agent1\"\npassword = \"pw\"\n[[handoff.queue]]\nname = \"general\"\nmembers = [\"agent1\"]\n",
    )
    .unwrap();
    let frontdoor = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run frontdoor");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = frontdoor(&[
        "--config",
        "config.toml",
        "serve",
        "--dialplans",
        "plans",
        "--sip",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data",
        "data",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("main.toml:6"), "{out}");
    assert!(out.contains("\"billing\""), "{out}");

    // `dialplan check` sees the configuration too.
    let (ok, out) = frontdoor(&["--config", "config.toml", "dialplan", "check", "plans"]);
    assert!(!ok, "{out}");
    assert!(out.contains("main.toml:6"), "{out}");

    // With the queue configured, the same plan checks ok.
    std::fs::write(
        dir.path().join("config.toml"),
        "[handoff]\n[[handoff.agent]]\nid = \"agent1\"\npassword = \"pw\"\n[[handoff.queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\n",
    )
    .unwrap();
    let (ok, out) = frontdoor(&["--config", "config.toml", "dialplan", "check", "plans"]);
    assert!(ok, "{out}");
}

#[test]
fn queues_defined_in_dialplan_files_are_served_and_defining_one_twice_is_refused() {
    // Agents and their credentials stay in config.toml; the queue lives
    // with the routes that use it, hold music relative to the file.
    let config = "[handoff]\n[[handoff.agent]]\nid = \"agent1\"\npassword = \"pw\"\n";
    let route = "[[route]]\nname = \"main\"\nmatch.number = \"*\"\nactions = [\n  { transfer = { queue = \"billing\" } },\n]\n";
    let queue = "[[queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\nhold_music = \"prompts/greeting_16k.wav\"\n";
    let mut engine = Engine::builder()
        .config(config)
        .dialplans(&[("main.toml", route), ("queues.toml", queue)])
        .start();
    // The hand-off started with the dialplan's queue: it has a depth gauge.
    let metrics = http(engine.http_port, "GET", "/metrics", &[], "");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("queue=\"billing\""),
        "{}",
        metrics.body
    );
    engine.assert_alive("serving a dialplan-defined queue");
    engine.stop();

    let check = |config_path: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(["--config".as_ref(), config_path.as_os_str()])
            .args([
                "dialplan".as_ref(),
                "check".as_ref(),
                engine.dirs.dialplans.as_os_str(),
            ])
            .output()
            .expect("run frontdoor");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = check(&engine.dirs.config);
    assert!(ok, "{out}");

    // Defined again in a second dialplan file: refused at its line,
    // naming where it was defined first.
    let again = engine.dirs.dialplans.join("zz-again.toml");
    std::fs::write(&again, format!("# again\n{queue}")).unwrap();
    let (ok, out) = check(&engine.dirs.config);
    assert!(!ok, "{out}");
    assert!(
        out.contains("zz-again.toml:2: queue \"billing\" is already defined in"),
        "{out}"
    );
    assert!(out.contains("queues.toml:1"), "{out}");
    std::fs::remove_file(&again).unwrap();

    // Defined in config.toml as well.
    let both = engine.dirs.root.path().join("both.toml");
    std::fs::write(
        &both,
        format!("{config}[[handoff.queue]]\nname = \"billing\"\nmembers = [\"agent1\"]\n"),
    )
    .unwrap();
    let (ok, out) = check(&both);
    assert!(!ok, "{out}");
    assert!(
        out.contains("queues.toml:1: queue \"billing\" is already defined in config.toml"),
        "{out}"
    );
}

#[test]
fn refer_queues_and_uri_transfers_hand_the_call_away_by_refer() {
    if !require_binaries("handoff dialplan refer", &["sipp"]) {
        return;
    }
    // Queue "desk" hands its callers away by REFER (a council's own PBX);
    // route 2 names the address itself.
    let engine = Engine::builder()
        .config(
            r#"
[handoff]
[[handoff.agent]]
id = "pbx"
uri = "sip:2000@127.0.0.1:5998"
[[handoff.queue]]
name = "desk"
members = ["pbx"]
transfer = "refer"
refer_to = "sip:desk@127.0.0.1:5999"
"#,
        )
        .dialplans(&[(
            "main.toml",
            r#"
[[route]]
name = "blind"
match.number = "2"
actions = [{ transfer = { uri = "sip:reception@127.0.0.1:5997", mode = "blind" } }]

[[route]]
name = "desk"
match.number = "*"
actions = [{ transfer = { queue = "desk" } }]
"#,
        )])
        .start();
    for (service, target) in [
        ("1000", "desk@127.0.0.1:5999"),
        ("2", "reception@127.0.0.1:5997"),
    ] {
        let run = Sipp::new("uac_refer_accept.xml", &engine.sip_target())
            .service(service)
            .args(["-m", "1"])
            .timeout(Duration::from_secs(30))
            .run();
        assert_sipp_ok(&run, &engine, "REFER accepted");
        assert!(
            run.describe().contains(&format!("REFER to {target}")),
            "{}",
            run.describe()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut referred = Vec::new();
    while Instant::now() < deadline {
        referred = rows(
            &engine,
            "SELECT requested_by, outcome FROM transfers WHERE outcome = 'referred'",
        );
        if referred.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(referred.len(), 2, "{referred:?}\n{}", engine.log());
    assert!(referred.iter().all(|r| r[0] == "dialplan"), "{referred:?}");
    let completed = rows(
        &engine,
        "SELECT detail FROM audit_log WHERE action = 'refer_completed'",
    );
    assert_eq!(completed.len(), 2, "{completed:?}");
}
