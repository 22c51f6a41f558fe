//! A supervisor acting on a live call, engine side, in process: the call's
//! dialplan actions run as the engine's call task runs them, commands go
//! through [`LiveCalls`] as the dashboard sends them, and the hand-off uses
//! the real SIP stack. The agent is a second Frontdoor SIP stack on
//! loopback that answers and plays a tone; the caller is a bare RTP peer.
//! No speech models, no external programs.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::free_range;
use frontdoor::call::assistant::CallLog;
use frontdoor::call::{
    ActionContext, ActionLog, ActionsOutcome, CallMedia, Supervision, TakeOver, run_actions,
};
use frontdoor::control::{
    CallPhase, ControlError, LiveCall, LiveCalls, SupervisorCommand, TakeOverTarget,
};
use frontdoor::dialplan::Action;
use frontdoor::events::{CallEvent, EventBus};
use frontdoor::handoff::{Handoff, HandoffDeps, HandoffSection};
use frontdoor::media::rtp::{RtpHeader, write_packet};
use frontdoor::media::{
    self, FRAME_SAMPLES, MediaCapabilities, MediaConfig, MediaStream, PortAllocator, g711,
};
use frontdoor::sip::{self, SipEvent, SipHandle, TimerConfig};
use frontdoor::store::{AuditEntry, CallStore, NewCall, SqliteStore, StoreHandle};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

const LOCALHOST: &str = "127.0.0.1";
/// The caller's RTP level and the agent's tone level: told apart on the tap.
const CALLER_LEVEL: i16 = -6000;
const AGENT_LEVEL: i16 = 5000;

async fn sip_on_free_port() -> (SipHandle, mpsc::Receiver<SipEvent>, u16) {
    let (port, _) = free_range(1, true);
    let addr: SocketAddr = format!("{LOCALHOST}:{port}").parse().unwrap();
    let (sip, events) = sip::start(sip::SipConfig {
        udp: Some(addr),
        tcp: Some(addr),
        advertised_host: Some(LOCALHOST.into()),
        user_agent: "Frontdoor-test".into(),
        timers: TimerConfig {
            t1: Duration::from_millis(100),
            ..TimerConfig::default()
        },
    })
    .await
    .expect("SIP starts");
    (sip, events, port)
}

/// What the agent's phone saw of an incoming call.
#[derive(Debug)]
struct Rung {
    user: Option<String>,
    headers: Vec<(String, String)>,
}

/// An agent phone: answers every INVITE, plays a steady tone, reports each
/// call and hangs up when told to.
async fn start_agent_phone(
    ports: PortAllocator,
) -> (
    u16,
    mpsc::UnboundedReceiver<Rung>,
    mpsc::Sender<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let (sip, mut events, port) = sip_on_free_port().await;
    let (rung_tx, rung) = mpsc::unbounded_channel();
    let (bye_tx, byes) = mpsc::unbounded_channel();
    let (hangup_tx, mut hangup) = mpsc::channel::<()>(4);
    tokio::spawn(async move {
        let caps = MediaCapabilities::default();
        let ip: IpAddr = LOCALHOST.parse().unwrap();
        let mut calls = Vec::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(SipEvent::IncomingCall { call, invite }) => {
                        let _ = rung_tx.send(Rung { user: invite.request_uri_user.clone(), headers: invite.headers.clone() });
                        let offer = invite.sdp.unwrap_or_default();
                        let negotiated = media::sdp::negotiate(&offer, &caps).expect("usable offer");
                        let stream = MediaStream::bind(ip, ports.allocate().unwrap(), MediaConfig::default()).await.unwrap();
                        sip.answer(call, media::sdp::build_answer(&negotiated, ip, stream.local_rtp_port(), 7, 1));
                        let (handle, events) = stream.start(negotiated, None);
                        handle.play(Arc::from(vec![AGENT_LEVEL; 8000 * 30]));
                        calls.push((call, handle, events));
                    }
                    Some(SipEvent::RemoteHangup { .. }) => {
                        let _ = bye_tx.send(());
                    }
                    Some(_) => {}
                    None => return,
                },
                Some(()) = hangup.recv() => {
                    for (call, handle, _) in calls.drain(..) {
                        sip.hangup(call);
                        handle.stop().await;
                    }
                }
            }
        }
    });
    (port, rung, hangup_tx, byes)
}

/// The caller's side of the media: a socket sending RTP at a fixed level.
async fn caller_media(
    ports: &PortAllocator,
    tap: tokio::sync::broadcast::Sender<Arc<[i16]>>,
) -> (CallMedia, tokio::task::JoinHandle<()>) {
    let ip: IpAddr = LOCALHOST.parse().unwrap();
    let stream = MediaStream::bind(ip, ports.allocate().unwrap(), MediaConfig::default())
        .await
        .unwrap();
    let ours = SocketAddr::new(ip, stream.local_rtp_port());
    let peer = UdpSocket::bind((ip, 0)).await.unwrap();
    let offer = media::sdp::build_offer(
        &MediaCapabilities::default(),
        ip,
        peer.local_addr().unwrap().port(),
        1,
        1,
    );
    let negotiated = media::sdp::negotiate(&offer, &MediaCapabilities::default()).unwrap();
    let (handle, events) = stream.with_listen_tap(tap).start(negotiated, None);
    let sender = tokio::spawn(async move {
        let payload = [g711::linear_to_ulaw(CALLER_LEVEL); FRAME_SAMPLES];
        let mut buffer = [0u8; 200];
        for seq in 0..u16::MAX {
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * FRAME_SAMPLES as u32,
                ssrc: 0xCA11E4,
            };
            let length = write_packet(&header, &payload, &mut buffer).unwrap();
            let _ = peer.send_to(&buffer[..length], ours).await;
            tokio::time::sleep(media::FRAME_DURATION).await;
        }
    });
    (CallMedia { handle, events }, sender)
}

struct Rig {
    handoff: Handoff,
    store: StoreHandle,
    bus: EventBus,
    live: LiveCalls,
    ports: PortAllocator,
    data: tempfile::TempDir,
    rung: mpsc::UnboundedReceiver<Rung>,
    agent_hangup: mpsc::Sender<()>,
    /// BYEs the agent's phone received from Frontdoor.
    agent_byes: mpsc::UnboundedReceiver<()>,
}

async fn rig() -> Rig {
    let (rtp_low, rtp_high) = free_range(40, false);
    let ports = PortAllocator::new(rtp_low, rtp_high);
    let (agent_port, rung, agent_hangup, agent_byes) = start_agent_phone(ports.clone()).await;
    let (sip, _events, _) = sip_on_free_port().await;
    // Nothing listens here: a3's phone never answers.
    let (dead_port, _) = free_range(1, true);
    // a1 serves the queue; a2 and a3 are in no queue: only a directed
    // take-over reaches them. a2 is named by host, as a PBX usually is.
    let section: HandoffSection = toml::from_str(&format!(
        r#"
        wrap_up_secs = 0
        default_queue = "general"
        [[agent]]
        id = "a1"
        uri = "sip:a1@{LOCALHOST}:{agent_port}"
        [[agent]]
        id = "a2"
        uri = "sip:a2@localhost:{agent_port}"
        [[agent]]
        id = "a3"
        uri = "sip:a3@{LOCALHOST}:{dead_port}"
        [[queue]]
        name = "general"
        members = ["a1"]
        ring_timeout_secs = 5
        announce_every_secs = 60
        "#
    ))
    .expect("handoff section");
    let data = tempfile::tempdir().unwrap();
    let store = StoreHandle::spawn(SqliteStore::open(data.path()).unwrap());
    let handoff = Handoff::start(
        section,
        HandoffDeps {
            sip,
            ports: ports.clone(),
            media: MediaConfig::default(),
            caps: MediaCapabilities::default(),
            local_ip: LOCALHOST.parse().unwrap(),
            recordings_dir: None,
        },
    )
    .expect("handoff starts");
    Rig {
        handoff,
        store,
        bus: EventBus::new(),
        live: LiveCalls::new(),
        ports,
        data,
        rung,
        agent_hangup,
        agent_byes,
    }
}

/// Plays the engine call task's part for supervisor commands: take-overs
/// go to `run_actions`; hang-ups are reported (the call task ends the call).
fn forward_commands(
    mut commands: mpsc::Receiver<SupervisorCommand>,
    takeovers: mpsc::Sender<TakeOver>,
) -> oneshot::Receiver<String> {
    let (hangup_tx, hangup_rx) = oneshot::channel();
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            match command {
                SupervisorCommand::TakeOver { by, target } => {
                    let _ = takeovers.try_send(TakeOver { by, target });
                }
                SupervisorCommand::Hangup { by } => {
                    let _ = hangup_tx.send(by);
                    return;
                }
            }
        }
    });
    hangup_rx
}

async fn wait_for_state(events: &mut tokio::sync::broadcast::Receiver<Arc<CallEvent>>, want: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.expect("bus open");
            if let CallEvent::State { state, .. } = &*event
                && state == want
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("state {want} within 10 s"));
}

/// Runs `actions` on a fresh call while `drive` plays the supervisor.
async fn run_call<F, Fut>(
    rig: &Rig,
    call_id: &str,
    actions: Vec<Action>,
    drive: F,
) -> Result<ActionsOutcome, String>
where
    F: FnOnce(LiveCalls, EventBus, CallPhaseProbe) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rig.store
        .call_started(NewCall {
            id: call_id.into(),
            sip_call_id: format!("{call_id}@test"),
            caller: "07700900456".into(),
            callee: "100".into(),
            route: Some("test".into()),
            source: "127.0.0.1:5060".into(),
            node: "test".into(),
            started_at: Utc::now(),
        })
        .await;
    let LiveCall {
        commands,
        listen,
        phase,
        registration,
    } = rig.live.register(call_id);
    let (takeover_tx, takeover_rx) = mpsc::channel(1);
    let mut hangups = forward_commands(commands, takeover_tx);
    let takeovers = tokio::sync::Mutex::new(takeover_rx);
    let (mut media, rtp) = caller_media(&rig.ports, listen).await;
    let redactor = frontdoor::governance::Redactor::none();
    let ctx = ActionContext {
        assistant: None,
        handoff: Some(&rig.handoff),
        log: CallLog {
            store: &rig.store,
            events: &rig.bus,
            call_id,
            redactor: &redactor,
            recent: Default::default(),
        },
        supervisor: Some(Supervision {
            takeovers: &takeovers,
            phase: &phase,
        }),
        caller: None,
    };
    let driver = tokio::spawn(drive(
        rig.live.clone(),
        rig.bus.clone(),
        CallPhaseProbe(phase.clone()),
    ));
    let mut log = ActionLog::default();
    // As the call task: a supervisor's hang-up drops the actions (and any
    // hand-off in them) after marking the call as ending.
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        let run = run_actions(&actions, &mut media, &mut log, &ctx);
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => Ok(outcome),
            Ok(by) = &mut hangups => Err(by),
        };
        phase.set(CallPhase::Ending);
        outcome
    })
    .await
    .expect("the actions end within 30 s");
    driver.await.expect("supervisor script passed");
    media.handle.stop().await;
    rtp.abort();
    drop(registration);
    outcome
}

/// The call's phase as the supervisor script sees it.
struct CallPhaseProbe(frontdoor::control::PhaseHandle);

fn transfers(rig: &Rig, call_id: &str) -> Vec<[Option<String>; 6]> {
    let db = rusqlite::Connection::open(rig.data.path().join("frontdoor.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT requested_by, reason, queue, agent, answered_at, outcome
             FROM transfers WHERE call_id = ?1",
        )
        .unwrap();
    stmt.query_map([call_id], |row| {
        Ok([
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
        ])
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn audit(rig: &Rig, call_id: &str) -> Vec<AuditEntry> {
    rig.store.flush().await;
    SqliteStore::open(rig.data.path())
        .unwrap()
        .audit_for_call(call_id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_to_a_queue_stops_the_dialplan_bridges_an_agent_and_is_heard_on_the_tap() {
    let mut rig = rig().await;
    let agent_hangup = rig.agent_hangup.clone();
    let started = Instant::now();
    let outcome = run_call(
        &rig,
        "call-q",
        vec![Action::Pause(Duration::from_secs(60))],
        move |live, bus, phase| async move {
            let mut events = bus.subscribe();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(live.phase("call-q"), Some(CallPhase::Dialplan));
            live.command(
                "call-q",
                SupervisorCommand::TakeOver {
                    by: "sam".into(),
                    target: TakeOverTarget::Queue("general".into()),
                },
            )
            .expect("take-over accepted");
            wait_for_state(&mut events, "with_agent").await;
            assert_eq!(phase.0.get(), CallPhase::WithAgent);
            // With an agent: a second take-over cannot apply.
            assert!(matches!(
                live.command(
                    "call-q",
                    SupervisorCommand::TakeOver {
                        by: "sam".into(),
                        target: TakeOverTarget::Agent("a2".into()),
                    },
                ),
                Err(ControlError::NotNow(_))
            ));
            // Listening in: the caller on one half, the agent on the other.
            let mut ear = live.listen("call-q").expect("live call");
            let mut heard_caller = false;
            let mut heard_agent = false;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while !(heard_caller && heard_agent) {
                let frame = tokio::time::timeout_at(deadline, ear.recv())
                    .await
                    .expect("both voices on the tap within 3 s")
                    .expect("tap open");
                assert_eq!(frame.len(), 2 * FRAME_SAMPLES);
                heard_caller |= frame[..FRAME_SAMPLES]
                    .iter()
                    .all(|s| (s - CALLER_LEVEL).abs() < 300);
                heard_agent |= frame[FRAME_SAMPLES..]
                    .iter()
                    .all(|s| (s - AGENT_LEVEL).abs() < 300);
            }
            agent_hangup.send(()).await.unwrap();
        },
    )
    .await;
    assert!(
        matches!(outcome, Ok(ActionsOutcome::Finished)),
        "the agent hung up: the call is done ({outcome:?})"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 60 s pause was cut short"
    );
    let rung = rig.rung.try_recv().expect("the agent's phone rang");
    assert_eq!(rung.user.as_deref(), Some("a1"));
    assert!(
        rung.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("X-Frontdoor-Reason") && v == "supervisor"),
        "{:?}",
        rung.headers
    );

    let entries = audit(&rig, "call-q").await;
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "sam" && e.action == "takeover_transfer"),
        "{entries:?}"
    );
    let records = transfers(&rig, "call-q");
    assert_eq!(records.len(), 1, "{records:?}");
    let [by, reason, queue, agent, answered, outcome] = &records[0];
    assert_eq!(by.as_deref(), Some("sam"));
    assert_eq!(reason.as_deref(), Some("supervisor"));
    assert_eq!(queue.as_deref(), Some("general"));
    assert_eq!(agent.as_deref(), Some("a1"));
    assert!(answered.is_some());
    assert_eq!(outcome.as_deref(), Some("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_to_an_agent_rings_them_even_outside_every_queue() {
    let mut rig = rig().await;
    let agent_hangup = rig.agent_hangup.clone();
    let outcome = run_call(
        &rig,
        "call-a",
        vec![Action::Pause(Duration::from_secs(60))],
        move |live, bus, _phase| async move {
            let mut events = bus.subscribe();
            tokio::time::sleep(Duration::from_millis(200)).await;
            live.command(
                "call-a",
                SupervisorCommand::TakeOver {
                    by: "jo".into(),
                    target: TakeOverTarget::Agent("a2".into()),
                },
            )
            .expect("take-over accepted");
            wait_for_state(&mut events, "with_agent").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            agent_hangup.send(()).await.unwrap();
        },
    )
    .await;
    assert!(
        matches!(outcome, Ok(ActionsOutcome::Finished)),
        "{outcome:?}"
    );
    let rung = rig.rung.try_recv().expect("the agent's phone rang");
    assert_eq!(rung.user.as_deref(), Some("a2"), "only the chosen agent");
    assert!(rig.rung.try_recv().is_err(), "nobody else was rung");
    rig.store.flush().await;
    let records = transfers(&rig, "call-a");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0][0].as_deref(), Some("jo"));
    assert_eq!(records[0][3].as_deref(), Some("a2"));
    assert_eq!(records[0][5].as_deref(), Some("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_to_an_unknown_queue_is_refused_and_the_dialplan_goes_on() {
    let mut rig = rig().await;
    let started = Instant::now();
    let outcome = run_call(
        &rig,
        "call-x",
        vec![Action::Pause(Duration::from_millis(1500))],
        move |live, _bus, phase| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            live.command(
                "call-x",
                SupervisorCommand::TakeOver {
                    by: "sam".into(),
                    target: TakeOverTarget::Queue("nowhere".into()),
                },
            )
            .expect("queued for the call");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(phase.0.get(), CallPhase::Dialplan);
        },
    )
    .await;
    assert!(
        matches!(outcome, Ok(ActionsOutcome::Finished)),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the pause ran to its end"
    );
    assert!(rig.rung.try_recv().is_err(), "no agent was rung");
    let entries = audit(&rig, "call-x").await;
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "sam" && e.action == "takeover_refused"),
        "{entries:?}"
    );
    assert!(transfers(&rig, "call-x").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_is_retargeted_and_each_hand_off_is_recorded() {
    let mut rig = rig().await;
    let agent_hangup = rig.agent_hangup.clone();
    let outcome = run_call(
        &rig,
        "call-r",
        vec![Action::Pause(Duration::from_secs(60))],
        move |live, bus, phase| async move {
            let mut events = bus.subscribe();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let take_over = |target| SupervisorCommand::TakeOver {
                by: "sam".into(),
                target,
            };
            live.command("call-r", take_over(TakeOverTarget::Agent("a3".into())))
                .expect("take-over accepted");
            wait_for_state(&mut events, "queued").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(phase.0.get(), CallPhase::Waiting);
            // a3 does not answer: the supervisor sends the caller to the
            // queue instead.
            live.command("call-r", take_over(TakeOverTarget::Queue("general".into())))
                .expect("a waiting caller can be re-targeted");
            wait_for_state(&mut events, "with_agent").await;
            assert_eq!(phase.0.get(), CallPhase::WithAgent);
            agent_hangup.send(()).await.unwrap();
        },
    )
    .await;
    assert!(
        matches!(outcome, Ok(ActionsOutcome::Finished)),
        "{outcome:?}"
    );
    let rung = rig.rung.try_recv().expect("a1's phone rang");
    assert_eq!(rung.user.as_deref(), Some("a1"));
    // The first hand-off's record is written by its guard, off the call's
    // path: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.store.flush().await;
    let mut records = transfers(&rig, "call-r");
    records.sort_by(|a, b| a[3].cmp(&b[3]));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0][3].as_deref(), Some("a1"));
    assert_eq!(records[0][5].as_deref(), Some("completed"));
    assert_eq!(records[1][3].as_deref(), Some("a3"));
    assert_eq!(records[1][4], None, "a3 never answered");
    assert_eq!(records[1][5].as_deref(), Some("retargeted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_a_bridged_call_hangs_up_the_agent_too() {
    let mut rig = rig().await;
    let outcome = run_call(
        &rig,
        "call-h",
        vec![Action::Pause(Duration::from_secs(60))],
        move |live, bus, _phase| async move {
            let mut events = bus.subscribe();
            tokio::time::sleep(Duration::from_millis(200)).await;
            live.command(
                "call-h",
                SupervisorCommand::TakeOver {
                    by: "sam".into(),
                    target: TakeOverTarget::Queue("general".into()),
                },
            )
            .expect("take-over accepted");
            wait_for_state(&mut events, "with_agent").await;
            live.command("call-h", SupervisorCommand::Hangup { by: "sam".into() })
                .expect("hang-up accepted with an agent");
        },
    )
    .await;
    assert_eq!(outcome.err().as_deref(), Some("sam"));
    tokio::time::timeout(Duration::from_secs(5), rig.agent_byes.recv())
        .await
        .expect("the agent's phone got a BYE within 5 s")
        .expect("phone running");
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.store.flush().await;
    let records = transfers(&rig, "call-h");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0][5].as_deref(), Some("completed"), "{records:?}");
    assert!(rig.rung.try_recv().is_ok());
}
