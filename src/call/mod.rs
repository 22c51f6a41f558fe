//! What a call looks like to everything above signalling: audio in and out,
//! DTMF, and playback progress — no SIP. The SIP engine (and later WebRTC)
//! builds a [`CallMedia`] and hands it to [`run_actions`]; hang-ups, holds and
//! re-INVITEs stay in the signalling layer that owns the call.

pub mod assistant;
pub mod listener;
pub mod transcriber;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::answer::{Priority, TransferReason};
use crate::control::{CallPhase, PhaseHandle, TakeOverTarget};
use crate::dialplan::{Action, TransferAction};
use crate::events::CallEvent;
use crate::handoff::{TransferOrder, TransferOutcome, TransferRequest};
use crate::media::{MediaEvent, MediaHandle};

/// What the caller hears when a supervisor takes the call over (cached at
/// start-up with the other fixed prompts).
pub const TAKEOVER_LINE: &str = "I'm putting you through to a colleague now.";
/// What a caller hears when a dialplan transfer finds nobody to take the
/// call and the route gives no prompt of its own.
pub const UNAVAILABLE_LINE: &str =
    "I'm sorry, nobody can take your call just now. Please try again later.";
/// One call's media, independent of how the call arrived.
pub struct CallMedia {
    pub handle: MediaHandle,
    pub events: mpsc::Receiver<MediaEvent>,
}

/// Why the dialplan stopped running on a call.
#[derive(Debug)]
pub enum ActionsOutcome {
    /// The actions ran to the end (or reached `hangup`): Frontdoor hangs up.
    Finished,
    /// The assistant hands the caller to a person (handled by
    /// [`run_actions`] through the hand-off service; never seen by callers
    /// of `run_actions`).
    Transfer(Box<crate::handoff::TransferRequest>),
    /// No RTP arrived for this long: the call is dead.
    MediaInactive(Duration),
    /// The media stream ended underneath us.
    MediaClosed,
}

/// What happened while the actions ran, for the call record.
#[derive(Debug, Default, Clone)]
pub struct ActionLog {
    pub dtmf: String,
    pub prompts_played: u32,
}

/// What actions may need beyond the call's media.
pub struct ActionContext<'a> {
    /// Loaded when a dialplan route uses the assistant.
    pub assistant: Option<&'a assistant::AssistantServices>,
    /// Agents and queues, when configured.
    pub handoff: Option<&'a crate::handoff::Handoff>,
    pub log: assistant::CallLog<'a>,
    /// Supervisor take-overs, when the call is registered for live control.
    pub supervisor: Option<Supervision<'a>>,
    /// The caller's SIP call, for blind transfers (REFER); `None` where
    /// the call cannot be referred.
    pub caller: Option<crate::sip::CallKey>,
}

/// A supervisor's request to take the call over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// The dashboard user.
    pub by: String,
    pub target: TakeOverTarget,
}

/// How take-overs reach [`run_actions`]. The call task owns the command
/// channel (it handles hang-ups itself, in every state) and forwards
/// take-overs here; the phase tells the dashboard when a take-over cannot
/// apply (the caller is already going to an agent).
pub struct Supervision<'a> {
    /// A tokio mutex because `run_actions` only has `&ActionContext`; it
    /// is never contended (only `run_actions` receives).
    pub takeovers: &'a tokio::sync::Mutex<mpsc::Receiver<TakeOver>>,
    pub phase: &'a PhaseHandle,
}

/// Runs dialplan actions on a call until they finish or the media dies.
/// The signalling layer races this future against caller hang-up and drops it
/// when the caller leaves, so everything here must be cancel-safe.
///
/// A supervisor's take-over interrupts whichever action is running (the
/// assistant, a prompt, a recording): the action's future is dropped, the
/// caller hears [`TAKEOVER_LINE`] and is transferred. When nobody takes
/// the call, the interrupted action starts again, so the caller is never
/// left in silence.
pub async fn run_actions(
    actions: &[Action],
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> ActionsOutcome {
    let mut index = 0;
    while let Some(action) = actions.get(index) {
        let interrupted = {
            let work = run_action(action, media, log, ctx);
            tokio::pin!(work);
            tokio::select! {
                step = &mut work => Err(step),
                takeover = next_takeover(ctx) => Ok(takeover),
            }
        };
        match interrupted {
            Err(Some(outcome)) => return outcome,
            Err(None) => index += 1,
            Ok(takeover) => {
                if let Some(outcome) = take_over(takeover, media, log, ctx).await {
                    return outcome;
                }
            }
        }
    }
    ActionsOutcome::Finished
}

/// One dialplan action; `Some` ends the actions.
async fn run_action(
    action: &Action,
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> Option<ActionsOutcome> {
    match action {
        Action::Assistant(options) => {
            let Some(services) = ctx.assistant else {
                // The engine loads the services whenever a route uses
                // them, so this is a bug, not an operator error.
                tracing::error!("assistant action without loaded speech services");
                return Some(ActionsOutcome::Finished);
            };
            let settings = assistant::AssistantSettings {
                silence_reprompt: options.silence_reprompt,
                max_reprompts: options.max_reprompts,
                handoff_available: ctx.handoff.is_some(),
                ..assistant::AssistantSettings::default()
            };
            loop {
                publish_state(ctx, "assistant");
                let outcome = assistant::run_assistant(services, &settings, media, &ctx.log).await;
                let (ActionsOutcome::Transfer(request), Some(handoff)) = (&outcome, ctx.handoff)
                else {
                    return Some(outcome);
                };
                let safety = request.safety_message.clone();
                // The order moves the phase on (waiting, with agent), so a
                // supervisor can re-target a waiting caller.
                let order = TransferOrder {
                    phase: ctx.supervisor.as_ref().map(|s| s.phase.clone()),
                    caller: ctx.caller,
                    ..TransferOrder::default()
                };
                let transferred = handoff
                    .transfer_as(media, (**request).clone(), &order, &ctx.log, Some(services))
                    .await;
                set_phase(ctx, CallPhase::Dialplan);
                match transferred {
                    TransferOutcome::Completed { .. } | TransferOutcome::Referred => {
                        return Some(ActionsOutcome::Finished);
                    }
                    TransferOutcome::CallerGone => return Some(ActionsOutcome::MediaClosed),
                    // Nobody could take the call: the caller is never
                    // dropped. They hear the safety message and the
                    // assistant stays with them.
                    TransferOutcome::NoAgent { .. } | TransferOutcome::NotConfigured => {
                        if let Some(text) = safety
                            && let Ok(samples) = services.prompts.get_or_synthesize(&text)
                        {
                            media.handle.play(samples);
                        }
                    }
                }
            }
        }
        Action::Play(prompt) => {
            media.handle.play(prompt.samples.clone());
            // Playback reports when its queue drains; the timer is only a
            // guard against a lost event (a prompt's length plus slack).
            let length = Duration::from_millis(prompt.samples.len() as u64 / 8);
            let outcome = wait(
                media,
                log,
                length + Duration::from_secs(2),
                Until::PlaybackFinished,
            )
            .await;
            if outcome.is_none() {
                log.prompts_played += 1;
            }
            outcome
        }
        Action::Transfer(transfer) => dialplan_transfer(transfer, media, log, ctx).await,
        Action::Record { max } => wait(media, log, *max, Until::HashKey).await,
        Action::Pause(d) => wait(media, log, *d, Until::Timeout).await,
        Action::Hangup => Some(ActionsOutcome::Finished),
    }
}

/// A dialplan's `transfer`: the caller goes to the queue, agent or
/// address it names. `None` (the next action runs) when nobody could take
/// the call; the caller is told so first and is never simply dropped.
async fn dialplan_transfer(
    transfer: &TransferAction,
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> Option<ActionsOutcome> {
    let Some(handoff) = ctx.handoff else {
        // `dialplan check` and start-up refuse this, so it only happens
        // with a plan checked against another configuration.
        warn!("dialplan transfer, but no agents or queues are configured");
        ctx.log
            .audit_as(
                "system",
                "handoff_unavailable",
                "dialplan transfer: no agents or queues are configured",
            )
            .await;
        return tell_unavailable(transfer, media, log, ctx).await;
    };
    publish_state(ctx, "transfer");
    let target = match (&transfer.agent, &transfer.refer_to, &transfer.queue) {
        (Some(agent), _, _) => format!("agent {agent}"),
        (None, Some(uri), _) => format!("{uri} (blind)"),
        (None, None, Some(queue)) => format!("queue {queue}"),
        (None, None, None) => "the default queue".to_owned(),
    };
    let mut summary = format!("The dialplan sent the caller to {target}.");
    if !log.dtmf.is_empty() {
        summary.push_str(" Keys pressed: ");
        summary.push_str(&log.dtmf);
        summary.push('.');
    }
    let request = TransferRequest {
        call_id: ctx.log.call_id.to_owned(),
        reason: TransferReason::HumanRequest,
        priority: Priority::Normal,
        queue: transfer.queue.clone(),
        summary,
        transcript: Vec::new(),
        safety_message: None,
    };
    let order = TransferOrder {
        requested_by: Some("dialplan".to_owned()),
        agent: transfer.agent.clone(),
        phase: ctx.supervisor.as_ref().map(|s| s.phase.clone()),
        caller: ctx.caller,
        refer_to: transfer.refer_to.clone(),
    };
    let speech = ctx.assistant.map(|s| s as &dyn crate::handoff::Announcer);
    let outcome = handoff
        .transfer_as(media, request, &order, &ctx.log, speech)
        .await;
    set_phase(ctx, CallPhase::Dialplan);
    match outcome {
        TransferOutcome::Completed { .. } | TransferOutcome::Referred => {
            Some(ActionsOutcome::Finished)
        }
        TransferOutcome::CallerGone => Some(ActionsOutcome::MediaClosed),
        TransferOutcome::NoAgent { .. } | TransferOutcome::NotConfigured => {
            tell_unavailable(transfer, media, log, ctx).await
        }
    }
}

/// What a caller hears when a dialplan transfer finds nobody: the
/// action's own prompt, else the assistant's voice, else the special
/// information tone every telephone user knows as "this call cannot be
/// completed". Then the dialplan goes on.
async fn tell_unavailable(
    transfer: &TransferAction,
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> Option<ActionsOutcome> {
    let samples = match &transfer.unavailable {
        Some(prompt) => prompt.samples.clone(),
        None => ctx
            .assistant
            .and_then(|s| s.prompts.get_or_synthesize(UNAVAILABLE_LINE).ok())
            .unwrap_or_else(special_information_tone),
    };
    media.handle.flush();
    let length = Duration::from_millis(samples.len() as u64 / 8);
    media.handle.play(samples);
    wait(
        media,
        log,
        length + Duration::from_secs(2),
        Until::PlaybackFinished,
    )
    .await
}

/// The ITU-T E.180 special information tone: 950, 1400 and 1800 Hz,
/// 330 ms each, then a second of silence.
fn special_information_tone() -> Arc<[i16]> {
    let rate = crate::media::SAMPLE_RATE as usize;
    let segment = rate * 330 / 1000;
    let mut samples = Vec::with_capacity(segment * 3 + rate);
    for frequency in [950.0f32, 1400.0, 1800.0] {
        samples.extend((0..segment).map(|i| {
            let t = i as f32 / rate as f32;
            ((2.0 * std::f32::consts::PI * frequency * t).sin() * 6000.0) as i16
        }));
    }
    samples.resize(samples.len() + rate, 0);
    Arc::from(samples)
}

/// The next take-over this call can act on. Pending forever without
/// supervision. A take-over that slipped past the dashboard's phase check
/// (the caller was bridged meanwhile) is dropped here: nothing may cut a
/// caller off from the agent they are talking to.
async fn next_takeover(ctx: &ActionContext<'_>) -> TakeOver {
    let Some(supervision) = &ctx.supervisor else {
        return std::future::pending().await;
    };
    let mut takeovers = supervision.takeovers.lock().await;
    loop {
        let Some(takeover) = takeovers.recv().await else {
            return std::future::pending().await;
        };
        if !matches!(
            supervision.phase.get(),
            CallPhase::Dialplan | CallPhase::Waiting
        ) {
            info!(by = %takeover.by, "take-over ignored: the caller is with an agent");
            continue;
        }
        match refusal(ctx, &takeover.target) {
            None => return takeover,
            Some(why) => {
                warn!(by = %takeover.by, target = ?takeover.target, why, "take-over refused");
                ctx.log
                    .audit_as(&takeover.by, "takeover_refused", why)
                    .await;
            }
        }
    }
}

/// Why `target` cannot be served here, checked before the running action
/// is stopped: an unknown queue or agent must not cost the caller the
/// assistant.
fn refusal(ctx: &ActionContext<'_>, target: &TakeOverTarget) -> Option<&'static str> {
    let Some(handoff) = ctx.handoff else {
        return Some("no agents or queues are configured");
    };
    match target {
        TakeOverTarget::Queue(queue) if !handoff.has_queue(queue) => Some("no such queue"),
        TakeOverTarget::Agent(agent) if !handoff.has_agent(agent) => Some("no such agent"),
        _ => None,
    }
}

/// Carries out a take-over; `None` when nobody took the call and the
/// interrupted action should resume. Another take-over while the caller
/// waits (queued, or an agent's phone ringing) re-targets them.
async fn take_over(
    mut takeover: TakeOver,
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> Option<ActionsOutcome> {
    let handoff = ctx.handoff?;
    set_phase(ctx, CallPhase::Waiting);
    // Whatever the assistant was saying stops; the caller hears why the
    // voice changes before the hold music.
    media.handle.flush();
    if let Some(line) = ctx.assistant.and_then(|s| s.prompts.get(TAKEOVER_LINE)) {
        let length = Duration::from_millis(line.len() as u64 / 8);
        media.handle.play(line);
        if let Some(outcome) = wait(
            media,
            log,
            length + Duration::from_secs(2),
            Until::PlaybackFinished,
        )
        .await
        {
            return Some(outcome);
        }
    }
    let speech = ctx.assistant.map(|s| s as &dyn crate::handoff::Announcer);
    let outcome = loop {
        let (request, order) = takeover_request(ctx, &takeover);
        info!(by = %takeover.by, target = ?takeover.target, "supervisor takes the call over");
        ctx.log
            .audit_as(
                &takeover.by,
                "takeover_transfer",
                &format!("{:?}", takeover.target),
            )
            .await;
        let transfer = handoff.transfer_as(media, request, &order, &ctx.log, speech);
        tokio::pin!(transfer);
        tokio::select! {
            outcome = &mut transfer => break outcome,
            next = next_takeover(ctx) => takeover = next,
        }
    };
    set_phase(ctx, CallPhase::Dialplan);
    match outcome {
        TransferOutcome::Completed { .. } | TransferOutcome::Referred => {
            Some(ActionsOutcome::Finished)
        }
        TransferOutcome::CallerGone => Some(ActionsOutcome::MediaClosed),
        TransferOutcome::NoAgent { .. } | TransferOutcome::NotConfigured => {
            ctx.log
                .audit_as(
                    "system",
                    "takeover_no_agent",
                    "nobody took the call; the dialplan resumes",
                )
                .await;
            // The routine "nobody is free" message was cached at start-up.
            if let Some(services) = ctx.assistant {
                let governance = services.answer.governance();
                if let Some(samples) = services
                    .prompts
                    .get(&governance.safety.no_agent_available_routine)
                {
                    media.handle.flush();
                    media.handle.play(samples);
                }
            }
            None
        }
    }
}

/// The hand-off a take-over asks for: reason `supervisor`, high priority
/// (urgent when the assistant had flagged a risk), the caller's last lines
/// for the agent's summary.
fn takeover_request(
    ctx: &ActionContext<'_>,
    takeover: &TakeOver,
) -> (TransferRequest, TransferOrder) {
    let (lines, risk) = ctx.log.recent.snapshot();
    let (queue, agent) = match &takeover.target {
        TakeOverTarget::Queue(queue) => (Some(queue.clone()), None),
        TakeOverTarget::Agent(agent) => (None, Some(agent.clone())),
    };
    let mut summary = format!("Taken over by supervisor {}.", takeover.by);
    if !lines.is_empty() {
        summary.push_str(" The caller said: ");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                summary.push_str(" … ");
            }
            summary.push_str(line);
        }
    }
    let request = TransferRequest {
        call_id: ctx.log.call_id.to_owned(),
        reason: TransferReason::Supervisor,
        priority: if risk {
            Priority::Urgent
        } else {
            Priority::High
        },
        queue,
        summary,
        transcript: lines.iter().map(|line| format!("caller: {line}")).collect(),
        safety_message: None,
    };
    let order = TransferOrder {
        requested_by: Some(takeover.by.clone()),
        agent,
        phase: ctx.supervisor.as_ref().map(|s| s.phase.clone()),
        caller: ctx.caller,
        refer_to: None,
    };
    (request, order)
}

fn set_phase(ctx: &ActionContext<'_>, phase: CallPhase) {
    if let Some(supervision) = &ctx.supervisor {
        supervision.phase.set(phase);
    }
}

fn publish_state(ctx: &ActionContext<'_>, state: &str) {
    ctx.log.events.publish(CallEvent::State {
        call_id: ctx.log.call_id.to_owned(),
        state: state.to_owned(),
        at: Utc::now(),
    });
}

#[derive(PartialEq)]
enum Until {
    PlaybackFinished,
    /// Callers end a recording with `#`, as on every voicemail system.
    HashKey,
    Timeout,
}

/// Waits for `until` or the timeout; `Some` means the call must stop.
async fn wait(
    media: &mut CallMedia,
    log: &mut ActionLog,
    timeout: Duration,
    until: Until,
) -> Option<ActionsOutcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let event = tokio::select! {
            event = media.events.recv() => event,
            _ = tokio::time::sleep_until(deadline) => return None,
        };
        match event {
            None => return Some(ActionsOutcome::MediaClosed),
            Some(MediaEvent::Audio(_)) => {}
            Some(MediaEvent::PlaybackFinished) => {
                if until == Until::PlaybackFinished {
                    return None;
                }
            }
            Some(MediaEvent::Dtmf { digit, .. }) => {
                if log.dtmf.len() < 64 {
                    log.dtmf.push(digit);
                }
                if until == Until::HashKey && digit == '#' {
                    return None;
                }
            }
            Some(MediaEvent::Inactive { silent_for }) => {
                return Some(ActionsOutcome::MediaInactive(silent_for));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialplan::TransferAction;
    use crate::media::{MediaCapabilities, MediaConfig, MediaStream, PortAllocator};
    use crate::store::{CallStore, SqliteStore, StoreHandle};

    #[test]
    fn the_special_information_tone_is_three_rising_tones_then_silence() {
        let tone = special_information_tone();
        let segment = 8000 * 330 / 1000;
        assert_eq!(tone.len(), segment * 3 + 8000);
        assert!(tone[..segment * 3].iter().any(|s| s.unsigned_abs() > 5000));
        assert!(tone[segment * 3..].iter().all(|s| *s == 0));
    }

    /// A transfer with no hand-off configured tells the caller (the tone
    /// reaches the far end) and the next action runs: never a dropped call.
    #[tokio::test]
    async fn a_transfer_without_hand_off_plays_the_tone_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreHandle::spawn(SqliteStore::open(dir.path()).unwrap());
        let events = crate::events::EventBus::new();
        let redactor = crate::governance::Redactor::none();
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let peer = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let ports = PortAllocator::new(47_300, 47_400);
        let stream = MediaStream::bind(ip, ports.allocate().unwrap(), MediaConfig::default())
            .await
            .unwrap();
        let caps = MediaCapabilities::default();
        let offer =
            crate::media::sdp::build_offer(&caps, ip, peer.local_addr().unwrap().port(), 1, 1);
        let negotiated = crate::media::sdp::negotiate(&offer, &caps).unwrap();
        let (handle, media_events) = stream.start(negotiated, None);
        let mut media = CallMedia {
            handle: handle.clone(),
            events: media_events,
        };
        let ctx = ActionContext {
            assistant: None,
            handoff: None,
            log: assistant::CallLog {
                store: &store,
                events: &events,
                call_id: "c1",
                redactor: &redactor,
                recent: Default::default(),
            },
            supervisor: None,
            caller: None,
        };
        let actions = [
            Action::Transfer(TransferAction {
                queue: Some("general".into()),
                agent: None,
                refer_to: None,
                unavailable: None,
                line: 1,
            }),
            Action::Pause(Duration::from_millis(100)),
        ];
        let mut log = ActionLog::default();
        let outcome = run_actions(&actions, &mut media, &mut log, &ctx).await;
        assert!(matches!(outcome, ActionsOutcome::Finished), "{outcome:?}");
        // About two seconds of tone went out as RTP.
        assert!(handle.stats().packets_sent > 80, "{:?}", handle.stats());
        store.flush().await;
        let audit = SqliteStore::open(dir.path())
            .unwrap()
            .audit_for_call("c1")
            .unwrap();
        assert!(
            audit.iter().any(|a| a.action == "handoff_unavailable"),
            "{audit:?}"
        );
    }
}
