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
use crate::sip::{CallKey, DialogEvent, IncomingInvite};
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
    // No SDP in the INVITE is a late offer (RFC 3261 13.2.1, trunks and some
    // PBXs): our 200 OK carries the offer and the ACK the answer.
    let early_offer = match invite.sdp.as_deref() {
        Some(offer) => Some(
            media::sdp::negotiate(offer, &settings.caps).map_err(|e| match e {
                SdpError::Malformed(m) => {
                    Refusal::new(400, "bad_request", format!("malformed SDP: {m}"))
                }
                SdpError::NoUsableMedia(m) => {
                    Refusal::new(488, "no_codec", format!("no usable media: {m}"))
                }
            })?,
        ),
        None => None,
    };
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
    // Watched before answering: the ACK (and its answer) cannot come sooner.
    let mut dialog = shared.sip.watch_dialog(key);
    let negotiated = match early_offer {
        Some(negotiated) => {
            shared.sip.answer(
                key,
                media::sdp::build_answer(
                    &negotiated,
                    local_ip,
                    local_port,
                    session_id,
                    sdp_version,
                ),
            );
            negotiated
        }
        None => {
            shared.sip.answer(
                key,
                media::sdp::build_offer(
                    &settings.caps,
                    local_ip,
                    local_port,
                    session_id,
                    sdp_version,
                ),
            );
            match late_offer_answer(shared, key, id, &mut dialog, signals).await {
                Ok(negotiated) => negotiated,
                Err(ending) => return Ok((ending, None)),
            }
        }
    };

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
    // Whether our last 2xx to a re-INVITE was an offer whose answer is due in the ACK.
    let mut reoffer_answer_due = false;
    let ending = {
        let ctx = ActionContext {
            assistant: shared.assistant.as_ref(),
            handoff: shared.handoff.as_ref(),
            log: CallLog {
                store: &shared.store,
                events: &shared.events,
                call_id: id,
                redactor: &shared.redactor,
                recent: Default::default(),
            },
            supervisor: Some(Supervision {
                takeovers: &takeovers,
                phase: &phase,
            }),
            caller: Some(key),
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
                        reoffer_answer_due = sdp.is_none();
                        reoffer(shared, key, id, &handle, &mut current, sdp.as_deref(), local_ip, local_port, session_id, &mut sdp_version).await;
                    }
                },
                Some(event) = dialog.recv() => match event {
                    DialogEvent::InfoDtmf { digit, duration_ms, .. } => {
                        info!(%digit, duration_ms, "DTMF by SIP INFO");
                        handle.inject_received_dtmf(digit, duration_ms);
                    }
                    DialogEvent::OfferAnswered { sdp, .. } => {
                        if std::mem::take(&mut reoffer_answer_due) {
                            apply_reoffer_answer(shared, id, &handle, &mut current, sdp.as_deref()).await;
                        }
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
        // An offerless re-INVITE asks us for an offer (RFC 3261 14.2); third
        // party call control uses it to renegotiate, so it lists everything
        // we can do (RFC 6337 5.3) on the same port, and the ACK brings the
        // answer (`apply_reoffer_answer`).
        *version += 1;
        shared.sip.answer_reoffer(
            key,
            media::sdp::build_offer(
                &shared.settings.caps,
                local_ip,
                local_port,
                session_id,
                *version,
            ),
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

/// Waits for the ACK that answers the offer in our 200 OK (late offer) and
/// negotiates it. A missing or unusable answer ends the call with a BYE
/// whose Reason header says why: a call without agreed media is worse than
/// none.
async fn late_offer_answer(
    shared: &Shared,
    key: CallKey,
    id: &str,
    dialog: &mut mpsc::Receiver<DialogEvent>,
    signals: &mut mpsc::Receiver<CallSignal>,
) -> Result<media::Negotiated, Ending> {
    let failure = loop {
        tokio::select! {
            event = dialog.recv() => match event {
                Some(DialogEvent::OfferAnswered { sdp: Some(sdp), .. }) => {
                    match media::sdp::accept_answer(&sdp, &shared.settings.caps) {
                        Ok(negotiated) => return Ok(negotiated),
                        Err(SdpError::Malformed(m)) => break (400, format!("malformed SDP answer in ACK: {m}")),
                        Err(SdpError::NoUsableMedia(m)) => break (488, format!("unusable SDP answer in ACK: {m}")),
                    }
                }
                Some(DialogEvent::OfferAnswered { sdp: None, .. }) => break (400, "ACK carried no SDP answer to our offer".to_string()),
                // A digit before the media agreement has nowhere to go.
                Some(DialogEvent::InfoDtmf { .. }) => {}
                None => break (500, "signalling closed before the ACK".to_string()),
            },
            signal = signals.recv() => match signal {
                Some(CallSignal::Failed(reason)) => {
                    return Err(Ending { reason: format!("signalling failed: {reason}"), by: HangupBy::System, outcome: "failed", send_bye: false }.after_bye(shared, key, signals, None).await);
                }
                Some(CallSignal::RemoteHangup) => {
                    return Err(Ending { reason: "caller hung up before the ACK".into(), by: HangupBy::Caller, outcome: "caller_hangup", send_bye: false });
                }
                None | Some(CallSignal::Shutdown) => {
                    return Err(Ending { reason: "engine shutting down".into(), by: HangupBy::System, outcome: "frontdoor_hangup", send_bye: false }.after_bye(shared, key, signals, None).await);
                }
                // The ACK itself: its answer arrives on `dialog`.
                Some(CallSignal::Acked) | Some(CallSignal::Cancelled) | Some(CallSignal::HangupComplete(_)) => {}
                Some(CallSignal::ReOffer(_)) => shared.sip.reject_reoffer(key, 491),
            },
        }
    };
    let (cause, reason) = failure;
    warn!(%reason, "late offer failed; hanging up");
    shared
        .store
        .call_event(id, "late_offer_failed", reason.clone())
        .await;
    Err(Ending {
        reason,
        by: HangupBy::System,
        outcome: "failed",
        send_bye: false,
    }
    .after_bye(shared, key, signals, Some(cause))
    .await)
}

impl Ending {
    /// Hangs up (with a Reason header carrying `cause` and our reason when
    /// given) and waits briefly for the BYE's answer, so the record is
    /// written after the far end heard of it.
    async fn after_bye(
        self,
        shared: &Shared,
        key: CallKey,
        signals: &mut mpsc::Receiver<CallSignal>,
        cause: Option<u16>,
    ) -> Ending {
        match cause {
            Some(cause) => shared.sip.hangup_with_reason(key, cause, &self.reason),
            None => shared.sip.hangup(key),
        }
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
        self
    }
}

/// The ACK's answer to the offer we made for an offerless re-INVITE. An
/// unusable answer leaves the media as it was: the call worked before the
/// re-INVITE and the far end keeps sending what was agreed then.
async fn apply_reoffer_answer(
    shared: &Shared,
    id: &str,
    handle: &MediaHandle,
    current: &mut media::Negotiated,
    sdp: Option<&str>,
) {
    let Some(sdp) = sdp else {
        warn!("ACK carried no answer to our re-offer; media unchanged");
        shared
            .store
            .call_event(id, "reoffer_answer_missing", String::new())
            .await;
        return;
    };
    match media::sdp::accept_answer(sdp, &shared.settings.caps) {
        Ok(next) => {
            info!(direction = ?next.direction, codec = next.codec.encoding_name(), "re-offer answered");
            handle.update(next.clone());
            shared
                .store
                .call_event(
                    id,
                    "reoffer_answered",
                    format!("{:?} {}", next.direction, next.codec.encoding_name()),
                )
                .await;
            *current = next;
        }
        Err(error) => {
            warn!(%error, "unusable answer to our re-offer; media unchanged");
            shared
                .store
                .call_event(id, "reoffer_answer_rejected", error.to_string())
                .await;
        }
    }
}
