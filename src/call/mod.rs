//! What a call looks like to everything above signalling: audio in and out,
//! DTMF, and playback progress — no SIP. The SIP engine (and later WebRTC)
//! builds a [`CallMedia`] and hands it to [`run_actions`]; hang-ups, holds and
//! re-INVITEs stay in the signalling layer that owns the call.

pub mod assistant;
pub mod listener;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dialplan::Action;
use crate::media::{MediaEvent, MediaHandle};

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
}

/// Runs dialplan actions on a call until they finish or the media dies.
/// The signalling layer races this future against caller hang-up and drops it
/// when the caller leaves, so everything here must be cancel-safe.
pub async fn run_actions(
    actions: &[Action],
    media: &mut CallMedia,
    log: &mut ActionLog,
    ctx: &ActionContext<'_>,
) -> ActionsOutcome {
    for action in actions {
        let step = match action {
            Action::Assistant(options) => {
                let Some(services) = ctx.assistant else {
                    // The engine loads the services whenever a route uses
                    // them, so this is a bug, not an operator error.
                    tracing::error!("assistant action without loaded speech services");
                    return ActionsOutcome::Finished;
                };
                let settings = assistant::AssistantSettings {
                    silence_reprompt: options.silence_reprompt,
                    max_reprompts: options.max_reprompts,
                    handoff_available: ctx.handoff.is_some(),
                    ..assistant::AssistantSettings::default()
                };
                loop {
                    let outcome =
                        assistant::run_assistant(services, &settings, media, &ctx.log).await;
                    let (ActionsOutcome::Transfer(request), Some(handoff)) =
                        (&outcome, ctx.handoff)
                    else {
                        return outcome;
                    };
                    let safety = request.safety_message.clone();
                    match handoff
                        .transfer(media, (**request).clone(), &ctx.log, Some(&services.tts))
                        .await
                    {
                        crate::handoff::TransferOutcome::Completed { .. }
                        | crate::handoff::TransferOutcome::Referred => {
                            return ActionsOutcome::Finished;
                        }
                        crate::handoff::TransferOutcome::CallerGone => {
                            return ActionsOutcome::MediaClosed;
                        }
                        // Nobody could take the call: the caller is never
                        // dropped. They hear the safety message and the
                        // assistant stays with them.
                        crate::handoff::TransferOutcome::NoAgent { .. }
                        | crate::handoff::TransferOutcome::NotConfigured => {
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
            Action::Record { max } => wait(media, log, *max, Until::HashKey).await,
            Action::Pause(d) => wait(media, log, *d, Until::Timeout).await,
            Action::Hangup => return ActionsOutcome::Finished,
        };
        if let Some(outcome) = step {
            return outcome;
        }
    }
    ActionsOutcome::Finished
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
