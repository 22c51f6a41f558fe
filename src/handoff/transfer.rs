//! [`Handoff`]: from "this caller needs a person" to a caller talking with
//! an agent who already knows why.
//!
//! Bridged transfer (the default): the caller's leg stays where it is; the
//! caller waits in a queue hearing hold audio and their position; agents
//! are rung by the queue's strategy with an INVITE whose display name and
//! `Subject` carry the reason; the agent who answers first hears a spoken
//! summary; then 20 ms frames pass both ways through Frontdoor, and both
//! legs are recorded. Risk calls go to the front and are never given up on.
//!
//! Everything here is cancel-safe: the call task drops the future when the
//! caller hangs up, and the [`LegGuard`] then hangs up any agent leg and
//! frees the agents.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

use super::config::{HandoffSection, QueueSpec, RingStrategy, TransferMode};
use super::directory::{AgentContact, AgentDirectory, AgentState, InMemoryDirectory};
use super::queue::{WaitingList, ring_order};
use crate::answer::{Priority, TransferReason};
use crate::call::CallMedia;
use crate::call::assistant::CallLog;
use crate::call::transcriber::{BridgeEars, BridgeTranscriber, Speaker};
use crate::control::{CallPhase, PhaseHandle};
use crate::dialplan::OpeningHours;
use crate::events::CallEvent;
use crate::media::{
    self, CallRecorder, FRAME_SAMPLES, MediaCapabilities, MediaConfig, MediaEvent, MediaHandle,
    MediaStream, PortAllocator,
};
use crate::sip::SipCallError;
use crate::sip::message::Uri;
use crate::sip::peer::{Peer, Transport};
use crate::sip::ua::UaError;
use crate::sip::{
    CallKey, OutboundEvent, OutgoingInvite, ReferEvent, RegistrationEvent, SipHandle,
};
use crate::store::{StoreHandle, TransferRecord};

/// Synthesised audio, when it arrives.
pub type SpeechFuture<'a> = Pin<Box<dyn Future<Output = Option<Arc<[i16]>>> + Send + 'a>>;

/// Speech for announcements and the agent's summary (Piper in production).
pub trait Announcer: Send + Sync {
    /// 8 kHz mono audio of `text`, or `None` if it cannot be synthesised.
    fn speak<'a>(&'a self, text: &'a str) -> SpeechFuture<'a>;

    /// Speech recognition for the bridged conversation's transcript, when
    /// the speech services have it (the assistant's do); without it the
    /// bridge is recorded but not transcribed.
    fn transcriber(&self) -> Option<BridgeTranscriber> {
        None
    }
}

impl Announcer for crate::speech::TtsWorkerPool {
    fn speak<'a>(&'a self, text: &'a str) -> SpeechFuture<'a> {
        Box::pin(async move {
            let mut stream = self.speak(text).await.ok()?;
            let mut samples = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.ok()?;
                if chunk.sample_rate != media::SAMPLE_RATE {
                    return None;
                }
                samples.extend_from_slice(&chunk.samples);
            }
            (!samples.is_empty()).then(|| Arc::from(samples))
        })
    }
}

/// What the engine gives the hand-off service once at start-up.
pub struct HandoffDeps {
    pub sip: SipHandle,
    pub ports: PortAllocator,
    pub media: MediaConfig,
    pub caps: MediaCapabilities,
    /// Address for our SDP towards agents.
    pub local_ip: IpAddr,
    /// Agent legs are recorded here as `<call id>-agent-<agent>.wav`.
    pub recordings_dir: Option<PathBuf>,
}

/// Why an agent's state was not changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AgentStateError {
    #[error("no such agent")]
    UnknownAgent,
    #[error("the agent is {}; change their state after the call", .0.as_str())]
    OnCall(AgentState),
    #[error("{} is set by calls, not chosen", .0.as_str())]
    NotChoosable(AgentState),
    #[error("the agent's state keeps changing; try again")]
    Contended,
}

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error("handoff configuration: {0}")]
    Config(String),
    #[error("hold music {path}: {reason}")]
    HoldMusic { path: PathBuf, reason: String },
}

/// Why and how urgently a caller needs a person, and what the agent should
/// hear before speaking.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// Frontdoor's call id (the record's id).
    pub call_id: String,
    pub reason: TransferReason,
    pub priority: Priority,
    /// From the governance category; `None`: the default queue.
    pub queue: Option<String>,
    /// One or two sentences for the agent: what the caller wants, details.
    pub summary: String,
    /// The conversation so far, for the record.
    pub transcript: Vec<String>,
    /// Spoken to a risk caller when no agent is free (safeguarding
    /// configuration's message); they stay queued afterwards.
    pub safety_message: Option<String>,
}

impl TransferRequest {
    /// Risk calls are never given up on: no maximum wait, no overflow exit.
    /// A supervisor's take-over of a caller the assistant had flagged at
    /// risk keeps urgent priority, and with it this guarantee.
    pub fn is_risk(&self) -> bool {
        matches!(
            self.reason,
            TransferReason::Emergency | TransferReason::Distress | TransferReason::Safeguarding
        ) || self.priority == crate::answer::Priority::Urgent
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The caller talked with `agent`; the agent hung up first.
    Completed { agent: String, talk: Duration },
    /// The caller's media ended (hung up, or no RTP) while queued or bridged.
    CallerGone,
    /// A routine call waited the queue's maximum and no overflow was left;
    /// the caller is still on the line for the dialplan to take a message.
    NoAgent { waited: Duration },
    /// The far end accepted a blind transfer: Frontdoor may hang up.
    Referred,
    /// No queue is configured for this transfer.
    NotConfigured,
}

struct QueueRuntime {
    spec: QueueSpec,
    /// Parsed `spec.hours`; `None`: always open.
    hours: Option<OpeningHours>,
    waiting: Mutex<WaitingList>,
    cursor: Mutex<usize>,
    hold: Arc<[i16]>,
}

struct Inner {
    deps: HandoffDeps,
    section: HandoffSection,
    directory: Arc<dyn AgentDirectory>,
    queues: HashMap<String, QueueRuntime>,
    /// Woken whenever an agent may have become free.
    agent_freed: Notify,
}

/// Shared by every call; cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    inner: Arc<Inner>,
}

/// How often a waiting caller re-checks agents even without a wake-up
/// (another node's directory changes, a missed notification).
const RECHECK: Duration = Duration::from_millis(500);
/// Longest a REFER waits for the caller's ACK of our answer.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Longest a blind transfer may take before falling back.
const REFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the summary read to the agent.
const MAX_SUMMARY_CHARS: usize = 600;

impl Handoff {
    /// Builds the service, starts the registrar on `deps.sip` and follows
    /// registrations. Uses the in-memory directory.
    pub fn start(section: HandoffSection, deps: HandoffDeps) -> Result<Handoff, HandoffError> {
        let directory = Arc::new(InMemoryDirectory::new());
        let mut by_name = Vec::new();
        for agent in &section.agent {
            match agent.uri.as_deref() {
                None => directory.add_agent(&agent.id, None),
                Some(uri) => match fixed_contact(uri) {
                    Some(contact) => directory.add_agent(&agent.id, Some(contact)),
                    // A PBX or hunt group named by host: offline until
                    // its name resolves, never silently unreachable.
                    None => {
                        directory.add_external_agent(&agent.id);
                        by_name.push((agent.id.clone(), uri.to_owned()));
                    }
                },
            }
        }
        let ipv4 = deps.local_ip.is_ipv4();
        let handoff = Handoff::with_directory(section, deps, directory.clone())?;
        for (agent, uri) in by_name {
            tokio::spawn(resolve_external_agent(
                Arc::downgrade(&directory),
                agent,
                uri,
                ipv4,
            ));
        }
        Ok(handoff)
    }

    /// As [`Self::start`] with another directory (e.g. a shared one); its
    /// agents must already be declared.
    pub fn with_directory(
        section: HandoffSection,
        deps: HandoffDeps,
        directory: Arc<dyn AgentDirectory>,
    ) -> Result<Handoff, HandoffError> {
        section.validate().map_err(HandoffError::Config)?;
        let mut queues = HashMap::new();
        for spec in &section.queue {
            let hold = match &spec.hold_music {
                Some(path) => media::load_prompt(path).map_err(|e| HandoffError::HoldMusic {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
                None => default_hold_tone(),
            };
            let hours = spec.opening_hours().map_err(HandoffError::Config)?;
            queues.insert(
                spec.name.clone(),
                QueueRuntime {
                    spec: spec.clone(),
                    hours,
                    waiting: Mutex::new(WaitingList::default()),
                    cursor: Mutex::new(0),
                    hold,
                },
            );
        }
        let has_registering_agents = section.agent.iter().any(|a| a.uri.is_none());
        let registrations = deps.sip.registrations();
        if has_registering_agents {
            deps.sip.set_registrar(Some(section.registrar_config()));
        }
        let inner = Arc::new(Inner {
            deps,
            section,
            directory,
            queues,
            agent_freed: Notify::new(),
        });
        tokio::spawn(follow_registrations(Arc::downgrade(&inner), registrations));
        Ok(Handoff { inner })
    }

    pub(super) fn deps(&self) -> &HandoffDeps {
        &self.inner.deps
    }

    pub fn directory(&self) -> &Arc<dyn AgentDirectory> {
        &self.inner.directory
    }

    /// Callers waiting in `queue` now.
    pub fn waiting(&self, queue: &str) -> usize {
        self.inner
            .queues
            .get(queue)
            .map_or(0, |q| q.waiting.lock().len())
    }

    /// Bridged transfer: queues the caller, rings agents, plays the agent a
    /// summary and bridges the legs until one side hangs up. `call` is the
    /// caller's media (its recording keeps running and holds both voices).
    /// Requested by the AI; see [`Self::transfer_as`] for a person's.
    pub async fn transfer(
        &self,
        call: &mut CallMedia,
        request: TransferRequest,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
    ) -> TransferOutcome {
        self.transfer_as(call, request, &TransferOrder::default(), log, speech)
            .await
    }

    /// [`Self::transfer`] on `order`'s behalf: a supervisor's take-over
    /// names who asked and may name one agent. A directed transfer rings
    /// only that agent (member of a queue or not), claiming them through
    /// the directory like any ring; while they are busy the caller holds
    /// (the queue's music, without taking a place in its line) until they
    /// are free, for at most the queue's maximum wait, and then gets
    /// [`TransferOutcome::NoAgent`] — it never spills to other agents the
    /// supervisor did not choose. A transfer record is written however the
    /// hand-off ends, even when the future is dropped.
    ///
    /// A transfer to a queue that is closed by its `hours` (checked when
    /// the caller enters it, including by overflow) goes on to the first
    /// open queue of its overflow chain; when none is open a routine
    /// caller hears the queue's closed message and gets
    /// [`TransferOutcome::NoAgent`], while a risk caller is queued in the
    /// first queue anyway, for any agent who is available.
    pub async fn transfer_as(
        &self,
        call: &mut CallMedia,
        request: TransferRequest,
        order: &TransferOrder,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
    ) -> TransferOutcome {
        let mut track = TransferTrack::new(log, &request, order);
        let Some(mut queue_name) = self.queue_for(&request) else {
            audit(log, "handoff_unavailable", "no queue configured".into()).await;
            track.finish(&TransferOutcome::NotConfigured).await;
            return TransferOutcome::NotConfigured;
        };
        track.set_queue(&queue_name);
        let started = Instant::now();
        audit(
            log,
            "handoff_requested",
            format!(
                "reason={} priority={:?} queue={queue_name} agent={} by={} summary={:?}",
                request.reason.as_str(),
                request.priority,
                order.agent.as_deref().unwrap_or("any"),
                order.requested_by.as_deref().unwrap_or("ai"),
                request.summary
            ),
        )
        .await;
        log.store
            .call_event(
                log.call_id,
                "transfer",
                serde_json::json!({
                    "reason": request.reason.as_str(),
                    "priority": request.priority,
                    "queue": queue_name,
                    "agent": order.agent,
                    "requested_by": order.requested_by.as_deref().unwrap_or("ai"),
                    "summary": log.redact(&request.summary),
                    "transcript": request.transcript.iter().map(|t| log.redact(t)).collect::<Vec<_>>(),
                })
                .to_string(),
            )
            .await;
        // A supervisor who names an agent or a target has chosen a person,
        // so opening hours only steer transfers to a queue.
        if order.agent.is_none() && order.refer_to.is_none() {
            let now = chrono::Local::now().naive_local();
            match self
                .enter_by_hours(call, &request, &queue_name, now, log, speech)
                .await
            {
                Some(open) => {
                    queue_name = open;
                    track.set_queue(&queue_name);
                }
                None => {
                    let outcome = TransferOutcome::NoAgent {
                        waited: started.elapsed(),
                    };
                    track.finish(&outcome).await;
                    return outcome;
                }
            }
        }
        if order.agent.is_none()
            && let Some(target) = self.refer_target(order, &queue_name)
        {
            match order.caller {
                Some(caller) => match self.refer(caller, &target, log, call, &queue_name).await {
                    Ok(()) => {
                        track.finish(&TransferOutcome::Referred).await;
                        return TransferOutcome::Referred;
                    }
                    Err(why) => {
                        audit(
                            log,
                            "refer_failed",
                            format!("{target}: {why}; falling back to bridged transfer"),
                        )
                        .await;
                    }
                },
                None => {
                    audit(
                        log,
                        "refer_failed",
                        format!("{target}: the call cannot be referred; bridged instead"),
                    )
                    .await;
                }
            }
        }
        if let Some(agent) = &order.agent {
            let outcome = self
                .serve_direct(call, &request, agent, &queue_name, log, speech, &mut track)
                .await;
            track.finish(&outcome).await;
            return outcome;
        }
        loop {
            let outcome = self
                .serve_in_queue(
                    call,
                    &request,
                    &queue_name,
                    log,
                    speech,
                    started,
                    &mut track,
                )
                .await;
            match outcome {
                QueueOutcome::Done(outcome) => {
                    track.finish(&outcome).await;
                    return outcome;
                }
                QueueOutcome::Overflow => {
                    let next = self
                        .inner
                        .queues
                        .get(&queue_name)
                        .and_then(|q| q.spec.overflow.clone());
                    match next {
                        Some(next) if next != queue_name => {
                            audit(log, "handoff_overflow", format!("{queue_name} -> {next}")).await;
                            let now = chrono::Local::now().naive_local();
                            let Some(open) = self
                                .enter_by_hours(call, &request, &next, now, log, speech)
                                .await
                            else {
                                let outcome = TransferOutcome::NoAgent {
                                    waited: started.elapsed(),
                                };
                                track.finish(&outcome).await;
                                return outcome;
                            };
                            queue_name = open;
                            track.set_queue(&queue_name);
                        }
                        _ => {
                            audit(log, "handoff_no_agent", format!("queue {queue_name}")).await;
                            let outcome = TransferOutcome::NoAgent {
                                waited: started.elapsed(),
                            };
                            track.finish(&outcome).await;
                            return outcome;
                        }
                    }
                }
            }
        }
    }

    /// Blind transfer by REFER (RFC 3515) of the caller's SIP call to
    /// `target`. When the far end refuses or the transfer fails, falls
    /// back to the bridged [`Self::transfer`].
    pub async fn blind_transfer(
        &self,
        caller: CallKey,
        target: &str,
        call: &mut CallMedia,
        request: TransferRequest,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
    ) -> TransferOutcome {
        let order = TransferOrder {
            caller: Some(caller),
            refer_to: Some(target.to_owned()),
            ..TransferOrder::default()
        };
        self.transfer_as(call, request, &order, log, speech).await
    }

    /// Sets an agent's state on a person's behalf (the dashboard, the
    /// agent's feature code). Refused while the agent is ringing or on a
    /// call: a claim in progress must not be overtaken. Returns the state
    /// the agent is in now (`available` without a registered phone is
    /// `offline`).
    pub async fn set_agent_state(
        &self,
        agent: &str,
        wanted: AgentState,
    ) -> Result<AgentState, AgentStateError> {
        if !matches!(
            wanted,
            AgentState::Available | AgentState::Offline | AgentState::WrapUp | AgentState::Break
        ) {
            return Err(AgentStateError::NotChoosable(wanted));
        }
        let directory = &self.inner.directory;
        let target = [agent.to_owned()];
        // Compare-and-set, retried when a call moved the agent meanwhile.
        for _ in 0..3 {
            let Some(current) = directory.statuses(&target).await.into_iter().next() else {
                return Err(AgentStateError::UnknownAgent);
            };
            if matches!(current.state, AgentState::Ringing | AgentState::OnCall) {
                return Err(AgentStateError::OnCall(current.state));
            }
            if directory.transition(agent, current.state, wanted).await {
                let now = directory
                    .statuses(&target)
                    .await
                    .into_iter()
                    .next()
                    .map_or(wanted, |s| s.state);
                if now == AgentState::Available {
                    self.inner.agent_freed.notify_waiters();
                }
                info!(agent, state = now.as_str(), "agent state set");
                return Ok(now);
            }
        }
        Err(AgentStateError::Contended)
    }

    /// The configured agent whose registered phone sent a request from
    /// `source` as `user`: a feature code is trusted only from the address
    /// the agent's phone registered from with its digest password (UDP: the
    /// same address and port; TCP: the same host, as connections change).
    pub async fn registered_agent_at(&self, user: &str, source: SocketAddr) -> Option<String> {
        let spec = self
            .inner
            .section
            .agent
            .iter()
            .find(|a| a.id == user && a.uri.is_none())?;
        let status = self
            .inner
            .directory
            .statuses(std::slice::from_ref(&spec.id))
            .await
            .into_iter()
            .next()?;
        let destination = status.contact?.destination;
        let same = match destination.transport {
            Transport::Udp => destination.addr == source,
            Transport::Tcp => destination.addr.ip() == source.ip(),
        };
        same.then(|| spec.id.clone())
    }

    /// The feature codes agents dial (see [`super::config::FeatureCodes`]).
    pub fn feature_codes(&self) -> &super::config::FeatureCodes {
        &self.inner.section.feature_codes
    }

    /// REFERs the caller to `target` and follows the NOTIFYs. The caller
    /// hears the queue's hold audio meanwhile (after whatever is already
    /// playing, e.g. "I'm putting you through"), not silence.
    async fn refer(
        &self,
        caller: CallKey,
        target: &str,
        log: &CallLog<'_>,
        call: &mut CallMedia,
        queue_name: &str,
    ) -> Result<(), String> {
        let music = self
            .inner
            .queues
            .get(queue_name)
            .map_or_else(default_hold_tone, |q| q.hold.clone());
        let mut hold = Hold::new(music);
        hold.resume(call);
        let result = self
            .follow_refer(caller, target, log, call, &mut hold)
            .await;
        hold.stop(call);
        result
    }

    async fn follow_refer(
        &self,
        caller: CallKey,
        target: &str,
        log: &CallLog<'_>,
        call: &mut CallMedia,
        hold: &mut Hold,
    ) -> Result<(), String> {
        let uri = Uri::parse(target).map_err(|e| format!("bad target: {e:?}"))?;
        // A dialplan may transfer the moment the call is answered, before
        // the caller's ACK confirms the dialog; REFER waits for it.
        let confirmed_by = Instant::now() + ACK_WAIT;
        let mut events = loop {
            match self.inner.deps.sip.refer(caller, uri.clone(), None).await {
                Ok(events) => break events,
                Err(SipCallError::Ua(UaError::NotEstablished)) if Instant::now() < confirmed_by => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        audit(log, "refer_sent", target.to_owned()).await;
        let deadline = tokio::time::sleep(REFER_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                media = call.events.recv() => {
                    match media {
                        None => return Err("the call ended".into()),
                        // RTP inactivity is the SIP side's to judge here:
                        // the far end may hold the caller while it transfers.
                        Some(MediaEvent::Inactive { .. }) => {}
                        other => {
                            hold.on_caller_event(call, other);
                        }
                    }
                    continue;
                }
                _ = &mut deadline => return Err("no outcome in time".into()),
            };
            match event {
                None => return Err("the call ended".into()),
                Some(ReferEvent::Answered { status, .. }) => match status {
                    Some(s) if (200..300).contains(&s) => {}
                    Some(s) => return Err(format!("REFER refused with {s}")),
                    None => return Err("no answer to REFER".into()),
                },
                Some(ReferEvent::Notified {
                    status, terminated, ..
                }) => match status {
                    Some(s) if (200..300).contains(&s) => {
                        audit(log, "refer_completed", format!("{target} answered {s}")).await;
                        return Ok(());
                    }
                    Some(s) if s >= 300 => return Err(format!("transfer target answered {s}")),
                    _ if terminated => return Err("subscription ended without success".into()),
                    _ => {}
                },
            }
        }
    }

    /// Whether `queue` is configured (a supervisor's target is checked
    /// before the assistant is stopped).
    pub fn has_queue(&self, queue: &str) -> bool {
        self.inner.queues.contains_key(queue)
    }

    /// Whether `agent` is a configured agent.
    pub fn has_agent(&self, agent: &str) -> bool {
        self.inner.section.agent.iter().any(|a| a.id == agent)
    }

    /// Where to REFER the caller first, if anywhere: the order's own
    /// target, else the queue's when it is configured for REFER.
    fn refer_target(&self, order: &TransferOrder, queue_name: &str) -> Option<String> {
        order.refer_to.clone().or_else(|| {
            let queue = self.inner.queues.get(queue_name)?;
            (queue.spec.transfer == TransferMode::Refer)
                .then(|| self.inner.section.refer_target(&queue.spec))
                .flatten()
        })
    }

    fn queue_for(&self, request: &TransferRequest) -> Option<String> {
        let queues = &self.inner.queues;
        request
            .queue
            .clone()
            .filter(|q| queues.contains_key(q))
            .or_else(|| self.inner.section.default_queue.clone())
            .or_else(|| self.inner.section.queue.first().map(|q| q.name.clone()))
    }

    /// The queue the caller should wait in given opening hours, starting
    /// at `first` (see [`route_by_hours`]), with the audit trail; `None`
    /// when a routine caller was told the team is closed and should get
    /// [`TransferOutcome::NoAgent`].
    async fn enter_by_hours(
        &self,
        call: &mut CallMedia,
        request: &TransferRequest,
        first: &str,
        now: NaiveDateTime,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
    ) -> Option<String> {
        let route = route_by_hours(&self.inner.queues, first, request.is_risk(), now);
        let (passed, queue) = match route {
            HoursRoute::Open { passed, queue } => (passed, queue),
            HoursRoute::RiskOutOfHours { passed, queue } => {
                audit_closed_hops(log, &passed, None).await;
                audit(
                    log,
                    "handoff_closed_risk",
                    format!("every queue from {first} is closed; risk caller queued in {queue}"),
                )
                .await;
                return Some(queue);
            }
            HoursRoute::Closed {
                passed,
                message_from,
            } => {
                audit_closed_hops(log, &passed, None).await;
                let last = passed.last().map_or(message_from.as_str(), String::as_str);
                audit(
                    log,
                    "handoff_closed",
                    format!("{last} -> none; routine caller told the team is closed"),
                )
                .await;
                let message = self
                    .inner
                    .queues
                    .get(&message_from)
                    .map_or(super::config::DEFAULT_CLOSED_MESSAGE, |q| {
                        q.spec.closed_message()
                    });
                if let Some(audio) = match speech {
                    Some(speech) => speech.speak(message).await,
                    None => None,
                } {
                    play_to_the_end(call, audio).await;
                }
                return None;
            }
        };
        audit_closed_hops(log, &passed, Some(&queue)).await;
        Some(queue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_in_queue(
        &self,
        call: &mut CallMedia,
        request: &TransferRequest,
        queue_name: &str,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
        started: Instant,
        track: &mut TransferTrack,
    ) -> QueueOutcome {
        let Some(queue) = self.inner.queues.get(queue_name) else {
            return QueueOutcome::Done(TransferOutcome::NotConfigured);
        };
        let ticket = queue.waiting.lock().join(request.priority);
        let _seat = Seat { queue, ticket };
        publish_state(log, "queued");
        let entered = Instant::now();
        let mut hold = Hold::new(queue.hold.clone());
        hold.resume(call);
        let announce_every = Duration::from_secs(queue.spec.announce_every_secs.max(5));
        let mut next_announcement = Instant::now() + announce_every;
        let mut safety_said = false;
        let mut failed_agents: Vec<String> = Vec::new();
        loop {
            if queue.waiting.lock().may_ring(ticket) {
                let order = self.candidates(queue, &failed_agents).await;
                if !order.is_empty() {
                    queue.waiting.lock().set_ringing(ticket, true);
                    let attempt = self
                        .ring(call, request, queue, &order, log, speech, &mut hold, track)
                        .await;
                    queue.waiting.lock().set_ringing(ticket, false);
                    match attempt {
                        Attempt::Connected(outcome) => return QueueOutcome::Done(outcome),
                        Attempt::CallerGone => {
                            return QueueOutcome::Done(TransferOutcome::CallerGone);
                        }
                        Attempt::NoAnswer(agents) => {
                            failed_agents.extend(agents);
                            // Everyone tried once: start the round again.
                            if failed_agents.len() >= queue.spec.members.len() {
                                failed_agents.clear();
                            }
                            publish_state(log, "queued");
                            hold.resume(call);
                            continue;
                        }
                    }
                }
            }
            // Nobody to ring now: a risk caller is told how to get help at
            // once and then keeps their place.
            if request.is_risk() && !safety_said {
                safety_said = true;
                if let (Some(text), Some(speech)) = (&request.safety_message, speech) {
                    hold.announce(call, speech.speak(text).await);
                }
                audit(
                    log,
                    "handoff_waiting_risk",
                    "no agent free; safety message played, caller stays queued".into(),
                )
                .await;
            }
            if let Some(max) = queue.spec.max_wait_secs
                && !request.is_risk()
                && entered.elapsed() >= Duration::from_secs(max)
            {
                hold.stop(call);
                return QueueOutcome::Overflow;
            }
            if Instant::now() >= next_announcement {
                next_announcement = Instant::now() + announce_every;
                let position = queue.waiting.lock().position(ticket).unwrap_or(1);
                if let Some(speech) = speech {
                    let text = format!(
                        "You are number {position} in the queue. Please stay on the line; someone will be with you as soon as possible."
                    );
                    hold.announce(call, speech.speak(&text).await);
                }
                info!(queue = %queue.spec.name, position, waited_s = started.elapsed().as_secs(), "caller still queued");
            }
            let wait = tokio::time::sleep(RECHECK);
            tokio::pin!(wait);
            let freed = self.inner.agent_freed.notified();
            tokio::pin!(freed);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = &mut freed => break,
                    event = call.events.recv() => {
                        if !hold.on_caller_event(call, event) {
                            return QueueOutcome::Done(TransferOutcome::CallerGone);
                        }
                    }
                }
            }
        }
    }

    /// A directed transfer: rings `agent` whenever the directory shows them
    /// free; the caller holds meanwhile (see [`Self::transfer_as`]).
    #[allow(clippy::too_many_arguments)]
    async fn serve_direct(
        &self,
        call: &mut CallMedia,
        request: &TransferRequest,
        agent: &str,
        queue_name: &str,
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
        track: &mut TransferTrack,
    ) -> TransferOutcome {
        let Some(queue) = self.inner.queues.get(queue_name) else {
            return TransferOutcome::NotConfigured;
        };
        track.set_agent(agent);
        publish_state(log, "queued");
        let entered = Instant::now();
        let mut hold = Hold::new(queue.hold.clone());
        hold.resume(call);
        let target = [agent.to_owned()];
        loop {
            let free = self
                .inner
                .directory
                .statuses(&target)
                .await
                .into_iter()
                .any(|s| s.state == AgentState::Available && s.contact.is_some());
            if free {
                match self
                    .ring(call, request, queue, &target, log, speech, &mut hold, track)
                    .await
                {
                    Attempt::Connected(outcome) => return outcome,
                    Attempt::CallerGone => return TransferOutcome::CallerGone,
                    Attempt::NoAnswer(_) => {
                        publish_state(log, "queued");
                        hold.resume(call);
                    }
                }
            }
            if let Some(max) = queue.spec.max_wait_secs
                && entered.elapsed() >= Duration::from_secs(max)
            {
                hold.stop(call);
                audit(
                    log,
                    "handoff_no_agent",
                    format!("agent {agent} not free within {max} s"),
                )
                .await;
                return TransferOutcome::NoAgent {
                    waited: entered.elapsed(),
                };
            }
            let wait = tokio::time::sleep(RECHECK);
            tokio::pin!(wait);
            let freed = self.inner.agent_freed.notified();
            tokio::pin!(freed);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = &mut freed => break,
                    event = call.events.recv() => {
                        if !hold.on_caller_event(call, event) {
                            return TransferOutcome::CallerGone;
                        }
                    }
                }
            }
        }
    }

    async fn candidates(&self, queue: &QueueRuntime, skip: &[String]) -> Vec<String> {
        let statuses = self.inner.directory.statuses(&queue.spec.members).await;
        let cursor = *queue.cursor.lock();
        ring_order(
            queue.spec.strategy,
            &queue.spec.members,
            &statuses,
            cursor,
            skip,
        )
    }

    /// One attempt: the first agent of `order` (all of them for ring-all)
    /// that can be claimed is rung until the ring timeout.
    #[allow(clippy::too_many_arguments)]
    async fn ring(
        &self,
        call: &mut CallMedia,
        request: &TransferRequest,
        queue: &QueueRuntime,
        order: &[String],
        log: &CallLog<'_>,
        speech: Option<&dyn Announcer>,
        hold: &mut Hold,
        track: &mut TransferTrack,
    ) -> Attempt {
        let directory = &self.inner.directory;
        let wanted = if queue.spec.strategy == RingStrategy::RingAll {
            order.len()
        } else {
            1
        };
        let mut guard = LegGuard::new(self.inner.clone());
        let (merged_tx, mut merged) = mpsc::channel::<(usize, OutboundEvent)>(64);
        for agent in order {
            if guard.legs.len() >= wanted {
                break;
            }
            if !directory
                .transition(agent, AgentState::Available, AgentState::Ringing)
                .await
            {
                continue;
            }
            guard.claimed.push(agent.clone());
            if let Some(index) = queue.spec.members.iter().position(|m| m == agent) {
                *queue.cursor.lock() = index;
            }
            let statuses = directory.statuses(std::slice::from_ref(agent)).await;
            let Some(contact) = statuses.into_iter().next().and_then(|s| s.contact) else {
                continue;
            };
            match self.place_call(agent, &contact, request).await {
                Ok((key, stream, events, session_id)) => {
                    let index = guard.legs.len();
                    let reoffers = LegReoffers {
                        sip: self.inner.deps.sip.clone(),
                        caps: self.inner.deps.caps.clone(),
                        local_ip: self.inner.deps.local_ip,
                        local_port: stream.local_rtp_port(),
                        session_id,
                        media: Arc::new(Mutex::new(None)),
                        store: log.store.clone(),
                        call_id: log.call_id.to_owned(),
                    };
                    guard.legs.push(Leg {
                        agent: agent.clone(),
                        key,
                        stream: Some(stream),
                        live: true,
                        media: reoffers.media.clone(),
                    });
                    tokio::spawn(forward_leg_events(
                        index,
                        events,
                        merged_tx.clone(),
                        reoffers,
                    ));
                    info!(agent = %agent, "ringing agent");
                }
                Err(why) => warn!(agent = %agent, %why, "cannot call agent"),
            }
        }
        drop(merged_tx);
        if guard.legs.is_empty() {
            return Attempt::NoAnswer(guard.claimed.clone());
        }
        publish_state(log, "ringing_agent");
        let deadline = tokio::time::sleep(queue.spec.ring_timeout());
        tokio::pin!(deadline);
        let (winner, answer_sdp) = loop {
            tokio::select! {
                _ = &mut deadline => {
                    info!("no agent answered in time");
                    return Attempt::NoAnswer(guard.claimed.clone());
                }
                event = call.events.recv() => {
                    if !hold.on_caller_event(call, event) {
                        return Attempt::CallerGone;
                    }
                }
                event = merged.recv() => match event {
                    None => return Attempt::NoAnswer(guard.claimed.clone()),
                    Some((index, OutboundEvent::Answered { sdp, .. })) => break (index, sdp),
                    Some((index, OutboundEvent::Failed { status, .. })) => {
                        if let Some(leg) = guard.legs.get_mut(index) {
                            leg.live = false;
                            info!(agent = %leg.agent, ?status, "agent did not take the call");
                        }
                        if guard.legs.iter().all(|l| !l.live) {
                            return Attempt::NoAnswer(guard.claimed.clone());
                        }
                    }
                    Some(_) => {}
                },
            }
        };
        // Ring-all: the others stop ringing now.
        for (index, leg) in guard.legs.iter_mut().enumerate() {
            if index != winner && leg.live {
                self.inner.deps.sip.hangup(leg.key);
                leg.live = false;
            }
        }
        let Some(leg) = guard.legs.get_mut(winner) else {
            return Attempt::NoAnswer(guard.claimed.clone());
        };
        let agent = leg.agent.clone();
        let negotiated = answer_sdp
            .as_deref()
            .map(|sdp| media::sdp::negotiate(sdp, &self.inner.deps.caps));
        let (Some(Ok(negotiated)), Some(stream)) = (negotiated, leg.stream.take()) else {
            warn!(agent = %agent, "agent's answer has no usable SDP; hanging up");
            return Attempt::NoAnswer(vec![agent]);
        };
        directory.set_state(&agent, AgentState::OnCall).await;
        guard.on_call = Some(agent.clone());
        let recorder = self.agent_recorder(&request.call_id, &agent);
        let (agent_handle, agent_events) = stream.start(negotiated.clone(), recorder);
        // From now on the agent's phone may re-INVITE (hold, resume).
        *leg.media.lock() = Some(AgentLegMedia {
            agent: agent_handle.clone(),
            caller: call.handle.clone(),
            current: negotiated,
            hold_music: queue.hold.clone(),
            playing_hold: false,
            version: 1,
        });
        let mut agent_media = CallMedia {
            handle: agent_handle,
            events: agent_events,
        };
        audit(
            log,
            "handoff_answered",
            format!("agent {agent} answered; reason {}", request.reason.as_str()),
        )
        .await;

        // Warm hand-off: the agent hears why before the caller is put through.
        let summary = summary_text(request);
        if let Some(audio) = match speech {
            Some(s) => s.speak(&summary).await,
            None => None,
        } {
            let length = Duration::from_millis(audio.len() as u64 / 8);
            agent_media.handle.play(audio);
            let until = tokio::time::sleep(length + Duration::from_secs(2));
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => break,
                    event = agent_media.events.recv() => match event {
                        Some(MediaEvent::PlaybackFinished) => break,
                        None => break,
                        Some(_) => {}
                    },
                    event = call.events.recv() => {
                        if !hold.on_caller_event(call, event) {
                            return Attempt::CallerGone;
                        }
                    }
                    event = merged.recv() => {
                        if let Some((i, OutboundEvent::RemoteHangup { .. })) = event && i == winner {
                            // The agent hung up during the summary: try again.
                            guard.legs[winner].live = false;
                            let _ = agent_media.handle.stop().await;
                            return Attempt::NoAnswer(vec![agent]);
                        }
                    }
                }
            }
        }
        hold.stop(call);
        // The phase first: whoever sees the event may act on it at once.
        track.answered(&agent);
        publish_state(log, "with_agent");
        audit(
            log,
            "handoff_connected",
            format!(
                "bridged to agent {agent} (reason {})",
                request.reason.as_str()
            ),
        )
        .await;
        let talk_started = Instant::now();
        let ears = speech
            .and_then(|s| s.transcriber())
            .and_then(|t| t.start(log));
        let ended = bridge(call, &mut agent_media, &mut merged, winner, ears).await;
        let _ = agent_media.handle.stop().await;
        let talk = talk_started.elapsed();
        match ended {
            BridgeEnd::AgentHungUp => {
                guard.legs[winner].live = false;
                audit(
                    log,
                    "handoff_ended",
                    format!("agent {agent} hung up after {} s", talk.as_secs()),
                )
                .await;
                Attempt::Connected(TransferOutcome::Completed { agent, talk })
            }
            BridgeEnd::CallerGone => {
                // The guard hangs up the agent leg.
                audit(log, "handoff_ended", format!("caller left; agent {agent}")).await;
                Attempt::CallerGone
            }
        }
    }

    async fn place_call(
        &self,
        agent: &str,
        contact: &AgentContact,
        request: &TransferRequest,
    ) -> Result<(CallKey, MediaStream, mpsc::Receiver<OutboundEvent>, u64), String> {
        let deps = &self.inner.deps;
        let target =
            Uri::parse(&contact.uri).map_err(|e| format!("contact {}: {e:?}", contact.uri))?;
        let lease = deps.ports.allocate().ok_or("no free RTP ports")?;
        let stream = MediaStream::bind(deps.local_ip, lease, deps.media.clone())
            .await
            .map_err(|e| format!("cannot bind RTP: {e}"))?;
        let session_id = rand::random::<u32>() as u64;
        let sdp = media::sdp::build_offer(
            &deps.caps,
            deps.local_ip,
            stream.local_rtp_port(),
            session_id,
            1,
        );
        let reason = request.reason.as_str().replace('_', " ");
        let placed = deps
            .sip
            .invite(OutgoingInvite {
                target,
                from_user: "frontdoor".to_owned(),
                // What the agent's phone shows while ringing.
                from_display: Some(format!("Frontdoor: {reason}")),
                sdp,
                destination: contact.destination,
                extra_headers: vec![
                    (
                        "Subject".to_owned(),
                        format!("Frontdoor transfer: {reason}"),
                    ),
                    ("X-Frontdoor-Call-Id".to_owned(), request.call_id.clone()),
                    (
                        "X-Frontdoor-Reason".to_owned(),
                        request.reason.as_str().to_owned(),
                    ),
                    ("Priority".to_owned(), sip_priority(request)),
                ],
            })
            .await
            .map_err(|e| e.to_string())?;
        info!(agent, uri = %contact.uri, "calling agent");
        Ok((placed.call, stream, placed.events, session_id))
    }

    fn agent_recorder(&self, call_id: &str, agent: &str) -> Option<CallRecorder> {
        let dir = self.inner.deps.recordings_dir.as_ref()?;
        let safe: String = agent
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{call_id}-agent-{safe}.wav"));
        match CallRecorder::create(&path) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, path = %path.display(), "agent leg not recorded");
                None
            }
        }
    }
}

enum QueueOutcome {
    Done(TransferOutcome),
    Overflow,
}

/// Who asked for a hand-off, beyond the [`TransferRequest`] itself.
#[derive(Debug, Clone, Default)]
pub struct TransferOrder {
    /// The dashboard user who took the call over; `None`: the AI.
    pub requested_by: Option<String>,
    /// Ring only this agent (a supervisor's "to agent" or "to me").
    pub agent: Option<String>,
    /// The call's phase for supervisor commands: set to `Waiting` here and
    /// to `WithAgent` once the caller is bridged.
    pub phase: Option<PhaseHandle>,
    /// The caller's SIP call, for blind transfers by REFER; `None` (e.g. a
    /// WebRTC call) makes REFER queues bridge instead.
    pub caller: Option<CallKey>,
    /// Blind-transfer the caller here by REFER first (a dialplan's
    /// `transfer = { uri = ... }`); bridged in the queue when refused.
    pub refer_to: Option<String>,
}

/// The hand-off's record, written once when it ends: by [`Self::finish`]
/// with its outcome, or on drop (the call ended underneath the hand-off:
/// the caller hung up, a supervisor hung up, the engine shut down).
struct TransferTrack {
    store: StoreHandle,
    record: Option<TransferRecord>,
    phase: Option<PhaseHandle>,
}

impl TransferTrack {
    fn new(log: &CallLog<'_>, request: &TransferRequest, order: &TransferOrder) -> TransferTrack {
        if let Some(phase) = &order.phase {
            phase.set(CallPhase::Waiting);
        }
        TransferTrack {
            store: log.store.clone(),
            phase: order.phase.clone(),
            record: Some(TransferRecord {
                call_id: log.call_id.to_owned(),
                requested_at: Utc::now(),
                requested_by: order.requested_by.clone().unwrap_or_else(|| "ai".into()),
                reason: request.reason.as_str().to_owned(),
                queue: None,
                agent: order.agent.clone(),
                answered_at: None,
                ended_at: None,
                outcome: String::new(),
            }),
        }
    }

    fn set_queue(&mut self, queue: &str) {
        if let Some(record) = &mut self.record {
            record.queue = Some(queue.to_owned());
        }
    }

    fn set_agent(&mut self, agent: &str) {
        if let Some(record) = &mut self.record {
            record.agent = Some(agent.to_owned());
        }
    }

    /// The caller and `agent` are connected.
    fn answered(&mut self, agent: &str) {
        if let Some(phase) = &self.phase {
            phase.set(CallPhase::WithAgent);
        }
        if let Some(record) = &mut self.record {
            record.agent = Some(agent.to_owned());
            record.answered_at = Some(Utc::now());
        }
    }

    async fn finish(mut self, outcome: &TransferOutcome) {
        if let Some(record) = self.record.take() {
            self.store
                .transfer(closed(record, Some(outcome), false))
                .await;
        }
    }
}

impl Drop for TransferTrack {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        // Dropped while the call goes on (not ending): only a supervisor
        // re-targeting the caller does that.
        let retargeted = self
            .phase
            .as_ref()
            .is_some_and(|p| p.get() != CallPhase::Ending);
        // Drop cannot await the store; a task writes the record.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move { store.transfer(closed(record, None, retargeted)).await });
        }
    }
}

/// `record` with its end: `outcome` as stored, or — for a hand-off cut off
/// from outside — `completed` when the caller had reached an agent,
/// `retargeted` when a supervisor sent the waiting caller elsewhere, and
/// `caller_gone` otherwise (the call ended: the caller or a supervisor hung
/// up; the call's record says which). A caller who talked with an agent
/// was helped, whichever side ended it.
fn closed(
    mut record: TransferRecord,
    outcome: Option<&TransferOutcome>,
    retargeted: bool,
) -> TransferRecord {
    let talked = record.answered_at.is_some();
    record.outcome = match outcome {
        Some(TransferOutcome::Completed { .. }) => "completed",
        Some(TransferOutcome::Referred) => "referred",
        Some(TransferOutcome::NoAgent { .. }) => "no_agent",
        Some(TransferOutcome::NotConfigured) => "not_configured",
        Some(TransferOutcome::CallerGone) | None if talked => "completed",
        None if retargeted => "retargeted",
        Some(TransferOutcome::CallerGone) | None => "caller_gone",
    }
    .to_owned();
    record.ended_at = Some(Utc::now());
    record
}

enum Attempt {
    Connected(TransferOutcome),
    CallerGone,
    /// These agents were tried and did not take the call.
    NoAnswer(Vec<String>),
}

/// A caller's place in a queue; leaving it is automatic, even when the
/// transfer future is dropped.
struct Seat<'q> {
    queue: &'q QueueRuntime,
    ticket: u64,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.queue.waiting.lock().leave(self.ticket);
    }
}

struct Leg {
    agent: String,
    key: CallKey,
    stream: Option<MediaStream>,
    /// Still ringing or connected: must be hung up when we give up.
    live: bool,
    /// The answered leg's media, for the phone's re-INVITEs.
    media: Arc<Mutex<Option<AgentLegMedia>>>,
}

/// Cleans up an attempt however it ends: live legs are hung up (CANCEL
/// while ringing, BYE once answered) and claimed agents freed.
struct LegGuard {
    inner: Arc<Inner>,
    legs: Vec<Leg>,
    claimed: Vec<String>,
    on_call: Option<String>,
}

impl LegGuard {
    fn new(inner: Arc<Inner>) -> LegGuard {
        LegGuard {
            inner,
            legs: Vec::new(),
            claimed: Vec::new(),
            on_call: None,
        }
    }
}

impl Drop for LegGuard {
    fn drop(&mut self) {
        for leg in &self.legs {
            if leg.live {
                self.inner.deps.sip.hangup(leg.key);
            }
            // A late re-INVITE must not play hold music to a caller who
            // has left the bridge.
            leg.media.lock().take();
        }
        let inner = self.inner.clone();
        let claimed = std::mem::take(&mut self.claimed);
        let on_call = self.on_call.take();
        let wrap_up = Duration::from_secs(inner.section.wrap_up_secs);
        // Directory calls may be I/O; Drop cannot await, so a task finishes.
        tokio::spawn(async move {
            for agent in &claimed {
                if Some(agent) != on_call.as_ref() {
                    inner
                        .directory
                        .transition(agent, AgentState::Ringing, AgentState::Available)
                        .await;
                }
            }
            inner.agent_freed.notify_waiters();
            if let Some(agent) = on_call {
                inner
                    .directory
                    .transition(&agent, AgentState::OnCall, AgentState::WrapUp)
                    .await;
                tokio::time::sleep(wrap_up).await;
                inner
                    .directory
                    .transition(&agent, AgentState::WrapUp, AgentState::Available)
                    .await;
                inner.agent_freed.notify_waiters();
            }
        });
    }
}

/// Forwards an agent leg's events to the attempt, answering the phone's
/// re-INVITEs itself so that hold and resume work during the bridge.
async fn forward_leg_events(
    index: usize,
    mut events: mpsc::Receiver<OutboundEvent>,
    merged: mpsc::Sender<(usize, OutboundEvent)>,
    reoffers: LegReoffers,
) {
    while let Some(event) = events.recv().await {
        if let OutboundEvent::ReOffer { call, sdp } = &event {
            reoffers.answer(*call, sdp.as_deref());
            continue;
        }
        if merged.send((index, event)).await.is_err() {
            return;
        }
    }
}

/// A connected agent leg's media, as re-INVITEs change it.
struct AgentLegMedia {
    agent: MediaHandle,
    /// The caller's media: hears hold music while the agent's phone holds.
    caller: MediaHandle,
    current: media::Negotiated,
    hold_music: Arc<[i16]>,
    /// Frontdoor's hold music is queued for the caller now.
    playing_hold: bool,
    /// SDP `o=` version of our last answer.
    version: u64,
}

/// Longest hold music queued at once for a caller the agent holds; the
/// agent resuming (or the call ending) flushes it.
const AGENT_HOLD_MUSIC: Duration = Duration::from_secs(30 * 60);

/// What answering an agent phone's re-INVITE needs.
struct LegReoffers {
    sip: SipHandle,
    caps: MediaCapabilities,
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
    media: Arc<Mutex<Option<AgentLegMedia>>>,
    /// Holds and resumes go into the call's record.
    store: StoreHandle,
    call_id: String,
}

impl LegReoffers {
    /// Answers an agent phone's re-INVITE or UPDATE (RFC 3264 hold and
    /// resume, a new address or codec). The caller hears the agent's own
    /// hold audio when the phone sends some (`sendonly`), and Frontdoor's
    /// hold music when it sends nothing (`inactive`); resuming stops it
    /// and drops the caller audio queued for the agent meanwhile.
    fn answer(&self, call: CallKey, offer: Option<&str>) {
        let mut slot = self.media.lock();
        let Some(leg) = slot.as_mut() else {
            // Answered but not yet bridged (or already over): the phone
            // retries a 491 after a moment.
            self.sip.reject_reoffer(call, 491);
            return;
        };
        let next = match offer {
            // An offerless re-INVITE asks for our offer; the current
            // session keeps the call as it is.
            None => leg.current.clone(),
            Some(offer) => match media::sdp::negotiate(offer, &self.caps) {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "agent's re-offer refused; the bridge goes on as before");
                    self.sip.reject_reoffer(call, e.sip_status());
                    return;
                }
            },
        };
        leg.version += 1;
        self.sip.answer_reoffer(
            call,
            media::sdp::build_answer(
                &next,
                self.local_ip,
                self.local_port,
                self.session_id,
                leg.version,
            ),
        );
        let was_held = !leg.current.direction.sends();
        let held = !next.direction.sends();
        let phone_silent = !next.direction.receives();
        leg.agent.update(next.clone());
        if held != was_held {
            let (kind, what) = if held {
                ("agent_hold", "agent put the caller on hold")
            } else {
                ("agent_resume", "agent resumed the caller")
            };
            info!(direction = ?next.direction, "{what}");
            let (store, call_id) = (self.store.clone(), self.call_id.clone());
            let detail = format!("{:?}", next.direction);
            // Called with the leg's lock held: the record is written aside.
            tokio::spawn(async move { store.call_event(&call_id, kind, detail).await });
        }
        if was_held && !held {
            leg.agent.flush();
        }
        if phone_silent && !leg.playing_hold && !leg.hold_music.is_empty() {
            let repeats =
                (AGENT_HOLD_MUSIC.as_millis() as usize * 8 / leg.hold_music.len()).clamp(1, 1000);
            leg.caller.flush();
            for _ in 0..repeats {
                leg.caller.play(leg.hold_music.clone());
            }
            leg.playing_hold = true;
        } else if !phone_silent && leg.playing_hold {
            leg.caller.flush();
            leg.playing_hold = false;
        }
        leg.current = next;
    }
}

enum BridgeEnd {
    AgentHungUp,
    CallerGone,
}

/// How far back the echo reference of a bridged direction looks: the far
/// phone's echo path plus jitter (as the assistant's echo gate).
const BRIDGE_ECHO_TAIL: Duration = Duration::from_millis(1000);

/// Passes audio and DTMF both ways until one side leaves. Each stream's
/// recorder already writes what it receives and what it sends, so both legs
/// are recorded with both voices. With `ears`, each side's speech is also
/// transcribed (dropping them at the end finishes the last utterances).
async fn bridge(
    caller: &mut CallMedia,
    agent: &mut CallMedia,
    legs: &mut mpsc::Receiver<(usize, OutboundEvent)>,
    winner: usize,
    mut ears: Option<BridgeEars>,
) -> BridgeEnd {
    loop {
        tokio::select! {
            event = caller.events.recv() => match event {
                Some(MediaEvent::Audio(frame)) => {
                    agent.handle.play(frame_to_samples(&frame));
                    if let Some(ears) = ears.as_mut() {
                        let echo = caller.handle.recent_sent_peak(BRIDGE_ECHO_TAIL);
                        ears.hear(Speaker::Caller, &frame, echo);
                    }
                }
                Some(MediaEvent::Dtmf { digit, duration_ms }) => {
                    agent.handle.send_dtmf(digit, Duration::from_millis(duration_ms.into()));
                }
                Some(MediaEvent::PlaybackFinished) => {}
                Some(MediaEvent::Inactive { .. }) | None => return BridgeEnd::CallerGone,
            },
            event = agent.events.recv() => match event {
                Some(MediaEvent::Audio(frame)) => {
                    caller.handle.play(frame_to_samples(&frame));
                    if let Some(ears) = ears.as_mut() {
                        let echo = agent.handle.recent_sent_peak(BRIDGE_ECHO_TAIL);
                        ears.hear(Speaker::Agent, &frame, echo);
                    }
                }
                Some(MediaEvent::Dtmf { .. }) | Some(MediaEvent::PlaybackFinished) => {}
                // The agent's media died: treat it as the agent leaving.
                Some(MediaEvent::Inactive { .. }) | None => return BridgeEnd::AgentHungUp,
            },
            event = legs.recv() => match event {
                Some((i, OutboundEvent::RemoteHangup { .. } | OutboundEvent::HangupComplete { .. })) if i == winner => {
                    return BridgeEnd::AgentHungUp;
                }
                None => return BridgeEnd::AgentHungUp,
                Some(_) => {}
            },
        }
    }
}

/// One frame as a playable chunk: the media API takes shared slices, so a
/// frame costs one small allocation (50 a second per direction).
fn frame_to_samples(frame: &[i16; FRAME_SAMPLES]) -> Arc<[i16]> {
    Arc::from(&frame[..])
}

/// What the caller hears while waiting: hold audio on a loop, interrupted
/// by announcements.
struct Hold {
    music: Arc<[i16]>,
    active: bool,
}

impl Hold {
    fn new(music: Arc<[i16]>) -> Hold {
        Hold {
            music,
            active: false,
        }
    }

    fn resume(&mut self, call: &CallMedia) {
        self.active = true;
        if !call.handle.is_playing() {
            call.handle.play(self.music.clone());
        }
    }

    fn announce(&mut self, call: &CallMedia, audio: Option<Arc<[i16]>>) {
        if let Some(audio) = audio {
            call.handle.flush();
            call.handle.play(audio);
        }
    }

    fn stop(&mut self, call: &CallMedia) {
        self.active = false;
        call.handle.flush();
    }

    /// Keeps the music going; false when the caller is gone.
    fn on_caller_event(&mut self, call: &CallMedia, event: Option<MediaEvent>) -> bool {
        match event {
            None | Some(MediaEvent::Inactive { .. }) => false,
            Some(MediaEvent::PlaybackFinished) => {
                if self.active {
                    call.handle.play(self.music.clone());
                }
                true
            }
            Some(_) => true,
        }
    }
}

/// Plays `audio` and waits until it has been heard (or the caller left),
/// so that whatever the dialplan plays next cannot cut it short.
async fn play_to_the_end(call: &mut CallMedia, audio: Arc<[i16]>) {
    let length = Duration::from_secs_f64(audio.len() as f64 / f64::from(media::SAMPLE_RATE));
    call.handle.flush();
    call.handle.play(audio);
    let deadline = tokio::time::sleep(length + Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            event = call.events.recv() => match event {
                Some(MediaEvent::PlaybackFinished)
                | Some(MediaEvent::Inactive { .. })
                | None => return,
                Some(_) => {}
            },
        }
    }
}

/// Where opening hours send a transfer that starts at a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HoursRoute {
    /// Wait in `queue`, which is open; `passed` are the closed queues
    /// skipped on the way through the overflow chain, in order.
    Open { passed: Vec<String>, queue: String },
    /// Every queue in the chain is closed but the caller is at risk: they
    /// wait in the first queue anyway, for any agent who is available.
    RiskOutOfHours { passed: Vec<String>, queue: String },
    /// Every queue in the chain is closed and the call is routine: the
    /// caller hears `message_from`'s closed message and is not queued.
    Closed {
        passed: Vec<String>,
        message_from: String,
    },
}

/// The opening-hours decision at `now` for a transfer starting at `first`:
/// the first open queue along the overflow chain. Hours never turn a risk
/// caller away. Pure, so that it can be tested at any time of the week.
fn route_by_hours(
    queues: &HashMap<String, QueueRuntime>,
    first: &str,
    risk: bool,
    now: NaiveDateTime,
) -> HoursRoute {
    let mut passed: Vec<String> = Vec::new();
    if !queues.contains_key(first) {
        // Not a queue: the caller's transfer reports NotConfigured as before.
        return HoursRoute::Open {
            passed,
            queue: first.to_owned(),
        };
    }
    let mut current = first;
    // Each queue at most once, so an overflow loop (a -> b -> a) ends.
    while let Some(queue) = queues.get(current)
        && !passed.iter().any(|p| p == current)
    {
        if queue.hours.as_ref().is_none_or(|hours| hours.is_open(now)) {
            return HoursRoute::Open {
                passed,
                queue: current.to_owned(),
            };
        }
        passed.push(current.to_owned());
        match queue.spec.overflow.as_deref() {
            Some(next) => current = next,
            None => break,
        }
    }
    if risk {
        HoursRoute::RiskOutOfHours {
            passed,
            queue: first.to_owned(),
        }
    } else {
        HoursRoute::Closed {
            passed,
            message_from: first.to_owned(),
        }
    }
}

/// One `handoff_closed` entry per closed queue passed over, naming the
/// queue and where the call went next (`open` after the last one).
async fn audit_closed_hops(log: &CallLog<'_>, passed: &[String], open: Option<&str>) {
    for (i, closed) in passed.iter().enumerate() {
        let next = passed.get(i + 1).map(String::as_str).or(open);
        if let Some(next) = next {
            audit(log, "handoff_closed", format!("{closed} -> {next}")).await;
        }
    }
}

/// A soft 425 Hz pip every three seconds, so a caller on hold without
/// configured music never mistakes silence for a dropped call.
fn default_hold_tone() -> Arc<[i16]> {
    let rate = media::SAMPLE_RATE as usize;
    let mut samples = vec![0i16; rate * 3];
    for (i, sample) in samples.iter_mut().take(rate * 4 / 10).enumerate() {
        let t = i as f32 / rate as f32;
        *sample = ((2.0 * std::f32::consts::PI * 425.0 * t).sin() * 3000.0) as i16;
    }
    Arc::from(samples)
}

fn summary_text(request: &TransferRequest) -> String {
    let reason = match request.reason {
        TransferReason::Emergency => "an emergency",
        TransferReason::Distress => "a caller in distress",
        TransferReason::Safeguarding => "a safeguarding concern",
        TransferReason::HumanRequest => "a caller who asked for a person",
        TransferReason::Complexity => "a caller the assistant could not help",
        TransferReason::Supervisor => "a call a supervisor took over",
    };
    let mut text = format!("Frontdoor transfer: {reason}. ");
    text.extend(request.summary.chars().take(MAX_SUMMARY_CHARS));
    text.push_str(" Connecting you now.");
    text
}

/// RFC 3261 Priority header: phones can show or ring differently.
fn sip_priority(request: &TransferRequest) -> String {
    match (request.reason, request.priority) {
        (TransferReason::Emergency, _) => "emergency",
        (_, Priority::Urgent) => "urgent",
        _ => "normal",
    }
    .to_owned()
}

fn publish_state(log: &CallLog<'_>, state: &str) {
    log.events.publish(CallEvent::State {
        call_id: log.call_id.to_string(),
        state: state.to_string(),
        at: Utc::now(),
    });
}

async fn audit(log: &CallLog<'_>, action: &str, detail: String) {
    log.audit_as("system", action, &detail).await
}

/// An external agent's configured `sip:` URI with an IP literal host.
fn fixed_contact(uri: &str) -> Option<AgentContact> {
    let parsed = Uri::parse(uri).ok()?;
    let addr = parsed.socket_addr(5060)?;
    Some(contact_at(uri, &parsed, addr))
}

fn contact_at(uri: &str, parsed: &Uri, addr: SocketAddr) -> AgentContact {
    let transport = match parsed.param("transport").and_then(|t| t.as_deref()) {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        _ => Transport::Udp,
    };
    AgentContact {
        uri: uri.to_owned(),
        destination: Peer {
            transport,
            addr,
            connection: None,
        },
    }
}

/// How often an agent's host name is looked up again: a PBX can move.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// How soon a name that did not resolve is tried again.
const RESOLVE_RETRY: Duration = Duration::from_secs(10);

/// Keeps an external agent named by host (`sip:2000@pbx.council.local`)
/// reachable: looks the name up with the system resolver (hosts file, DNS
/// A/AAAA; SRV and NAPTR of RFC 3263 are not consulted, so give the port
/// when it is not 5060), makes the agent available once it resolves and
/// follows address changes. A failed lookup after a good one keeps the
/// last address: a DNS outage must not take agents away from callers.
/// Ends with the hand-off service (the directory is gone).
async fn resolve_external_agent(
    directory: std::sync::Weak<InMemoryDirectory>,
    agent: String,
    uri: String,
    ipv4: bool,
) {
    let Ok(parsed) = Uri::parse(&uri) else {
        return;
    };
    let port = parsed.port.unwrap_or(5060);
    let mut known: Option<SocketAddr> = None;
    loop {
        let found = match tokio::net::lookup_host((parsed.host.as_str(), port)).await {
            // Our SIP socket speaks one address family: prefer it.
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                addrs
                    .iter()
                    .find(|a| a.is_ipv4() == ipv4)
                    .or(addrs.first())
                    .copied()
                    .ok_or_else(|| "no addresses".to_owned())
            }
            Err(error) => Err(error.to_string()),
        };
        let Some(directory) = directory.upgrade() else {
            return;
        };
        let wait = match found {
            Ok(addr) => {
                if known != Some(addr) {
                    info!(agent = %agent, host = %parsed.host, %addr, "agent's host resolved");
                    directory.set_external_contact(&agent, contact_at(&uri, &parsed, addr));
                    known = Some(addr);
                }
                RESOLVE_EVERY
            }
            Err(reason) => {
                match known {
                    None => warn!(
                        agent = %agent, host = %parsed.host, %reason,
                        "agent's host does not resolve; the agent stays offline until it does"
                    ),
                    Some(addr) => warn!(
                        agent = %agent, host = %parsed.host, %reason, %addr,
                        "agent's host does not resolve now; keeping its last address"
                    ),
                }
                RESOLVE_RETRY
            }
        };
        drop(directory);
        tokio::time::sleep(wait).await;
    }
}

/// Where a registered phone is reached: its Contact when that is the
/// address it sent from; otherwise (NAT, TCP) the address it sent from.
fn registered_contact(contact: &Uri, source: Peer) -> AgentContact {
    let destination = match contact.socket_addr(5060) {
        Some(addr) if source.transport == Transport::Udp && addr.ip() == source.addr.ip() => {
            Peer::udp(addr)
        }
        _ => source,
    };
    AgentContact {
        uri: contact.as_str().to_owned(),
        destination,
    }
}

async fn follow_registrations(
    inner: std::sync::Weak<Inner>,
    mut events: tokio::sync::broadcast::Receiver<RegistrationEvent>,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "registration events missed; phones re-register on their own"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match event {
            RegistrationEvent::Registered {
                user,
                contact,
                source,
                ..
            } => {
                inner
                    .directory
                    .registered(&user, registered_contact(&contact, source))
                    .await;
                inner.agent_freed.notify_waiters();
            }
            RegistrationEvent::Unregistered { user, reason } => {
                info!(agent = %user, ?reason, "agent offline");
                inner.directory.unregistered(&user).await;
            }
            RegistrationEvent::Refused { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_contact_prefers_source_behind_nat() {
        let source = Peer::udp("203.0.113.5:40000".parse().unwrap());
        let private = Uri::parse("sip:a1@10.0.0.5:5060").unwrap();
        assert_eq!(registered_contact(&private, source).destination, source);
        let direct = Uri::parse("sip:a1@203.0.113.5:5062").unwrap();
        assert_eq!(
            registered_contact(&direct, source).destination.addr,
            "203.0.113.5:5062".parse().unwrap()
        );
    }

    #[test]
    fn summary_is_bounded_and_names_the_reason() {
        let request = TransferRequest {
            call_id: "c".into(),
            reason: TransferReason::Distress,
            priority: Priority::Urgent,
            queue: None,
            summary: "x".repeat(10_000),
            transcript: vec![],
            safety_message: None,
        };
        let text = summary_text(&request);
        assert!(text.starts_with("Frontdoor transfer: a caller in distress."));
        assert!(text.len() < MAX_SUMMARY_CHARS + 100);
        assert!(request.is_risk());
        assert_eq!(sip_priority(&request), "urgent");
    }

    #[test]
    fn transfer_records_say_how_the_hand_off_ended() {
        let open = TransferRecord {
            call_id: "c".into(),
            requested_at: Utc::now(),
            requested_by: "ai".into(),
            reason: "distress".into(),
            queue: Some("general".into()),
            agent: None,
            answered_at: None,
            ended_at: None,
            outcome: String::new(),
        };
        let talked = TransferRecord {
            answered_at: Some(Utc::now()),
            agent: Some("a1".into()),
            ..open.clone()
        };
        let outcome = |record: &TransferRecord, o: Option<&TransferOutcome>, moved: bool| {
            let closed = closed(record.clone(), o, moved);
            assert!(closed.ended_at.is_some());
            closed.outcome
        };
        let waited = TransferOutcome::NoAgent {
            waited: Duration::from_secs(1),
        };
        assert_eq!(outcome(&open, Some(&waited), false), "no_agent");
        assert_eq!(
            outcome(&open, Some(&TransferOutcome::Referred), false),
            "referred"
        );
        assert_eq!(
            outcome(&open, Some(&TransferOutcome::NotConfigured), false),
            "not_configured"
        );
        assert_eq!(
            outcome(&open, Some(&TransferOutcome::CallerGone), false),
            "caller_gone"
        );
        assert_eq!(outcome(&open, None, false), "caller_gone");
        assert_eq!(outcome(&open, None, true), "retargeted");
        // Once bridged, however it ends, the caller was helped.
        assert_eq!(outcome(&talked, None, false), "completed");
        assert_eq!(
            outcome(&talked, Some(&TransferOutcome::CallerGone), false),
            "completed"
        );
    }

    #[test]
    fn hold_tone_is_audible_and_bounded() {
        let tone = default_hold_tone();
        assert_eq!(tone.len(), 24_000);
        assert!(tone.iter().any(|s| s.unsigned_abs() > 2000));
        assert!(
            fixed_contact("sip:2000@192.0.2.40:5070;transport=tcp")
                .is_some_and(|c| c.destination.transport == Transport::Tcp)
        );
        assert!(fixed_contact("sip:2000@pbx.example").is_none());
    }

    #[tokio::test]
    async fn an_agent_named_by_host_becomes_available_once_the_name_resolves() {
        let directory = Arc::new(InMemoryDirectory::new());
        directory.add_external_agent("pbx");
        directory.add_external_agent("nowhere");
        // A phone registering under an external agent's name never binds.
        directory
            .registered("pbx", fixed_contact("sip:x@192.0.2.9").unwrap())
            .await;
        assert_eq!(directory.state("pbx"), Some(AgentState::Offline));
        tokio::spawn(resolve_external_agent(
            Arc::downgrade(&directory),
            "pbx".into(),
            "sip:2000@localhost:5071;transport=tcp".into(),
            true,
        ));
        tokio::spawn(resolve_external_agent(
            Arc::downgrade(&directory),
            "nowhere".into(),
            "sip:2000@no-such-host.invalid".into(),
            true,
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while directory.state("pbx") != Some(AgentState::Available) {
            assert!(Instant::now() < deadline, "localhost never resolved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let statuses = directory.statuses(&["pbx".into(), "nowhere".into()]).await;
        let contact = statuses[0].contact.clone().expect("a contact");
        assert_eq!(contact.destination.addr, "127.0.0.1:5071".parse().unwrap());
        assert_eq!(contact.destination.transport, Transport::Tcp);
        assert_eq!(statuses[1].state, AgentState::Offline);
    }

    /// Queues as `with_directory` builds them, from `[handoff]` TOML.
    fn queues_from(text: &str) -> HashMap<String, QueueRuntime> {
        let section: HandoffSection = toml::from_str(text).unwrap();
        section.validate().unwrap();
        section
            .queue
            .iter()
            .map(|spec| {
                let runtime = QueueRuntime {
                    spec: spec.clone(),
                    hours: spec.opening_hours().unwrap(),
                    waiting: Mutex::new(WaitingList::default()),
                    cursor: Mutex::new(0),
                    hold: default_hold_tone(),
                };
                (spec.name.clone(), runtime)
            })
            .collect()
    }

    /// 23 November 2026 is a Monday; 29th a Sunday.
    fn at(day: u32, hour: u32, minute: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 11, day)
            .and_then(|d| d.and_hms_opt(hour, minute, 0))
            .unwrap()
    }

    const OFFICE_AND_EVENING: &str = r#"
[[agent]]
id = "a"
password = "p"
[[queue]]
name = "housing"
members = ["a"]
hours = ["mon-fri 08:30-17:00"]
overflow = "evening"
[[queue]]
name = "evening"
members = ["a"]
hours = ["mon-fri 17:00-22:00"]
[[queue]]
name = "always"
members = ["a"]
"#;

    fn open(passed: &[&str], queue: &str) -> HoursRoute {
        HoursRoute::Open {
            passed: passed.iter().map(|p| p.to_string()).collect(),
            queue: queue.into(),
        }
    }

    #[test]
    fn open_queue_serves_and_closed_queue_overflows_to_an_open_one() {
        let queues = queues_from(OFFICE_AND_EVENING);
        assert_eq!(
            route_by_hours(&queues, "housing", false, at(23, 9, 0)),
            open(&[], "housing")
        );
        assert_eq!(
            route_by_hours(&queues, "housing", false, at(23, 18, 0)),
            open(&["housing"], "evening")
        );
        // No hours: always open, even on Sunday night.
        assert_eq!(
            route_by_hours(&queues, "always", false, at(29, 3, 0)),
            open(&[], "always")
        );
        // Not a queue: left for the transfer to report as not configured.
        assert_eq!(
            route_by_hours(&queues, "nope", false, at(29, 3, 0)),
            open(&[], "nope")
        );
    }

    #[test]
    fn routine_caller_is_turned_away_when_the_whole_chain_is_closed() {
        let queues = queues_from(OFFICE_AND_EVENING);
        assert_eq!(
            route_by_hours(&queues, "housing", false, at(29, 10, 0)),
            HoursRoute::Closed {
                passed: vec!["housing".into(), "evening".into()],
                message_from: "housing".into(),
            }
        );
        assert_eq!(
            route_by_hours(&queues, "evening", false, at(23, 9, 0)),
            HoursRoute::Closed {
                passed: vec!["evening".into()],
                message_from: "evening".into(),
            }
        );
    }

    #[test]
    fn risk_caller_is_never_turned_away_by_hours() {
        let queues = queues_from(OFFICE_AND_EVENING);
        assert_eq!(
            route_by_hours(&queues, "housing", true, at(29, 10, 0)),
            HoursRoute::RiskOutOfHours {
                passed: vec!["housing".into(), "evening".into()],
                queue: "housing".into(),
            }
        );
        // An open overflow still takes a risk caller, like a routine one.
        assert_eq!(
            route_by_hours(&queues, "housing", true, at(23, 18, 0)),
            open(&["housing"], "evening")
        );
    }

    #[test]
    fn overflow_loop_of_closed_queues_ends() {
        let queues = queues_from(
            r#"
[[agent]]
id = "a"
password = "p"
[[queue]]
name = "x"
members = ["a"]
hours = ["sat 09:00-10:00"]
overflow = "y"
[[queue]]
name = "y"
members = ["a"]
hours = ["sun 09:00-10:00"]
overflow = "x"
"#,
        );
        assert_eq!(
            route_by_hours(&queues, "x", false, at(23, 9, 30)),
            HoursRoute::Closed {
                passed: vec!["x".into(), "y".into()],
                message_from: "x".into(),
            }
        );
        assert_eq!(
            route_by_hours(&queues, "x", false, at(29, 9, 30)),
            open(&["x"], "y")
        );
    }
}
