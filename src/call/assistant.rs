//! The conversational assistant on a call:
//! caller audio → listener (VAD, end of turn, barge-in) → Whisper (worker
//! pool) → answer engine → Piper (worker pool, sentence by sentence) → paced
//! RTP.
//!
//! Interruption is a property of what is in flight, not a special case in
//! every stage: when the caller barges in, the audio queued for sending is
//! flushed (`MediaHandle::flush`) and the synthesis stream is dropped, which
//! cancels it; the caller's words from their onset are recognised as the
//! next turn.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::listener::{Listener, ListenerEvent};
use super::{ActionsOutcome, CallMedia};
use crate::answer::{Action, AnswerEngine, Conversation, Escalation};
use crate::asr::{AsrError, AsrPool, Utterance};
use crate::events::{CallEvent, EventBus};
use crate::media::MediaEvent;
use crate::speech::{
    BargeInConfig, EndpointConfig, PromptCache, SileroVadModel, TtsStream, TtsWorkerPool,
};
use crate::store::{AuditEntry, RequestRecord, StoreHandle, TurnRecord};

/// The models and worker pools every call shares.
pub struct AssistantServices {
    pub answer: Arc<AnswerEngine>,
    pub asr: Arc<AsrPool>,
    pub tts: TtsWorkerPool,
    pub prompts: PromptCache,
    pub vad: Arc<SileroVadModel>,
}

/// Per-route conversation settings.
#[derive(Debug, Clone)]
pub struct AssistantSettings {
    /// Re-prompt after this long without the caller saying anything.
    pub silence_reprompt: Duration,
    /// Say goodbye after this many re-prompts in a row (never on a call
    /// flagged for risk: those callers stay on the line).
    pub max_reprompts: u32,
    pub endpoint: EndpointConfig,
    pub barge_in: BargeInConfig,
}

impl Default for AssistantSettings {
    fn default() -> Self {
        AssistantSettings {
            silence_reprompt: Duration::from_secs(8),
            max_reprompts: 2,
            endpoint: EndpointConfig::default(),
            barge_in: BargeInConfig::default(),
        }
    }
}

/// Words Frontdoor says that are not answers; synthesised once at start-up.
pub const HOLDING_PHRASE: &str = "One moment, please.";
pub const REPROMPT: &str =
    "Are you still there? Tell me what you need help with, or press zero to speak to a person.";
pub const GOODBYE_SILENT: &str =
    "I can't hear anything, so I'll end the call now. Please call back any time. Goodbye.";
pub const NOT_HEARD: &str = "Sorry, I didn't catch that. Could you say it again?";

/// Where the call's record and live events go.
pub struct CallLog<'a> {
    pub store: &'a StoreHandle,
    pub events: &'a EventBus,
    pub call_id: &'a str,
}

impl CallLog<'_> {
    async fn turn(&self, speaker: &str, text: &str, detail: Option<(&crate::answer::Turn, &str)>) {
        info!(speaker, text, "transcript");
        let now = Utc::now();
        self.events.publish(CallEvent::Transcript {
            call_id: self.call_id.to_string(),
            speaker: speaker.to_string(),
            text: text.to_string(),
            is_final: true,
            at: now,
        });
        if let Some((t, reason)) = detail {
            self.events.publish(CallEvent::Decision {
                call_id: self.call_id.to_string(),
                intent: t.intent.clone(),
                confidence: t.confidence,
                escalation: t.escalation.as_str().to_string(),
                reason: reason.to_string(),
                at: now,
            });
        }
        self.store
            .turn(TurnRecord {
                call_id: self.call_id.to_string(),
                at: Utc::now(),
                speaker: speaker.to_string(),
                text: text.to_string(),
                intent: detail.and_then(|(t, _)| t.intent.clone()),
                confidence: detail.map(|(t, _)| t.confidence),
                escalation: detail.map(|(t, _)| t.escalation.as_str().to_string()),
                reason: detail.map(|(_, r)| r.to_string()),
            })
            .await;
    }

    async fn audit(&self, action: &str, detail: String) {
        self.store
            .audit(AuditEntry {
                at: Utc::now(),
                actor: "ai".into(),
                action: action.into(),
                call_id: Some(self.call_id.to_string()),
                detail,
            })
            .await;
    }
}

/// What Frontdoor is saying right now.
struct Speaking {
    stream: Option<TtsStream>,
    /// The text being spoken, for the record when it is cut.
    text: String,
    /// Texts to speak after this one, in order.
    queued: std::collections::VecDeque<String>,
    started: Instant,
}

/// Runs the assistant until the conversation ends or the media dies. The
/// caller hanging up is handled by the signalling layer, which drops this
/// future (dropping the listener thread and any synthesis in flight).
pub async fn run_assistant(
    services: &AssistantServices,
    settings: &AssistantSettings,
    media: &mut CallMedia,
    log: &CallLog<'_>,
) -> ActionsOutcome {
    let listener = match Listener::spawn(
        services.vad.clone(),
        settings.endpoint.clone(),
        settings.barge_in.clone(),
        log.call_id,
    ) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot start the listener; the assistant is unavailable on this call");
            return ActionsOutcome::Finished;
        }
    };
    let mut pipeline = Pipeline {
        services,
        settings,
        listener,
        conversation: services.answer.new_conversation(),
        speaking: None,
        pending_asr: None,
        reprompts: 0,
        at_risk: false,
        ending: false,
        silence_deadline: None,
    };
    pipeline.run(media, log).await
}

type AsrFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<crate::asr::Transcript, AsrError>> + Send>,
>;

struct Pipeline<'s> {
    services: &'s AssistantServices,
    settings: &'s AssistantSettings,
    listener: Listener,
    conversation: Conversation,
    speaking: Option<Speaking>,
    pending_asr: Option<AsrFuture>,
    reprompts: u32,
    /// A risk escalation happened: never hang up on this caller.
    at_risk: bool,
    /// After the current speech finishes, the call ends.
    ending: bool,
    silence_deadline: Option<Instant>,
}

impl Pipeline<'_> {
    async fn run(&mut self, media: &mut CallMedia, log: &CallLog<'_>) -> ActionsOutcome {
        let greeting = self.services.answer.greeting();
        self.say_cached(media, &greeting);
        log.turn("assistant", &greeting, None).await;

        loop {
            let silence = self.silence_deadline;
            tokio::select! {
                event = media.events.recv() => match event {
                    None => return ActionsOutcome::MediaClosed,
                    Some(MediaEvent::Audio(frame)) => self.listener.hear(&frame),
                    Some(MediaEvent::PlaybackFinished) => {
                        // Between two synthesised sentences the send queue can
                        // drain; only the end of the last one counts.
                        let still_synthesising = self.speaking.as_ref().is_some_and(|s| s.stream.is_some());
                        if !still_synthesising && !self.next_queued() {
                            if self.ending {
                                return ActionsOutcome::Finished;
                            }
                            self.finished_speaking();
                        }
                    }
                    Some(MediaEvent::Dtmf { digit, .. }) => {
                        log.audit("dtmf", format!("caller pressed {digit}")).await;
                        if digit == '0' {
                            self.handle_text(media, log, "i want to speak to a person").await;
                        }
                    }
                    Some(MediaEvent::Inactive { silent_for }) => return ActionsOutcome::MediaInactive(silent_for),
                },
                event = self.listener.events.recv() => match event {
                    None => return ActionsOutcome::MediaClosed,
                    Some(ListenerEvent::SpeechStarted { .. }) => self.silence_deadline = None,
                    Some(ListenerEvent::BargeIn { onset }) => self.barge_in(media, log, onset).await,
                    Some(ListenerEvent::EndOfTurn { audio, .. }) => {
                        if self.speaking.is_some() {
                            // Speech while Frontdoor talks that never became a
                            // barge-in (a backchannel, a cough): not a turn.
                            continue;
                        }
                        if audio.is_empty() {
                            continue;
                        }
                        let asr = self.services.asr.clone();
                        let utterance = Utterance::from_telephony_i16(&audio);
                        self.pending_asr = Some(Box::pin(async move { asr.submit(utterance).await }));
                    }
                },
                result = async { self.pending_asr.as_mut().expect("guarded").await }, if self.pending_asr.is_some() => {
                    self.pending_asr = None;
                    match result {
                        Ok(t) if !t.text.trim().is_empty() => {
                            let text = t.text.trim().to_string();
                            log.turn("caller", &text, None).await;
                            self.handle_text(media, log, &text).await;
                        }
                        Ok(_) => {}
                        Err(AsrError::Busy) => {
                            // Every recogniser is busy: say so rather than go quiet.
                            warn!("speech recognition saturated");
                            self.say_cached(media, HOLDING_PHRASE);
                            self.queue_more(media, NOT_HEARD);
                        }
                        Err(e) => {
                            warn!(error = %e, "speech recognition failed");
                            self.say(media, NOT_HEARD);
                        }
                    }
                }
                chunk = async { self.speaking.as_mut().and_then(|s| s.stream.as_mut()).expect("guarded").next().await },
                    if self.speaking.as_ref().is_some_and(|s| s.stream.is_some()) => {
                    match chunk {
                        Some(Ok(chunk)) => media.handle.play(chunk.samples),
                        Some(Err(e)) => {
                            warn!(error = %e, "speech synthesis failed");
                            if let Some(s) = self.speaking.as_mut() { s.stream = None; }
                        }
                        None => {
                            if let Some(s) = self.speaking.as_mut() { s.stream = None; }
                            if !media.handle.is_playing() && !self.next_queued() {
                                if self.ending {
                                    return ActionsOutcome::Finished;
                                }
                                self.finished_speaking();
                            }
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(silence.expect("guarded")).await }, if silence.is_some() => {
                    self.silence_deadline = None;
                    self.reprompts += 1;
                    if self.reprompts > self.settings.max_reprompts && !self.at_risk {
                        log.audit("hangup", "caller silent after re-prompts".into()).await;
                        self.say_cached(media, GOODBYE_SILENT);
                        self.ending = true;
                    } else if self.at_risk {
                        let safety = self.conversation.agent_unavailable(&self.services.answer);
                        self.say(media, &safety);
                    } else {
                        self.say_cached(media, REPROMPT);
                    }
                }
            }
        }
    }

    async fn barge_in(&mut self, media: &mut CallMedia, log: &CallLog<'_>, onset: Duration) {
        let Some(speaking) = self.speaking.take() else {
            return;
        };
        // Flush first: stale audio still playing after the caller started to
        // speak is the most common barge-in bug in this field.
        media.handle.flush();
        drop(speaking.stream);
        self.listener.bot_speaking(false);
        let spoken_ms = speaking.started.elapsed().as_millis();
        info!(
            onset_ms = onset.as_millis() as u64,
            spoken_ms = spoken_ms as u64,
            "caller barged in; answer cut"
        );
        log.audit(
            "barge_in",
            format!("answer cut after {spoken_ms} ms: {:?}", speaking.text),
        )
        .await;
    }

    async fn handle_text(&mut self, media: &mut CallMedia, log: &CallLog<'_>, text: &str) {
        self.reprompts = 0;
        let turn = self.conversation.respond(&self.services.answer, text);
        let reason = turn.reason.clone();
        if turn.escalation != Escalation::None {
            log.audit(
                "escalate",
                format!("{}: {}", turn.escalation.as_str(), reason),
            )
            .await;
        }
        match &turn.action {
            Action::Transfer {
                reason: why,
                priority,
            } => {
                if turn.escalation.is_risk()
                    || matches!(why, crate::answer::TransferReason::Distress)
                {
                    self.at_risk = true;
                }
                log.audit(
                    "transfer_requested",
                    format!("{why:?} priority {priority:?}"),
                )
                .await;
            }
            Action::RequestCompleted {
                reference,
                kind,
                slots,
            } => {
                log.store
                    .request(RequestRecord {
                        call_id: log.call_id.to_string(),
                        at: Utc::now(),
                        reference: reference.clone(),
                        kind: kind.clone(),
                        details_json: serde_json::to_string(slots).unwrap_or_default(),
                    })
                    .await;
                log.audit("request_completed", format!("{kind} {reference}"))
                    .await;
            }
            Action::Hangup => self.ending = true,
            Action::Continue => {}
        }
        log.turn("assistant", &turn.reply, Some((&turn, &reason)))
            .await;
        self.say(media, &turn.reply);
        if let Action::Transfer { .. } = turn.action {
            // Human hand-off arrives with agents and queues; until then the
            // caller is never left alone: risk calls hear the safety message
            // and the conversation stays open.
            let safety = self.conversation.agent_unavailable(&self.services.answer);
            log.audit(
                "transfer_unavailable",
                "no agents configured on this route".into(),
            )
            .await;
            self.queue_more(media, &safety);
        }
    }

    /// Speaks `text`, replacing whatever was being said.
    fn say(&mut self, media: &mut CallMedia, text: &str) {
        if let Some(old) = self.speaking.take() {
            media.handle.flush();
            drop(old);
        }
        self.start_stream(text);
    }

    /// Speaks `text` after whatever is being said now.
    fn queue_more(&mut self, media: &mut CallMedia, text: &str) {
        if let Some(s) = self.speaking.as_mut() {
            s.queued.push_back(text.to_string());
            if s.stream.is_none() && !media.handle.is_playing() {
                self.next_queued();
            }
            return;
        }
        self.start_stream(text);
    }

    fn start_stream(&mut self, text: &str) {
        match self.services.tts.try_speak(text) {
            Ok(stream) => {
                self.silence_deadline = None;
                self.listener.bot_speaking(true);
                let queued = self.speaking.take().map(|s| s.queued).unwrap_or_default();
                self.speaking = Some(Speaking {
                    stream: Some(stream),
                    text: text.to_string(),
                    queued,
                    started: Instant::now(),
                });
            }
            Err(e) => warn!(error = %e, "cannot synthesise; nothing said"),
        }
    }

    /// Starts the next queued text; false when nothing is queued.
    fn next_queued(&mut self) -> bool {
        let next = self.speaking.as_mut().and_then(|s| s.queued.pop_front());
        match next {
            Some(text) => {
                self.start_stream(&text);
                true
            }
            None => false,
        }
    }

    /// Frontdoor has finished everything it had to say.
    fn finished_speaking(&mut self) {
        self.speaking = None;
        self.listener.bot_speaking(false);
        self.silence_deadline = Some(Instant::now() + self.settings.silence_reprompt);
    }

    /// Plays a fixed phrase from the prompt cache (synthesised at start-up).
    fn say_cached(&mut self, media: &mut CallMedia, text: &str) {
        match self.services.prompts.get_or_synthesize(text) {
            Ok(samples) => {
                if let Some(old) = self.speaking.take() {
                    media.handle.flush();
                    drop(old);
                }
                media.handle.play(samples);
                self.silence_deadline = None;
                self.listener.bot_speaking(true);
                self.speaking = Some(Speaking {
                    stream: None,
                    text: text.to_string(),
                    queued: Default::default(),
                    started: Instant::now(),
                });
            }
            Err(e) => {
                warn!(error = %e, "prompt unavailable; synthesising on the fly");
                self.say(media, text);
            }
        }
    }
}
