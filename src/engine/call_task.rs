//! One call's life: offer/answer, media, the dialplan's actions, hang-up and
//! the call record. Runs inside a `call` span carrying the call id.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use super::{Shared, media_ip_for};
use crate::call::assistant::CallLog;
use crate::call::{
    ActionContext, ActionLog, ActionsOutcome, CallMedia, Supervision, TakeOver, run_actions,
};
use crate::control::{CallPhase, LiveCall, SupervisorCommand};
use crate::dialplan::Route;
use crate::events::CallEvent;
use crate::media::{self, CallRecorder, Direction, MediaHandle, MediaStream, SdpError};
use crate::sip::{CallKey, IncomingInvite};
use crate::store::{CallEnd, HangupBy, MediaStats, NewCall};

/// Signalling that reaches a call's task.
#[derive(Debug)]
pub enum CallSignal {
    Acked,
    Cancelled,
    RemoteHangup,
    ReOffer(Option<String>),
    HangupComplete(Option<u16>),
    Failed(String),
    /// The engine's shutdown grace period is over.
    Shutdown,
}

/// How the call ended, for the record and the metrics.
struct Ending {
    reason: String,
    by: HangupBy,
    outcome: &'static str,
    /// Frontdoor must send BYE.
    send_bye: bool,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    key: CallKey,
    id: String,
    invite: IncomingInvite,
    dialled: String,
    route: Route,
    mut signals: mpsc::Receiver<CallSignal>,
) {
    let span = info_span!("call", call_id = %id, sip_call_id = %invite.call_id);
    async move {
        info!(from = %invite.from_uri, to = %dialled, route = %route.name, source = %invite.source, "incoming call");
        shared.events.publish(CallEvent::Started {
            call_id: id.clone(),
            caller: invite.from_user.clone().unwrap_or_default(),
            callee: dialled.clone(),
            route: route.name.clone(),
            at: Utc::now(),
        });
        shared
            .store
            .call_started(NewCall {
                id: id.clone(),
                sip_call_id: invite.call_id.clone(),
                caller: invite.from_user.clone().unwrap_or_default(),
                callee: dialled.clone(),
                route: Some(route.name.clone()),
                source: invite.source.to_string(),
                node: shared.settings.node.clone(),
                started_at: Utc::now(),
            })
            .await;

        let (status, ending, stats) = match answer_and_run(&shared, key, &id, &invite, &route, &mut signals).await {
            Ok((ending, stats)) => (Some(200), ending, stats),
            Err(refusal) => {
                shared.sip.reject(key, refusal.status, Some(refusal.reason.clone()), Vec::new());
                shared.metrics.rejected(refusal.metric);
                let ending = Ending {
                    reason: refusal.reason,
                    by: refusal.by,
                    outcome: refusal.outcome,
                    send_bye: false,
                };
                (Some(refusal.status), ending, None)
            }
        };
        info!(reason = %ending.reason, by = ending.by.as_str(), "call ended");
        shared.events.publish(CallEvent::Ended {
            call_id: id.clone(),
            reason: ending.reason.clone(),
            hangup_by: ending.by.as_str().to_string(),
            at: Utc::now(),
        });
        shared.metrics.call_finished(ending.outcome);
        shared
            .store
            .call_ended(
                &id,
                CallEnd {
                    ended_at: Utc::now(),
                    reason: ending.reason,
                    hangup_by: ending.by,
                    sip_status: status,
                    stats,
                },
            )
            .await;
    }
    .instrument(span)
    .await
}

/// Why a call was not answered.
struct Refusal {
    status: u16,
    reason: String,
    metric: &'static str,
    outcome: &'static str,
    by: HangupBy,
}

impl Refusal {
    fn new(status: u16, metric: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            metric,
            outcome: "rejected",
            by: HangupBy::System,
        }
    }
}

async fn answer_and_run(
    shared: &Shared,
    key: CallKey,
    id: &str,
    invite: &IncomingInvite,
    route: &Route,
    signals: &mut mpsc::Receiver<CallSignal>,
) -> Result<(Ending, Option<MediaStats>), Refusal> {
    let settings = &shared.settings;
    let Some(offer) = invite.sdp.as_deref() else {
        // Late offer (INVITE without SDP) is rare on trunks that talk to
        // IVRs; refusing clearly beats a call with no audio.
        return Err(Refusal::new(
            488,
            "no_codec",
            "INVITE without an SDP offer is not supported",
        ));
    };
    let negotiated = media::sdp::negotiate(offer, &settings.caps).map_err(|e| match e {
        SdpError::Malformed(m) => Refusal::new(400, "bad_request", format!("malformed SDP: {m}")),
        SdpError::NoUsableMedia(m) => {
            Refusal::new(488, "no_codec", format!("no usable media: {m}"))
        }
    })?;
    let lease = shared
        .ports
        .allocate()
        .ok_or_else(|| Refusal::new(503, "busy", "no free RTP ports"))?;
    let local_ip = media_ip_for(settings, invite.source);
    let stream = MediaStream::bind(local_ip, lease, settings.media.clone())
        .await
        .map_err(|e| Refusal::new(503, "busy", format!("cannot bind RTP: {e}")))?;
    let local_port = stream.local_rtp_port();

    if !route.ring.is_zero() {
        shared.sip.ringing(key);
        let ring = tokio::time::sleep(route.ring);
        tokio::pin!(ring);
        loop {
            tokio::select! {
                _ = &mut ring => break,
                signal = signals.recv() => match signal {
                    Some(CallSignal::Cancelled) | None => {
                        return Err(Refusal { status: 487, reason: "caller cancelled before answer".into(), metric: "cancelled", outcome: "cancelled", by: HangupBy::Caller });
                    }
                    Some(CallSignal::Shutdown) => return Err(Refusal::new(503, "shutting_down", "engine shut down before answer")),
                    Some(other) => warn!(?other, "signal before answer ignored"),
                }
            }
        }
    }

    let session_id = rand::random::<u32>() as u64;
    let mut sdp_version = 1u64;
    shared.sip.answer(
        key,
        media::sdp::build_answer(&negotiated, local_ip, local_port, session_id, sdp_version),
    );

    let recording = if route.records() {
        let path = settings.recordings_dir.join(format!("{id}.wav"));
        match CallRecorder::create(&path) {
            Ok(r) => Some((r, path)),
            Err(e) => {
                warn!(error = %e, path = %path.display(), "cannot create the recording; the call goes on unrecorded");
                None
            }
        }
    } else {
        None
    };
    let recording_path = recording.as_ref().map(|(_, p)| p.display().to_string());
    shared
        .store
        .call_answered(id, negotiated.codec.encoding_name(), recording_path)
        .await;
    info!(codec = negotiated.codec.encoding_name(), remote = %negotiated.remote_rtp, local_port, "answered");
    shared.events.publish(CallEvent::Answered {
        call_id: id.to_string(),
        codec: negotiated.codec.encoding_name().to_string(),
        at: Utc::now(),
    });

    // Supervisors can act on the call from now on; the registration goes
    // with this function, however it returns.
    let LiveCall {
        commands: mut supervisor_commands,
        listen,
        phase,
        registration: _registration,
    } = shared.live.register(id);
    let (takeover_tx, takeover_rx) = mpsc::channel::<TakeOver>(1);
    let takeovers = tokio::sync::Mutex::new(takeover_rx);
    let (handle, events) = stream
        .with_listen_tap(listen)
        .start(negotiated.clone(), recording.map(|(r, _)| r));
    let mut media = CallMedia {
        handle: handle.clone(),
        events,
    };
    let actions = route
        .actions_at(chrono::Local::now().naive_local())
        .to_vec();
    let mut log = ActionLog::default();
    let max_call = Duration::from_secs(settings.config.limits.max_call_secs);

    let mut current = negotiated;
    let ending = {
        let ctx = ActionContext {
            assistant: shared.assistant.as_ref(),
            handoff: shared.handoff.as_ref(),
            log: CallLog {
                store: &shared.store,
                events: &shared.events,
                call_id: id,
                redactor: &shared.redactor,
            },
            supervisor: Some(Supervision {
                takeovers: &takeovers,
                phase: &phase,
            }),
        };
        let run = run_actions(&actions, &mut media, &mut log, &ctx);
        tokio::pin!(run);
        let deadline = tokio::time::sleep(max_call);
        tokio::pin!(deadline);
        let ending = loop {
            tokio::select! {
                outcome = &mut run => break match outcome {
                    ActionsOutcome::Finished => Ending { reason: "dialplan finished".into(), by: HangupBy::Frontdoor, outcome: "frontdoor_hangup", send_bye: true },
                    ActionsOutcome::MediaInactive(d) => Ending { reason: format!("no RTP for {} s", d.as_secs()), by: HangupBy::System, outcome: "media_timeout", send_bye: true },
                    ActionsOutcome::MediaClosed => Ending { reason: "media stream closed".into(), by: HangupBy::System, outcome: "failed", send_bye: true },
                    // run_actions performs transfers itself; reaching here means the agent leg ended.
                    ActionsOutcome::Transfer(_) => Ending { reason: "transfer finished".into(), by: HangupBy::Frontdoor, outcome: "frontdoor_hangup", send_bye: true },
                },
                Some(command) = supervisor_commands.recv() => match command {
                    SupervisorCommand::Hangup { by } => {
                        info!(%by, "supervisor hangs up");
                        break Ending { reason: format!("hung up by supervisor {by}"), by: HangupBy::Frontdoor, outcome: "frontdoor_hangup", send_bye: true };
                    }
                    SupervisorCommand::TakeOver { by, target } => {
                        // run_actions decides whether it can act on it; a
                        // second one while the first is pending is refused.
                        if takeover_tx.try_send(TakeOver { by: by.clone(), target }).is_err() {
                            warn!(%by, "take-over dropped: another is pending");
                        }
                    }
                },
                _ = &mut deadline => break Ending { reason: format!("maximum call length ({} s) reached", max_call.as_secs()), by: HangupBy::System, outcome: "frontdoor_hangup", send_bye: true },
                signal = signals.recv() => match signal {
                    None | Some(CallSignal::Shutdown) => break Ending { reason: "engine shutting down".into(), by: HangupBy::System, outcome: "frontdoor_hangup", send_bye: true },
                    Some(CallSignal::RemoteHangup) => break Ending { reason: "caller hung up".into(), by: HangupBy::Caller, outcome: "caller_hangup", send_bye: false },
                    // CANCEL racing our 200 OK: the caller's side sends BYE next.
                    Some(CallSignal::Cancelled) => {}
                    Some(CallSignal::Failed(reason)) => break Ending { reason: format!("signalling failed: {reason}"), by: HangupBy::System, outcome: "failed", send_bye: true },
                    Some(CallSignal::Acked) => {}
                    Some(CallSignal::HangupComplete(_)) => {}
                    Some(CallSignal::ReOffer(sdp)) => {
                        reoffer(shared, key, id, &handle, &mut current, sdp.as_deref(), local_ip, local_port, session_id, &mut sdp_version).await;
                    }
                },
            }
        };
        // Before `run` is dropped: a hand-off cut short by the call's end
        // records it as such, and the dashboard gets NotNow from now on.
        phase.set(CallPhase::Ending);
        ending
    };
    drop(media);

    if ending.send_bye {
        shared.sip.hangup(key);
        // Wait briefly for the BYE's answer so the record reflects it; the
        // transaction layer retransmits and times out on its own.
        let wait = tokio::time::sleep(Duration::from_secs(8));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                signal = signals.recv() => match signal {
                    None | Some(CallSignal::HangupComplete(_)) | Some(CallSignal::RemoteHangup) => break,
                    Some(CallSignal::ReOffer(_)) => shared.sip.reject_reoffer(key, 491),
                    Some(_) => {}
                }
            }
        }
    }
    let stats = handle.stop().await;
    if !log.dtmf.is_empty() {
        shared.store.call_event(id, "dtmf", log.dtmf.clone()).await;
    }
    Ok((
        ending,
        Some(MediaStats {
            packets_rx: stats.packets_received,
            packets_tx: stats.packets_sent,
            lost: stats.packets_lost,
            jitter_ms: stats.jitter_ms,
        }),
    ))
}

/// A re-INVITE or UPDATE: hold, resume, codec change or a new address.
#[allow(clippy::too_many_arguments)]
async fn reoffer(
    shared: &Shared,
    key: CallKey,
    id: &str,
    handle: &MediaHandle,
    current: &mut media::Negotiated,
    sdp: Option<&str>,
    local_ip: std::net::IpAddr,
    local_port: u16,
    session_id: u64,
    version: &mut u64,
) {
    let Some(sdp) = sdp else {
        // An offerless re-INVITE asks for our current offer; answering with
        // the current session keeps the call as it is.
        *version += 1;
        shared.sip.answer_reoffer(
            key,
            media::sdp::build_answer(current, local_ip, local_port, session_id, *version),
        );
        return;
    };
    match media::sdp::negotiate(sdp, &shared.settings.caps) {
        Ok(next) => {
            let change = match (current.direction, next.direction) {
                (Direction::SendRecv, Direction::RecvOnly | Direction::Inactive) => Some("hold"),
                (Direction::RecvOnly | Direction::Inactive, Direction::SendRecv) => Some("resume"),
                _ if next.codec != current.codec => Some("codec_change"),
                _ => None,
            };
            *version += 1;
            shared.sip.answer_reoffer(
                key,
                media::sdp::build_answer(&next, local_ip, local_port, session_id, *version),
            );
            handle.update(next.clone());
            if let Some(kind) = change {
                info!(kind, direction = ?next.direction, codec = next.codec.encoding_name(), "media changed");
                shared
                    .store
                    .call_event(
                        id,
                        kind,
                        format!("{:?} {}", next.direction, next.codec.encoding_name()),
                    )
                    .await;
            }
            *current = next;
        }
        Err(SdpError::NoUsableMedia(m)) => {
            warn!(%m, "re-offer with no usable media refused; call continues as before");
            shared.sip.reject_reoffer(key, 488);
        }
        Err(SdpError::Malformed(m)) => {
            warn!(%m, "malformed re-offer refused");
            shared.sip.reject_reoffer(key, 400);
        }
    }
}
