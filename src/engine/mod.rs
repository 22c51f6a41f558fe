//! The orchestrator: SIP events in, per-call tasks out.
//!
//! One dispatcher task owns the table of live calls and the admission
//! decisions (limits, shutdown, routing); each answered call runs in its own
//! task ([`call_task`]) that owns the call's media and record. Signalling for a
//! call reaches its task through a small bounded channel.

mod call_task;
mod services;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::dialplan::{Dialplan, DialplanError, Samples};
use crate::http::Metrics;
use crate::media::{self, MediaCapabilities, MediaConfig, PortAllocator};
use crate::sip::{self, CallKey, SipEvent, SipHandle};
use crate::store::{CallEnd, HangupBy, NewCall, SqliteStore, StoreHandle};

pub use call_task::CallSignal;

/// Settings the engine derives once from [`Config`].
pub struct EngineSettings {
    pub config: Config,
    pub data_dir: PathBuf,
    pub recordings_dir: PathBuf,
    pub caps: MediaCapabilities,
    pub media: MediaConfig,
    pub node: String,
}

/// Loads the dialplans with the media layer's prompt decoder.
pub fn load_dialplan(dir: &Path) -> Result<Dialplan, DialplanError> {
    let mut cache: HashMap<PathBuf, Samples> = HashMap::new();
    Dialplan::load(dir, &mut |path| {
        if let Some(s) = cache.get(path) {
            return Ok(s.clone());
        }
        let samples = media::audio::load_prompt(path).map_err(|e| e.to_string())?;
        cache.insert(path.to_path_buf(), samples.clone());
        Ok(samples)
    })
}

/// Loads the dialplans and checks their `transfer` actions against the
/// configured agents and queues: what `frontdoor dialplan check` and
/// start-up run, so neither accepts a transfer to a queue that does not
/// exist.
pub fn load_dialplan_checked(dir: &Path, config: &Config) -> Result<Dialplan, DialplanError> {
    load_dialplan_with_handoff(dir, config).map(|(plan, _)| plan)
}

/// As [`load_dialplan_checked`], also returning the `[handoff]` section
/// with the dialplan files' `[[queue]]`s merged in: what the engine runs.
pub fn load_dialplan_with_handoff(
    dir: &Path,
    config: &Config,
) -> Result<(Dialplan, crate::handoff::HandoffSection), DialplanError> {
    let plan = load_dialplan(dir)?;
    let handoff = plan.handoff_with_queues(&config.handoff)?;
    plan.check_handoff(&handoff)?;
    Ok((plan, handoff))
}

struct Shared {
    settings: EngineSettings,
    sip: SipHandle,
    store: StoreHandle,
    dialplan: Dialplan,
    ports: PortAllocator,
    metrics: Arc<Metrics>,
    assistant: Option<crate::call::assistant::AssistantServices>,
    handoff: Option<crate::handoff::Handoff>,
    events: crate::events::EventBus,
    /// Supervisor commands and listen-in taps, by call id.
    live: crate::control::LiveCalls,
    redactor: Arc<crate::governance::Redactor>,
}

/// Runs the engine until `shutdown` fires, then drains calls within the
/// configured grace period. Returns once every record is flushed.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (dialplan, handoff_section) = load_dialplan_with_handoff(&config.dialplans.dir, &config)?;
    info!(routes = dialplan.routes.len(), queues = dialplan.queues.len(), dir = %config.dialplans.dir.display(), "dialplans loaded");
    // Everything after this point (hand-off, dashboard, HTTP queue views)
    // sees the dialplan files' queues as if config.toml had declared them.
    let mut config = config;
    config.handoff = handoff_section;

    let assistant = if dialplan.uses_assistant() {
        let cfg = config.clone();
        Some(
            tokio::task::spawn_blocking(move || services::load_assistant(&cfg))
                .await
                .context("loading the assistant")??,
        )
    } else {
        None
    };

    let data_dir = config.data.dir.clone();
    let recordings_dir = data_dir.join("recordings");
    std::fs::create_dir_all(&recordings_dir)
        .with_context(|| format!("creating {}", recordings_dir.display()))?;
    let store = StoreHandle::spawn(SqliteStore::open(&data_dir)?);
    let node = node_name();
    let interrupted = store.close_interrupted(&node).await?;
    if interrupted > 0 {
        warn!(
            calls = interrupted,
            "closed calls left open by an earlier crash as interrupted"
        );
    }
    // Transcripts and recordings past retention are purged at start-up and
    // then periodically; every run is audited.
    let retention = crate::governance::spawn_retention(
        store.clone(),
        recordings_dir.clone(),
        config.governance.clone(),
    );

    let range = config.rtp_port_range();
    let ports = PortAllocator::new(*range.start(), *range.end());
    let caps = MediaCapabilities {
        codecs: config
            .media
            .codecs
            .iter()
            .filter_map(|c| match c.to_ascii_uppercase().as_str() {
                "PCMU" => Some(media::Codec::Pcmu),
                "PCMA" => Some(media::Codec::Pcma),
                _ => None,
            })
            .collect(),
        telephone_event: true,
        ptime_ms: 20,
    };
    let media_cfg = MediaConfig {
        inactivity_timeout: config.inactivity_timeout(),
        jitter_min_ms: config.media.jitter_min_ms,
        jitter_max_ms: config.media.jitter_max_ms,
        ..MediaConfig::default()
    };

    let sip_cfg = sip::SipConfig {
        udp: Some(config.sip.listen),
        tcp: Some(config.sip.listen),
        advertised_host: config.sip.advertised_host.clone(),
        user_agent: config.sip.user_agent.clone(),
        timers: sip::TimerConfig {
            t1: Duration::from_millis(config.sip.t1_ms),
            ..sip::TimerConfig::default()
        },
    };
    let (sip, mut sip_events) = sip::start(sip_cfg).await.context("starting SIP")?;

    // Agents and queues: only when configured. Agent legs are offered from
    // the address Frontdoor advertises (set media.advertised_ip when agents
    // are on other hosts).
    let handoff = if config.handoff.agent.is_empty() && config.handoff.queue.is_empty() {
        None
    } else {
        let local_ip = config.media.advertised_ip.unwrap_or_else(|| {
            let listen = config.sip.listen.ip();
            if listen.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen
            }
        });
        let deps = crate::handoff::HandoffDeps {
            sip: sip.clone(),
            ports: ports.clone(),
            media: media_cfg.clone(),
            caps: caps.clone(),
            local_ip,
            recordings_dir: Some(recordings_dir.clone()),
        };
        Some(
            crate::handoff::Handoff::start(config.handoff.clone(), deps)
                .context("starting agents and queues")?,
        )
    };

    let metrics = Metrics::new();
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let events = crate::events::EventBus::new();
    let live = crate::control::LiveCalls::new();
    let redactor = Arc::new(
        crate::governance::Redactor::from_config(&config.governance)
            .context("governance configuration")?,
    );
    let auth = Arc::new(
        crate::dashboard::auth::Auth::from_config(&config.dashboard)
            .context("dashboard configuration")?,
    );
    let http_state = crate::http::AppState {
        metrics: metrics.clone(),
        store: store.clone(),
        events: events.clone(),
        config: Arc::new(config.clone()),
        reader: crate::store::StoreReader::open_sqlite(&data_dir)?,
        live: live.clone(),
        handoff: handoff.clone(),
        auth,
        redactor: redactor.clone(),
        recordings_dir: recordings_dir.clone(),
        board: crate::dashboard::live::LiveBoard::start(&events),
    };
    let (http_addr, http_fut) = crate::http::serve(config.http.listen, http_state, async move {
        let mut rx = http_stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    })
    .await
    .with_context(|| format!("binding HTTP on {}", config.http.listen))?;
    let http_task = tokio::spawn(http_fut);

    info!(
        sip_udp = ?sip.local_udp_addr(),
        sip_tcp = ?sip.local_tcp_addr(),
        http = %http_addr,
        rtp = %config.media.rtp_ports,
        node = %node,
        "frontdoor ready"
    );

    let grace = Duration::from_secs(config.shutdown.grace_secs);
    let max_calls = config.limits.max_calls;
    let shared = Arc::new(Shared {
        settings: EngineSettings {
            config,
            data_dir,
            recordings_dir,
            caps,
            media: media_cfg,
            node,
        },
        sip: sip.clone(),
        store: store.clone(),
        dialplan,
        ports,
        metrics: metrics.clone(),
        assistant,
        handoff,
        events,
        live,
        redactor,
    });

    let mut calls: HashMap<CallKey, mpsc::Sender<CallSignal>> = HashMap::new();
    let mut tasks: JoinSet<CallKey> = JoinSet::new();
    let mut shutting_down = false;
    let mut drain_deadline = None;
    let shutdown = shutdown;
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            event = sip_events.recv() => {
                let Some(event) = event else {
                    warn!("SIP layer stopped");
                    break;
                };
                dispatch(&shared, event, &mut calls, &mut tasks, shutting_down, max_calls).await;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(key) => { calls.remove(&key); }
                    Err(e) => warn!(error = %e, "a call task failed"),
                }
                metrics.calls_active.set(tasks.len() as i64);
                if shutting_down && tasks.is_empty() {
                    break;
                }
            }
            _ = &mut shutdown, if !shutting_down => {
                info!(calls = tasks.len(), grace_secs = grace.as_secs(), "shutting down: refusing new calls, letting calls in progress finish");
                shutting_down = true;
                metrics.accepting.store(false, Ordering::Relaxed);
                if tasks.is_empty() {
                    break;
                }
                drain_deadline = Some(tokio::time::Instant::now() + grace);
            }
            _ = async { tokio::time::sleep_until(drain_deadline.expect("set")).await }, if drain_deadline.is_some() => {
                info!(calls = tasks.len(), "grace period over: hanging up the remaining calls");
                for tx in calls.values() {
                    let _ = tx.try_send(CallSignal::Shutdown);
                }
                // Calls get a few seconds for their BYE transactions; then we stop waiting.
                let hard_stop = tokio::time::Instant::now() + Duration::from_secs(5);
                while !tasks.is_empty() {
                    tokio::select! {
                        event = sip_events.recv() => match event {
                            Some(event) => dispatch(&shared, event, &mut calls, &mut tasks, true, max_calls).await,
                            None => break,
                        },
                        done = tasks.join_next() => { if let Some(Ok(key)) = done { calls.remove(&key); } }
                        _ = tokio::time::sleep_until(hard_stop) => {
                            warn!(calls = tasks.len(), "calls did not finish in time; their records stay open and are closed as interrupted at next start");
                            break;
                        }
                    }
                }
                break;
            }
        }
    }

    tasks.abort_all();
    retention.abort();
    sip.shutdown().await;
    store.flush().await;
    let _ = http_stop_tx.send(true);
    let _ = http_task.await;
    info!("frontdoor stopped");
    Ok(())
}

async fn dispatch(
    shared: &Arc<Shared>,
    event: SipEvent,
    calls: &mut HashMap<CallKey, mpsc::Sender<CallSignal>>,
    tasks: &mut JoinSet<CallKey>,
    shutting_down: bool,
    max_calls: usize,
) {
    let (key, signal) = match event {
        SipEvent::IncomingCall { call, invite } => {
            admit(shared, call, invite, calls, tasks, shutting_down, max_calls).await;
            return;
        }
        SipEvent::Acked { call } => (call, CallSignal::Acked),
        SipEvent::Cancelled { call } => (call, CallSignal::Cancelled),
        SipEvent::RemoteHangup { call } => (call, CallSignal::RemoteHangup),
        SipEvent::ReOffer { call, sdp } => (call, CallSignal::ReOffer(sdp)),
        SipEvent::HangupComplete { call, status } => (call, CallSignal::HangupComplete(status)),
        SipEvent::CallFailed { call, reason } => (call, CallSignal::Failed(reason)),
    };
    match calls.get(&key) {
        // A full channel means the call task is wedged; dropping a
        // retransmission-level signal is safer than stalling every call.
        Some(tx) => {
            if tx.try_send(signal).is_err() {
                warn!(?key, "call task not keeping up with signalling");
            }
        }
        None => {
            if let CallSignal::ReOffer(_) = signal {
                shared.sip.reject_reoffer(key, 481);
            }
        }
    }
}

async fn admit(
    shared: &Arc<Shared>,
    key: CallKey,
    invite: sip::IncomingInvite,
    calls: &mut HashMap<CallKey, mpsc::Sender<CallSignal>>,
    tasks: &mut JoinSet<CallKey>,
    shutting_down: bool,
    max_calls: usize,
) {
    let dialled = dialled_number(&invite);
    let caller = invite.from_user.clone().unwrap_or_default();
    let id = uuid::Uuid::new_v4().to_string();
    let refuse = |status: u16, reason: &'static str, why: &str| {
        let mut headers = Vec::new();
        if status == 503 {
            headers.push((
                "Retry-After".to_string(),
                shared.settings.config.limits.retry_after_secs.to_string(),
            ));
        }
        shared.sip.reject(key, status, None, headers);
        shared.metrics.rejected(reason);
        shared.metrics.call_finished("rejected");
        info!(call_id = %id, sip_call_id = %invite.call_id, status, why, "call refused");
    };
    // An agent's phone dialling a feature code changes the agent's state;
    // the dialplan never sees it (a catch-all route would answer it).
    if let Some(handoff) = &shared.handoff
        && let Some(wanted) = handoff.feature_codes().state_for(&dialled)
    {
        match handoff.registered_agent_at(&caller, invite.source).await {
            Some(agent) => {
                let handoff = handoff.clone();
                let store = shared.store.clone();
                tokio::spawn(async move {
                    handoff
                        .answer_feature_code(key, invite, agent, wanted, store)
                        .await;
                });
            }
            None => refuse(
                403,
                "feature_code",
                "feature codes are only for registered agent phones",
            ),
        }
        return;
    }
    // An agent leg that leads back to Frontdoor (a forwarding loop) must not
    // become a new call: our own transfers carry X-Frontdoor-Call-Id.
    let looped = invite
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("X-Frontdoor-Call-Id"));
    let (status, reason, why) = if looped {
        (
            482,
            "loop",
            "transfer loop: the INVITE came from a Frontdoor transfer",
        )
    } else if shutting_down {
        (503, "shutting_down", "engine is shutting down")
    } else if calls.len() >= max_calls {
        (503, "busy", "concurrent call limit reached")
    } else if shared.dialplan.route(&dialled, &caller).is_none() {
        (404, "no_route", "no dialplan route matches")
    } else {
        let route = shared
            .dialplan
            .route(&dialled, &caller)
            .expect("checked above")
            .clone();
        let (tx, rx) = mpsc::channel(16);
        calls.insert(key, tx);
        let task_shared = shared.clone();
        tasks.spawn(async move {
            call_task::run(task_shared, key, id, invite, dialled, route, rx).await;
            key
        });
        shared.metrics.calls_active.set(tasks.len() as i64);
        return;
    };
    refuse(status, reason, why);
    // Refused calls are recorded too: a council counts what it turned away.
    let now = Utc::now();
    shared
        .store
        .call_started(NewCall {
            id: id.clone(),
            sip_call_id: invite.call_id.clone(),
            caller,
            callee: dialled,
            route: None,
            source: invite.source.to_string(),
            node: shared.settings.node.clone(),
            started_at: now,
        })
        .await;
    shared
        .store
        .call_ended(
            &id,
            CallEnd {
                ended_at: now,
                reason: why.to_string(),
                hangup_by: HangupBy::System,
                sip_status: Some(status),
                stats: None,
            },
        )
        .await;
}

/// The number the caller dialled: the Request-URI user, else the To user.
fn dialled_number(invite: &sip::IncomingInvite) -> String {
    invite
        .request_uri_user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| invite.to_user.clone())
        .unwrap_or_default()
}

/// The IP to put in SDP for a caller at `peer`: the configured one, the SIP
/// listen address if it is specific, or whichever local address the kernel
/// routes to the caller from (found without sending anything).
fn media_ip_for(settings: &EngineSettings, peer: SocketAddr) -> IpAddr {
    if let Some(ip) = settings.config.media.advertised_ip {
        return ip;
    }
    let listen = settings.config.sip.listen.ip();
    if !listen.is_unspecified() {
        return listen;
    }
    let unspecified: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    UdpSocket::bind(unspecified)
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(listen)
}

/// Identifies this engine node in shared call records (crash recovery closes
/// only this node's calls). `FRONTDOOR_NODE` overrides the host name.
fn node_name() -> String {
    std::env::var("FRONTDOOR_NODE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "frontdoor".into())
}
