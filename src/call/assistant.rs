//! The conversational assistant on a call:
//! caller audio → listener (VAD, end of turn, barge-in) → Whisper (worker
//! pool) → answer engine → Piper (worker pool, sentence by sentence) → paced
//! RTP.
//!
//! Interruption is a property of what is in flight, not a special case in
//! every stage, and it happens in steps so that Frontdoor stops fast but
//! never for good on a cough:
//! - the first speech-like window over Frontdoor (echo of its own voice
//!   excluded by the listener) *holds* the audio queued for sending
//!   (`MediaHandle::pause`): silent within a tick or two, nothing lost;
//! - a cough or click dies out and the audio resumes where it stopped; a
//!   short burst is recognised and, if its words are only a backchannel
//!   ("mm hmm", "yeah"), resumes too;
//! - anything else is a barge-in: the held audio is flushed
//!   (`MediaHandle::flush`), the synthesis stream is dropped (which cancels
//!   it), the answer is recorded as cut where the caller heard it stop, and
//!   the caller's words from their onset are the next turn.
//!
//! End of turn is sped up by recognising a turn's audio speculatively at the
//! first short pause: when those words already form a complete request, the
//! listener ends the turn after a shorter silence and the transcript is
//! ready, so no recognition is left on the critical path.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::listener::{Listener, ListenerEvent, PartialPolicy};
use super::{ActionsOutcome, CallMedia};
use crate::answer::{Action, AnswerEngine, Conversation, Escalation, Turn};
use crate::asr::{AsrError, AsrPool, Utterance};
use crate::events::{CallEvent, EventBus};
use crate::media::{MediaEvent, SAMPLE_RATE};
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

/// The hand-off speaks its announcements with the assistant's voice and
/// transcribes bridged calls with its recognisers.
impl crate::handoff::Announcer for AssistantServices {
    fn speak<'a>(&'a self, text: &'a str) -> crate::handoff::SpeechFuture<'a> {
        crate::handoff::Announcer::speak(&self.tts, text)
    }

    fn transcriber(&self) -> Option<super::transcriber::BridgeTranscriber> {
        Some(super::transcriber::BridgeTranscriber::new(
            self.asr.clone(),
            self.vad.clone(),
        ))
    }
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
    /// Agents and queues are configured: transfers hand the call to a person
    /// (otherwise the caller hears the safety message and the assistant
    /// stays with them).
    pub handoff_available: bool,
}

impl Default for AssistantSettings {
    fn default() -> Self {
        AssistantSettings {
            handoff_available: false,
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
    /// Personal data is redacted from everything written through this log
    /// (store, live events, tracing); the recording keeps the audio.
    pub redactor: &'a crate::governance::Redactor,
    /// The caller's last lines and whether a risk was flagged, kept as
    /// turns pass through here, for a supervisor's take-over summary.
    pub recent: RecentCaller,
}

/// Caller lines kept for a take-over summary.
const RECENT_CALLER_LINES: usize = 3;
const MAX_LINE_CHARS: usize = 200;

/// What a take-over's summary needs of the conversation so far (redacted).
#[derive(Default)]
pub struct RecentCaller {
    inner: parking_lot::Mutex<(std::collections::VecDeque<String>, bool)>,
}

impl RecentCaller {
    fn caller_said(&self, text: &str) {
        let mut inner = self.inner.lock();
        if inner.0.len() == RECENT_CALLER_LINES {
            inner.0.pop_front();
        }
        inner
            .0
            .push_back(text.chars().take(MAX_LINE_CHARS).collect());
    }

    fn escalated(&self, escalation: crate::answer::Escalation) {
        use crate::answer::Escalation;
        self.inner.lock().1 |= matches!(
            escalation,
            Escalation::Emergency | Escalation::Distress | Escalation::Safeguarding
        );
    }

    /// The caller's last lines, oldest first, and whether a risk was flagged.
    pub fn snapshot(&self) -> (Vec<String>, bool) {
        let inner = self.inner.lock();
        (inner.0.iter().cloned().collect(), inner.1)
    }
}

impl CallLog<'_> {
    /// `text` with the configured personal data redacted.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        self.redactor.redact(text)
    }

    /// A live, provisional transcript of what `speaker` is saying: shown on
    /// the dashboard until the final one replaces it, never stored.
    pub fn partial(&self, speaker: &str, text: &str) {
        let text = self.redactor.redact(text);
        debug!(speaker, text = &*text, "partial transcript");
        crate::metrics::pipeline().partial_transcripts.inc();
        self.events.publish(CallEvent::Transcript {
            call_id: self.call_id.to_string(),
            speaker: speaker.to_string(),
            text: text.into_owned(),
            is_final: false,
            at: Utc::now(),
        });
    }

    /// A final transcript of what `speaker` said: stored as a turn and
    /// published live, redacted; `detail` adds the assistant's decision.
    pub async fn turn(
        &self,
        speaker: &str,
        text: &str,
        detail: Option<(&crate::answer::Turn, &str)>,
    ) {
        let text = &*self.redactor.redact(text);
        let redacted_reason = detail.map(|(_, r)| self.redactor.redact(r).into_owned());
        let detail = detail.map(|(t, _)| (t, redacted_reason.as_deref().unwrap_or_default()));
        info!(speaker, text, "transcript");
        if speaker == "caller" {
            self.recent.caller_said(text);
        }
        if let Some((t, _)) = detail {
            self.recent.escalated(t.escalation);
        }
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
        self.audit_as("ai", action, &detail).await
    }

    /// An audit entry with its detail redacted.
    pub async fn audit_as(&self, actor: &str, action: &str, detail: &str) {
        self.store
            .audit(AuditEntry {
                at: Utc::now(),
                actor: actor.into(),
                action: action.into(),
                call_id: Some(self.call_id.to_string()),
                detail: self.redactor.redact(detail).into_owned(),
            })
            .await;
    }
}

/// One piece of what Frontdoor is saying, as it was queued for sending.
struct SpokenPart {
    text: String,
    samples: usize,
}

/// What Frontdoor is saying right now.
struct Speaking {
    stream: Option<TtsStream>,
    /// The text being spoken, for the record when it is cut.
    text: String,
    /// What was queued for sending so far, in order, to find where a cut fell.
    parts: Vec<SpokenPart>,
    /// The stream's sent-sample counter when this began.
    sent_before: u64,
    /// Texts to speak after this one, in order.
    queued: std::collections::VecDeque<String>,
    started: Instant,
}

impl Speaking {
    /// The words the caller actually heard when `played` samples of this
    /// utterance went out: whole sentences, then the share of the cut one.
    fn heard(&self, played: usize) -> String {
        let mut heard = String::new();
        let mut left = played;
        for part in &self.parts {
            if left == 0 {
                break;
            }
            let words: Vec<&str> = part.text.split_whitespace().collect();
            let said = if left >= part.samples {
                words.len()
            } else {
                words.len() * left / part.samples.max(1)
            };
            left = left.saturating_sub(part.samples);
            for word in &words[..said] {
                if !heard.is_empty() {
                    heard.push(' ');
                }
                heard.push_str(word);
            }
        }
        heard
    }
}

/// Frontdoor's audio is held while the listener decides whether the caller
/// is really talking over it.
struct Hold {
    onset: Duration,
    /// Sent-sample counter when the hold began: where the cut falls if it is
    /// a barge-in.
    sent_at: u64,
    /// A cough the listener never resolves (audio stopped arriving) must not
    /// silence Frontdoor for good.
    deadline: Instant,
    /// The words of the latest short burst over the answer, to tell a
    /// backchannel from a short request.
    verdict: Option<BurstVerdict>,
}

/// A short burst's words, from recognition to the listener's word on
/// whether the verdict still stands.
enum BurstVerdict {
    /// Being recognised (the burst, where it ended).
    Recognising(u32, Duration, AsrFuture),
    /// Recognised and judged; sent to the listener, which accepts it only if
    /// the caller has not spoken again since the burst. Until it does,
    /// nothing is done: a caller who went on talking is neither talked over
    /// (a stale backchannel) nor answered on the first words of their turn
    /// (a stale request).
    Judged {
        burst: u32,
        end: Duration,
        text: String,
        backchannel: bool,
    },
}

/// Recognition of a turn's audio started at a pause inside it.
struct Speculation {
    speech_end: Duration,
    transcript: Speculated,
    /// The caller spoke again since the pause: the words are only a partial
    /// transcript now, never answered.
    resumed: bool,
}

enum Speculated {
    Running(AsrFuture),
    Done(String),
    /// Recognised and answered before the turn ended; spoken only if the
    /// turn ends with exactly these words, dropped (synthesis cancelled)
    /// when the caller goes on.
    Answered(Box<PreparedAnswer>),
}

/// An answer worked out ahead of the end of the turn it answers.
struct PreparedAnswer {
    text: String,
    turn: Turn,
    /// The conversation as it is once this answer is given.
    conversation: Conversation,
    /// Its synthesis, already running (cached sentences already in it).
    stream: Option<TtsStream>,
    /// [`Pipeline::answers_given`] when it was prepared: another answer
    /// since (a key press) makes it stale.
    after_answers: u64,
}

/// When each step of a turn happened, from the caller's last speech to the
/// answer's first audio: the engine's share of voice-to-voice latency,
/// logged once per turn.
#[derive(Debug, Clone, Copy)]
struct TurnClock {
    /// Wall-clock time of the caller's last speech as the VAD placed it.
    speech_end: Instant,
    speech_end_stream: Duration,
    speculation_started: Option<Instant>,
    recognised: Option<Instant>,
    turn_ended: Option<Instant>,
    answered: Option<Instant>,
    /// The answer was prepared from a speculative transcript.
    prepared: bool,
}

impl TurnClock {
    /// A clock for the speech that ended at stream time `speech_end`, seen
    /// at stream time `seen_at` (which is now).
    fn new(speech_end: Duration, seen_at: Duration) -> TurnClock {
        let now = Instant::now();
        TurnClock {
            speech_end: now
                .checked_sub(seen_at.saturating_sub(speech_end))
                .unwrap_or(now),
            speech_end_stream: speech_end,
            speculation_started: None,
            recognised: None,
            turn_ended: None,
            answered: None,
            prepared: false,
        }
    }

    fn since_speech(&self, at: Option<Instant>) -> Option<u64> {
        at.map(|at| at.saturating_duration_since(self.speech_end).as_millis() as u64)
    }
}

/// Continuous speech before a turn's first partial transcript: later than
/// the next ones, because most callers' questions are over within it. A
/// partial started 1.5 s into a 2 s question ran into the turn's own pass:
/// it kept that pass from borrowing the idle core (241 against ~160 ms on
/// an idle machine) and, when its text was retried, held a core for 500 ms.
const PARTIAL_FIRST: Duration = Duration::from_millis(2500);
/// Continuous speech between two partial transcripts of a long turn.
const PARTIAL_EVERY: Duration = Duration::from_millis(1500);

/// Longest Frontdoor stays held without a decision.
const MAX_HOLD: Duration = Duration::from_secs(3);
/// How far back the echo reference looks: the echo path (the caller's phone,
/// the network both ways) plus the jitter buffer and the event queue. 560 ms
/// let echo through on a loaded host (late ticks stretch the path), so the
/// tail is a full second; the cost is that a caller must be louder than
/// half of Frontdoor's level over that second to interrupt.
const ECHO_TAIL: Duration = Duration::from_millis(1000);

/// Words that acknowledge rather than interrupt; Whisper's usual renderings
/// of "mm hmm" and its habit of hearing "you" in a breath are included.
const BACKCHANNEL_WORDS: &[&str] = &[
    "mm", "mmm", "hmm", "hm", "mhm", "uh", "huh", "um", "ah", "oh", "aha", "yeah", "yes", "yep",
    "yup", "ok", "okay", "right", "alright", "sure", "fine", "i", "see", "got", "it", "thanks",
    "thank", "you", "cool", "great", "good",
];

/// Words that mean "stop talking" however short the burst they come in.
const INTERRUPTING_WORDS: &[&str] = &[
    "stop", "wait", "no", "hang", "hold", "sorry", "pardon", "excuse", "what", "person", "human",
    "adviser", "advisor", "agent", "operator", "someone", "help", "repeat",
];

/// The lower-case words of a transcript, punctuation dropped.
fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Below this mean token log-probability a burst's words are Whisper
/// guessing, not evidence (Whisper's own decoders take −1.0 as a failed
/// decode). Measured on Piper's "Mm hmm." cut at 40 different onsets, gaps
/// and levels through G.711: most mishearings ("And remember,", "Memo.",
/// "Mememom.") scored −1.0 to −1.41; real short requests scored −0.08 to
/// −0.67 when recognised right.
const MIN_BURST_LOGPROB: f32 = -1.0;

/// Words that carry no request of their own: what Whisper strings together
/// when it hears words in a hum ("And I'm not.", "And then known.").
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "and", "then", "but", "or", "so", "if", "of", "to", "in", "on", "at", "for",
    "with", "is", "was", "are", "am", "be", "it's", "that", "that's", "this", "there", "i'm",
    "i've", "i'll", "me", "my", "we", "he", "she", "they", "not", "no", "just", "well", "now",
    "know", "all", "do", "did",
];

/// Words a caller may put before "no" without changing what it means
/// ("oh, no, not that one", "er, no, wait").
const LEAD_IN_WORDS: &[&str] = &["actually", "please", "er", "erm", "just", "oh", "um", "uh"];

/// Whether the words of a short burst over Frontdoor ask it to stop. Whisper
/// is least reliable on exactly these bursts (Piper's "mm hmm" came back as
/// "Amen, none.", "Amen, no.", "No, no, no.", "And then known.", "And I'm
/// not." and "Meme Meme Meme"), so a burst interrupts only on evidence:
///
/// - a word that means stop, whatever the confidence (a missed "stop" is
///   worse than a misheard one). "No" is what Whisper most often makes of a
///   hum, and a bare "no" over an answer asks nothing of it, so "no" counts
///   only where a caller puts it, first (after "oh", "er"...), and with a
///   word of its own ("no, not that", "no, wait"): not after a guess
///   ("Amen, no."), not repeated on its own ("No, no, no.");
/// - a confident request of three or more words, two of them different
///   words with meaning.
///
/// A burst the answer engine recognises as a request or a risk is caught by
/// the caller, whatever the confidence.
pub fn short_burst_interrupts(text: &str, mean_logprob: f32) -> bool {
    let words = words_of(text);
    if words
        .iter()
        .any(|w| w != "no" && INTERRUPTING_WORDS.contains(&w.as_str()))
    {
        return true;
    }
    if let Some(no) = words.iter().position(|w| w == "no") {
        let led = words[..no].iter().all(|w| {
            let w = w.as_str();
            LEAD_IN_WORDS.contains(&w) || BACKCHANNEL_WORDS.contains(&w)
        });
        let more = words[no..]
            .iter()
            .any(|w| w != "no" && !BACKCHANNEL_WORDS.contains(&w.as_str()));
        if led && more {
            return true;
        }
    }
    if mean_logprob < MIN_BURST_LOGPROB || words.len() < 3 {
        return false;
    }
    // A word repeated is Whisper looping on a sound, not more words.
    let mut meaningful: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !BACKCHANNEL_WORDS.contains(w) && !FUNCTION_WORDS.contains(w))
        .collect();
    meaningful.sort_unstable();
    meaningful.dedup();
    meaningful.len() >= 2
}

/// Words no English sentence ends on: a turn whose words stop on one of
/// these is a caller pausing mid-sentence ("I was wondering about...",
/// "it's the...", "and..."), however Whisper punctuated it.
const DANGLING_WORDS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "and", "but", "or", "because", "cos", "if",
    "whether", "than", "um", "uh", "er", "erm",
];

/// Prepositions a sentence ends on only as a question ("who do I speak
/// to?", "what's it about?"); after a statement they mean more is coming.
const DANGLING_PREPOSITIONS: &[&str] = &[
    "about", "of", "for", "with", "from", "to", "into", "onto", "at", "by",
];

const QUESTION_WORDS: &[&str] = &[
    "who", "whom", "whose", "what", "which", "where", "when", "how", "why",
];

/// Whether a transcript stops mid-sentence: its last word cannot end a
/// sentence, or is a preposition ending a statement. Such words are never
/// a complete request, even if the meaning so far would be acted on.
pub fn trails_off(text: &str) -> bool {
    let words = words_of(text);
    let Some(last) = words.last().map(String::as_str) else {
        return false;
    };
    if DANGLING_WORDS.contains(&last) {
        return true;
    }
    let question = text.trim_end().ends_with('?')
        || words.iter().any(|w| {
            // "what's", "who'd": the question word before the apostrophe.
            let stem = w.split('\'').next().unwrap_or_default();
            QUESTION_WORDS.contains(&stem)
        });
    DANGLING_PREPOSITIONS.contains(&last) && !question
}

/// No speech recognition is running or waiting: ahead-of-time synthesis
/// may use a core without slowing down a caller's turn.
pub fn recognition_idle() -> bool {
    let asr = &crate::metrics::pipeline().asr;
    asr.busy.get() == 0 && asr.queued.get() == 0
}

/// Everything the assistant says that never changes, in the order it is
/// worth synthesising ahead of time: answers first, then the assistant's
/// common follow-ups, request flows' fixed lines, and details. Texts with
/// `{placeholders}` are filled per call and left out (their fixed sentences
/// are cached when first spoken).
pub fn static_answer_texts(answer: &AnswerEngine) -> Vec<String> {
    let knowledge = answer.knowledge();
    let words = &knowledge.assistant;
    let mut texts: Vec<String> = knowledge.intents.iter().map(|i| i.answer.clone()).collect();
    texts.extend(
        [
            &words.anything_else,
            &words.more_detail_offer,
            &words.clarify,
            &words.out_of_scope,
            &words.not_heard,
            &words.goodbye,
            &words.human_offer,
            &words.human_transfer,
            &words.start_again,
            &words.what_to_change,
            &words.slot_not_understood,
        ]
        .into_iter()
        .cloned(),
    );
    for flow in knowledge.intents.iter().filter_map(|i| i.flow.as_ref()) {
        texts.push(flow.intro.clone());
        texts.extend(flow.slots.iter().map(|slot| slot.prompt.clone()));
    }
    texts.extend(knowledge.intents.iter().filter_map(|i| i.detail.clone()));
    let mut seen = std::collections::HashSet::new();
    texts.retain(|t| !t.trim().is_empty() && !t.contains('{') && seen.insert(t.clone()));
    texts
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
    // Knowledge-base answers are fixed text: their first sentences are
    // synthesised ahead of time (once per engine, whichever call comes first
    // if start-up did not already), while recognition has a core to spare.
    services.tts.presynthesize_once(
        || static_answer_texts(&services.answer),
        Some(Arc::new(recognition_idle)),
    );
    let asr = services.asr.clone();
    let partials = PartialPolicy {
        first: PARTIAL_FIRST,
        every: PARTIAL_EVERY,
        worker_idle: Arc::new(move || asr.has_idle_worker()),
    };
    let listener = match Listener::spawn_with(
        services.vad.clone(),
        settings.endpoint.clone(),
        settings.barge_in.clone(),
        log.call_id,
        Some(partials),
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
        turn_audio: None,
        hold: None,
        speculation: None,
        partial: None,
        partials_shown: 0,
        speculations: 0,
        speculations_cancelled: 0,
        answered_burst_end: None,
        turn_clock: None,
        answers_given: 0,
        reprompts: 0,
        at_risk: false,
        ending: false,
        pending_transfer: None,
        transcript: Vec::new(),
        silence_deadline: None,
    };
    pipeline.run(media, log).await
}

/// How long a turn's recognition keeps asking for a recogniser while every
/// one is busy (the caller hears a holding phrase meanwhile) before the
/// caller is asked again: under load the queue drains within a few passes
/// (0.3–1 s each), and an answer a moment late beats asking the caller to
/// repeat themselves.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(4);
const BUSY_RETRY_EVERY: Duration = Duration::from_millis(100);

/// Recognises a turn's audio, retrying while every recogniser is busy (up
/// to [`BUSY_RETRY_FOR`]).
async fn recognise_turn(
    asr: Arc<AsrPool>,
    utterance: Utterance,
) -> Result<crate::asr::Transcript, AsrError> {
    let give_up = Instant::now() + BUSY_RETRY_FOR;
    loop {
        match asr.submit(utterance.clone()).await {
            Err(AsrError::Busy) if Instant::now() < give_up => {
                tokio::time::sleep(BUSY_RETRY_EVERY).await;
            }
            result => return result,
        }
    }
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
    /// The audio of the turn `pending_asr` recognises, for a second try
    /// when every recogniser was busy.
    turn_audio: Option<Vec<i16>>,
    hold: Option<Hold>,
    speculation: Option<Speculation>,
    /// A partial transcript of the turn in progress, on an otherwise idle
    /// recogniser; dropped (cancelled) when the turn ends.
    partial: Option<AsrFuture>,
    /// Partial transcripts shown for the turn in progress, for the log.
    partials_shown: u32,
    /// Speculative recognitions started in the turn in progress, for the log.
    speculations: u32,
    /// Speculative passes of this turn cancelled under load (the caller went on).
    speculations_cancelled: u32,
    /// A short burst answered from its own words ends here: the turn the
    /// endpoint detector reports for it is not a second question.
    answered_burst_end: Option<Duration>,
    /// The steps of the caller's latest turn, until its answer's first
    /// audio is queued (for the latency log).
    turn_clock: Option<TurnClock>,
    /// Answers given so far on this call.
    answers_given: u64,
    reprompts: u32,
    /// A risk escalation happened: never hang up on this caller.
    at_risk: bool,
    /// After the current speech finishes, the call ends.
    ending: bool,
    silence_deadline: Option<Instant>,
    /// After the current speech finishes, the call goes to a person.
    pending_transfer: Option<crate::handoff::TransferRequest>,
    /// What was said so far, for the agent and the record.
    transcript: Vec<String>,
}

impl Pipeline<'_> {
    async fn run(&mut self, media: &mut CallMedia, log: &CallLog<'_>) -> ActionsOutcome {
        let greeting = self.services.answer.greeting();
        self.say_cached(media, &greeting);
        log.turn("assistant", &greeting, None).await;

        loop {
            // A transfer starts as soon as the reply is fully queued for sending.
            if self.pending_transfer.is_some()
                && self
                    .speaking
                    .as_ref()
                    .is_none_or(|s| s.stream.is_none() && s.queued.is_empty())
            {
                return self.finish_outcome();
            }
            let silence = self.silence_deadline;
            let hold_deadline = self.hold.as_ref().map(|h| h.deadline);
            tokio::select! {
                event = media.events.recv() => match event {
                    None => return ActionsOutcome::MediaClosed,
                    Some(MediaEvent::Audio(frame)) => {
                        let reference = media.handle.recent_sent_peak(ECHO_TAIL);
                        self.listener.hear(&frame, reference);
                    }
                    Some(MediaEvent::PlaybackFinished) => {
                        // Between two synthesised sentences the send queue can
                        // drain; only the end of the last one counts.
                        let still_synthesising = self.speaking.as_ref().is_some_and(|s| s.stream.is_some());
                        if !still_synthesising && !self.next_queued(media) {
                            if self.ending {
                                return self.finish_outcome();
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
                    Some(ListenerEvent::SpeechStarted { .. }) => {
                        self.silence_deadline = None;
                        self.partial = None;
                    }
                    Some(ListenerEvent::TurnInProgress { audio, .. }) => {
                        if self.speaking.is_none() && self.partial.is_none() && !audio.is_empty() {
                            let asr = self.services.asr.clone();
                            let utterance = Utterance::from_telephony_i16(&audio);
                            self.partial = Some(Box::pin(async move { asr.submit_partial(utterance).await }));
                        }
                    }
                    Some(ListenerEvent::Pause { onset }) => self.hold(media, onset),
                    Some(ListenerEvent::Resume { .. }) => self.release(media),
                    Some(ListenerEvent::ShortBurst { burst, onset, end, audio }) => {
                        match self.hold.as_mut() {
                            Some(hold) if hold.onset == onset => {
                                let asr = self.services.asr.clone();
                                let utterance = Utterance::from_telephony_i16(&audio);
                                hold.verdict = Some(BurstVerdict::Recognising(burst, end, Box::pin(async move { asr.submit(utterance).await })));
                            }
                            _ => self.listener.verdict(burst, true),
                        }
                    }
                    Some(ListenerEvent::VerdictTaken { burst, accepted }) => {
                        let judged = match self.hold.as_mut().map(|h| h.verdict.take()) {
                            Some(Some(BurstVerdict::Judged { burst: b, end, text, backchannel })) if b == burst => {
                                Some((end, text, backchannel))
                            }
                            Some(other) => {
                                // Not the verdict awaited (a newer burst is being
                                // recognised, or none was sent from here).
                                if let Some(hold) = self.hold.as_mut() {
                                    hold.verdict = other;
                                }
                                None
                            }
                            None => None,
                        };
                        match judged {
                            Some((end, text, backchannel)) if accepted => {
                                self.burst_decided(media, log, end, &text, backchannel).await;
                            }
                            Some((_, text, _)) => {
                                // The caller went on talking after the burst:
                                // the audio stays held, and the listener will
                                // call the whole of it a barge-in or a new burst.
                                info!(words = %log.redact(&text), "caller went on after a short burst; its verdict dropped");
                            }
                            None => {}
                        }
                    }
                    Some(ListenerEvent::BargeIn { onset }) => self.barge_in(media, log, onset).await,
                    Some(ListenerEvent::TurnResumed) => {
                        // Its recognition still makes a live partial; an answer
                        // already prepared is dropped (its synthesis cancelled).
                        // Under load a pass over words the caller has gone on
                        // from would hold a recogniser that another caller's
                        // finished turn needs: it is cancelled (future dropped).
                        let busy = !self.services.asr.has_idle_worker();
                        if let Some(speculation) = self.speculation.as_mut() {
                            speculation.resumed = true;
                            match &speculation.transcript {
                                Speculated::Answered(prepared) => {
                                    speculation.transcript = Speculated::Done(prepared.text.clone());
                                }
                                Speculated::Running(_) if busy => {
                                    self.speculation = None;
                                    self.speculations_cancelled += 1;
                                }
                                _ => {}
                            }
                        }
                    }
                    Some(ListenerEvent::TurnPausing { speech_end, at, audio, .. }) => {
                        if self.speaking.is_none() && !audio.is_empty() {
                            // The speculation covers more of the turn and is
                            // shown as its partial: an older one would lag it.
                            self.partial = None;
                            let mut clock = TurnClock::new(speech_end, at);
                            clock.speculation_started = Some(Instant::now());
                            self.turn_clock = Some(clock);
                            self.speculations += 1;
                            // Ahead-of-time synthesis must not share a core with this.
                            self.services.tts.give_way();
                            let asr = self.services.asr.clone();
                            let utterance = Utterance::from_telephony_i16(&audio);
                            self.speculation = Some(Speculation {
                                speech_end,
                                transcript: Speculated::Running(Box::pin(async move { asr.submit(utterance).await })),
                                resumed: false,
                            });
                        }
                    }
                    Some(ListenerEvent::EndOfTurn { audio, onset, speech_end, detected_at }) => {
                        // The final transcript supersedes any partial still running.
                        self.partial = None;
                        if self.speaking.is_none() {
                            info!(
                                turn_ms = speech_end.saturating_sub(onset).as_millis() as u64,
                                partial_transcripts = self.partials_shown,
                                speculative_passes = self.speculations,
                                speculative_cancelled = self.speculations_cancelled,
                                "caller's turn ended"
                            );
                        }
                        self.partials_shown = 0;
                        self.speculations = 0;
                        self.speculations_cancelled = 0;
                        let speculation = self.speculation.take();
                        let mut clock = self
                            .turn_clock
                            .filter(|c| c.speech_end_stream == speech_end)
                            .unwrap_or_else(|| TurnClock::new(speech_end, detected_at));
                        clock.turn_ended = Some(Instant::now());
                        self.turn_clock = Some(clock);
                        if self.speaking.is_some() {
                            // Speech while Frontdoor talks that never became a
                            // barge-in (a backchannel, a cough): not a turn.
                            continue;
                        }
                        if self
                            .answered_burst_end
                            .take()
                            .is_some_and(|end| speech_end <= end + Duration::from_millis(100))
                        {
                            continue;
                        }
                        match speculation {
                            Some(Speculation { speech_end: s, transcript: Speculated::Answered(prepared), .. }) if s == speech_end => {
                                // Answered during the pause, with these very words.
                                let PreparedAnswer { text, turn, conversation, stream, after_answers } = *prepared;
                                log.turn("caller", &text, None).await;
                                if after_answers == self.answers_given {
                                    self.conversation = conversation;
                                    self.act(media, log, &text, turn, stream).await;
                                } else {
                                    drop(stream);
                                    self.handle_text(media, log, &text).await;
                                }
                                continue;
                            }
                            Some(Speculation { speech_end: s, transcript: Speculated::Done(text), .. }) if s == speech_end => {
                                // Recognised during the pause: nothing left to wait for.
                                if !text.is_empty() {
                                    log.turn("caller", &text, None).await;
                                    self.handle_text(media, log, &text).await;
                                }
                                continue;
                            }
                            Some(Speculation { speech_end: s, transcript: Speculated::Running(asr), .. }) if s == speech_end => {
                                self.pending_asr = Some(asr);
                                continue;
                            }
                            _ => {}
                        }
                        if audio.is_empty() {
                            continue;
                        }
                        self.services.tts.give_way();
                        let asr = self.services.asr.clone();
                        let utterance = Utterance::from_telephony_i16(&audio);
                        self.pending_asr = Some(Box::pin(async move { asr.submit(utterance).await }));
                        // Kept in case every recogniser is busy (then it waits its turn).
                        self.turn_audio = Some(audio);
                    }
                },
                result = async { self.pending_asr.as_mut().expect("guarded").await }, if self.pending_asr.is_some() => {
                    self.pending_asr = None;
                    let turn_audio = self.turn_audio.take();
                    match result {
                        Ok(t) if !t.text.trim().is_empty() => {
                            let text = t.text.trim().to_string();
                            if let Some(clock) = self.turn_clock.as_mut() {
                                clock.recognised.get_or_insert_with(Instant::now);
                            }
                            log.turn("caller", &text, None).await;
                            self.handle_text(media, log, &text).await;
                        }
                        Ok(_) => {}
                        Err(AsrError::Busy) => match turn_audio {
                            Some(audio) => {
                                // Every recogniser is busy: the caller hears they
                                // were heard, and the turn waits for a recogniser
                                // (its answer follows the holding phrase).
                                warn!("speech recognition saturated; holding phrase while the turn waits");
                                self.say_cached(media, HOLDING_PHRASE);
                                let asr = self.services.asr.clone();
                                let utterance = Utterance::from_telephony_i16(&audio);
                                self.pending_asr = Some(Box::pin(recognise_turn(asr, utterance)));
                            }
                            None => {
                                warn!("speech recognition saturated; the caller is asked again");
                                self.queue_more(media, NOT_HEARD);
                            }
                        },
                        Err(e) => {
                            warn!(error = %e, "speech recognition failed");
                            self.say(media, NOT_HEARD);
                        }
                    }
                }
                result = async { self.partial.as_mut().expect("guarded").await }, if self.partial.is_some() => {
                    self.partial = None;
                    // A busy or preempted recogniser only means no partial this time.
                    if let Ok(t) = result
                        && !t.text.trim().is_empty()
                        && self.speaking.is_none()
                    {
                        log.partial("caller", t.text.trim());
                        self.partials_shown += 1;
                    }
                }
                result = async {
                    match self.speculation.as_mut().map(|s| &mut s.transcript) {
                        Some(Speculated::Running(asr)) => asr.await,
                        _ => unreachable!("guarded"),
                    }
                }, if matches!(self.speculation, Some(Speculation { transcript: Speculated::Running(_), .. })) => {
                    let text = match result {
                        Ok(transcript) => transcript.text.trim().to_string(),
                        Err(error) => {
                            // A failed speculation (every recogniser busy) only
                            // means the turn is recognised at its end: it must
                            // not stand for the turn as an empty transcript.
                            debug!(%error, "speculative recognition failed");
                            self.speculation = None;
                            continue;
                        }
                    };
                    if let Some(clock) = self.turn_clock.as_mut() {
                        clock.recognised = Some(Instant::now());
                    }
                    let complete = self.is_complete_request(&text);
                    if !text.is_empty() && self.speaking.is_none() {
                        log.partial("caller", &text);
                        self.partials_shown += 1;
                    }
                    let resumed = self.speculation.as_ref().is_some_and(|s| s.resumed);
                    let transcript = if !text.is_empty() && self.speaking.is_none() && !resumed {
                        Speculated::Answered(Box::new(self.prepare_answer(text)))
                    } else {
                        Speculated::Done(text)
                    };
                    if let Some(speculation) = self.speculation.as_mut() {
                        speculation.transcript = transcript;
                        // Only now: the turn may end at once, and its answer is ready.
                        if complete {
                            self.listener.utterance_complete(speculation.speech_end);
                        }
                    }
                }
                result = async {
                    match self.hold.as_mut().and_then(|h| h.verdict.as_mut()) {
                        Some(BurstVerdict::Recognising(_, _, asr)) => asr.await,
                        _ => unreachable!("guarded"),
                    }
                }, if matches!(self.hold.as_ref().and_then(|h| h.verdict.as_ref()), Some(BurstVerdict::Recognising(..))) => {
                    let Some(Some(BurstVerdict::Recognising(burst, end, _))) = self.hold.as_mut().map(|h| h.verdict.take()) else { continue };
                    // A recogniser that failed or was busy cannot justify cutting the answer.
                    let (text, mean_logprob) = result
                        .map(|t| (t.text.trim().to_string(), t.mean_logprob))
                        .unwrap_or_default();
                    let backchannel = !short_burst_interrupts(&text, mean_logprob)
                        && !self.is_complete_request(&text);
                    debug!(words = %log.redact(&text), mean_logprob, backchannel, "short burst recognised");
                    // Acted on once the listener confirms the caller has not
                    // spoken since (ListenerEvent::VerdictTaken).
                    self.listener.verdict(burst, backchannel);
                    if let Some(hold) = self.hold.as_mut() {
                        hold.verdict = Some(BurstVerdict::Judged { burst, end, text, backchannel });
                    }
                }
                chunk = async { self.speaking.as_mut().and_then(|s| s.stream.as_mut()).expect("guarded").next().await },
                    if self.speaking.as_ref().is_some_and(|s| s.stream.is_some()) => {
                    match chunk {
                        Some(Ok(chunk)) => {
                            if let Some(clock) = self.turn_clock.take()
                                && clock.answered.is_some()
                            {
                                let now = Some(Instant::now());
                                info!(
                                    speculation_started_ms = clock.since_speech(clock.speculation_started),
                                    recognised_ms = clock.since_speech(clock.recognised),
                                    turn_ended_ms = clock.since_speech(clock.turn_ended),
                                    answered_ms = clock.since_speech(clock.answered),
                                    first_audio_ms = clock.since_speech(now),
                                    to_first_audio_ms = clock.turn_ended.map(|t| t.elapsed().as_millis() as u64),
                                    prepared = clock.prepared,
                                    "answer's first audio queued (times from the caller's last speech)"
                                );
                            }
                            if let Some(s) = self.speaking.as_mut() {
                                s.parts.push(SpokenPart { text: chunk.text.clone(), samples: chunk.samples.len() });
                            }
                            media.handle.play(chunk.samples);
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "speech synthesis failed");
                            if let Some(s) = self.speaking.as_mut() { s.stream = None; }
                        }
                        None => {
                            if let Some(s) = self.speaking.as_mut() { s.stream = None; }
                            // A transfer does not wait for the reply to finish
                            // playing: it is all queued for sending, and the
                            // agent's phone starts ringing while the caller
                            // hears it.
                            let nothing_queued = self.speaking.as_ref().is_none_or(|s| s.queued.is_empty());
                            if self.pending_transfer.is_some() && nothing_queued {
                                return self.finish_outcome();
                            }
                            if !media.handle.is_playing() && !self.next_queued(media) {
                                if self.ending {
                                    return self.finish_outcome();
                                }
                                self.finished_speaking();
                            }
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(hold_deadline.expect("guarded")).await }, if hold_deadline.is_some() => {
                    warn!("interruption undecided; carrying on");
                    if let Some(Some(BurstVerdict::Recognising(burst, _, _))) = self.hold.as_mut().map(|h| h.verdict.take()) {
                        self.listener.verdict(burst, true);
                    }
                    self.release(media);
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
                        log.audit("reprompt", format!("caller silent; re-prompt {}", self.reprompts)).await;
                        self.say_cached(media, REPROMPT);
                    }
                }
            }
        }
    }

    /// The caller may be talking over Frontdoor: hold its audio, drop nothing.
    fn hold(&mut self, media: &mut CallMedia, onset: Duration) {
        if self.speaking.is_none() {
            return;
        }
        media.handle.pause();
        info!(
            onset_ms = onset.as_millis() as u64,
            "caller may be talking over the answer; holding it"
        );
        self.hold = Some(Hold {
            onset,
            sent_at: media.handle.stats().samples_sent,
            deadline: Instant::now() + MAX_HOLD,
            verdict: None,
        });
    }

    /// Acts on a short burst's verdict once the listener has taken it.
    async fn burst_decided(
        &mut self,
        media: &mut CallMedia,
        log: &CallLog<'_>,
        end: Duration,
        text: &str,
        backchannel: bool,
    ) {
        if backchannel {
            info!(words = %log.redact(text), "backchannel over the answer; carrying on");
            log.audit(
                "backchannel",
                format!("caller said {text:?} over the answer; it carried on"),
            )
            .await;
            self.release(media);
        } else {
            let onset = self.hold.as_ref().map_or(Duration::ZERO, |h| h.onset);
            self.barge_in(media, log, onset).await;
            self.answered_burst_end = Some(end);
            log.turn("caller", text, None).await;
            self.handle_text(media, log, text).await;
        }
    }

    /// It was not an interruption: Frontdoor carries on where it stopped.
    fn release(&mut self, media: &mut CallMedia) {
        if let Some(hold) = self.hold.take() {
            info!(
                onset_ms = hold.onset.as_millis() as u64,
                "not an interruption; the answer carries on"
            );
            media.handle.resume();
        }
    }

    /// Words that already make a request Frontdoor can act on, so the caller
    /// need not be waited for any longer.
    fn is_complete_request(&self, text: &str) -> bool {
        if text.split_whitespace().count() < 3 || trails_off(text) {
            return false;
        }
        let answer = &self.services.answer;
        let decision = answer.classify(text);
        decision.escalate != Escalation::None
            || (decision.confidence >= answer.governance().clarify_below
                && !matches!(decision.intent.as_str(), "out_of_scope" | "general_contact"))
    }

    async fn barge_in(&mut self, media: &mut CallMedia, log: &CallLog<'_>, onset: Duration) {
        let hold = self.hold.take();
        let Some(mut speaking) = self.speaking.take() else {
            media.handle.resume();
            return;
        };
        // Flush first: stale audio still playing after the caller started to
        // speak is the most common barge-in bug in this field.
        media.handle.flush();
        // Dropping the stream cancels the synthesis still running.
        speaking.stream = None;
        self.listener.bot_speaking(false);
        // The audio stopped when it was held, not when the decision came.
        let sent = hold.map_or_else(|| media.handle.stats().samples_sent, |h| h.sent_at);
        let played = sent.saturating_sub(speaking.sent_before) as usize;
        let played_ms = played as u64 * 1000 / u64::from(SAMPLE_RATE);
        let heard = speaking.heard(played);
        info!(
            onset_ms = onset.as_millis() as u64,
            played_ms,
            spoken_ms = speaking.started.elapsed().as_millis() as u64,
            "caller barged in; answer cut"
        );
        log.audit(
            "barge_in",
            format!(
                "answer cut after {played_ms} ms of audio, at {heard:?}; the whole answer was {:?}",
                speaking.text
            ),
        )
        .await;
        log.turn(
            "assistant",
            &format!("{heard}… [cut off by the caller]"),
            None,
        )
        .await;
    }

    /// How the conversation ends once Frontdoor has finished speaking.
    fn finish_outcome(&mut self) -> ActionsOutcome {
        match self.pending_transfer.take() {
            Some(request) => ActionsOutcome::Transfer(Box::new(request)),
            None => ActionsOutcome::Finished,
        }
    }

    async fn handle_text(&mut self, media: &mut CallMedia, log: &CallLog<'_>, text: &str) {
        let turn = self.conversation.respond(&self.services.answer, text);
        self.act(media, log, text, turn, None).await;
    }

    /// Works out the answer to a speculative transcript without changing
    /// the conversation, and starts synthesising it, so that when the turn
    /// ends with these words the answer is ready to play.
    fn prepare_answer(&mut self, text: String) -> PreparedAnswer {
        let mut conversation = self.conversation.clone();
        let turn = conversation.respond(&self.services.answer, &text);
        // A transfer reply with a handoff comes from the prompt cache.
        let from_prompts = matches!(turn.action, Action::Transfer { .. })
            && self.settings.handoff_available
            && self.services.prompts.get(&turn.reply).is_some();
        let stream = if from_prompts {
            None
        } else {
            self.services.tts.try_speak(&turn.reply).ok()
        };
        if let Some(clock) = self.turn_clock.as_mut() {
            clock.prepared = true;
        }
        PreparedAnswer {
            text,
            turn,
            conversation,
            stream,
            after_answers: self.answers_given,
        }
    }

    /// Acts on the answer to what the caller said: records it, carries out
    /// its action and speaks it (`prepared`: its synthesis, already started).
    async fn act(
        &mut self,
        media: &mut CallMedia,
        log: &CallLog<'_>,
        text: &str,
        turn: Turn,
        prepared: Option<TtsStream>,
    ) {
        self.reprompts = 0;
        self.answers_given += 1;
        if let Some(clock) = self.turn_clock.as_mut() {
            clock.answered = Some(Instant::now());
        }
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
                        details_json: log
                            .redact(&serde_json::to_string(slots).unwrap_or_default())
                            .into_owned(),
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
        let holding = self
            .speaking
            .as_ref()
            .is_some_and(|s| s.text == HOLDING_PHRASE);
        match prepared {
            Some(stream) => self.say_prepared(media, &turn.reply, stream),
            // "One moment, please." is not cut short by the answer it announced.
            None if holding => self.queue_more(media, &turn.reply),
            None => self.say(media, &turn.reply),
        }
        self.transcript.push(format!("caller: {text}"));
        self.transcript.push(format!("assistant: {}", turn.reply));
        if let Action::Transfer {
            reason: why,
            priority,
        } = &turn.action
            && self.settings.handoff_available
        {
            // Once the reply ("I'm putting you through") has been said, the
            // call goes to a person; the caller is never left alone.
            let intent = turn.intent.clone().unwrap_or_else(|| "unknown".into());
            self.pending_transfer = Some(crate::handoff::TransferRequest {
                call_id: log.call_id.to_string(),
                reason: *why,
                priority: *priority,
                queue: None,
                summary: format!(
                    "{} call about {}. The caller said: {}",
                    why.as_str(),
                    intent.replace('_', " "),
                    text
                ),
                transcript: self.transcript.clone(),
                safety_message: Some(self.conversation.agent_unavailable(&self.services.answer)),
            });
            self.ending = true;
            // Transfer replies are fixed per escalation category and were
            // synthesised at start-up: queue the whole reply at once, so the
            // agent's phone rings while the caller hears it.
            if self.services.prompts.get(&turn.reply).is_some() {
                self.say_cached(media, &turn.reply);
            }
            return;
        }
        if let Action::Transfer { .. } = turn.action {
            // No agents are configured: the caller is never left alone:
            // risk calls hear the safety message and the conversation stays
            // open.
            let safety = self.conversation.agent_unavailable(&self.services.answer);
            self.conversation.transfer_unavailable();
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
        self.hold = None;
        self.start_stream(media, text);
    }

    /// Speaks `text` whose synthesis is already under way in `stream`.
    fn say_prepared(&mut self, media: &mut CallMedia, text: &str, stream: TtsStream) {
        if let Some(old) = self.speaking.take() {
            media.handle.flush();
            drop(old);
        }
        self.hold = None;
        self.begin_speaking(media, text, stream);
    }

    /// Speaks `text` after whatever is being said now.
    fn queue_more(&mut self, media: &mut CallMedia, text: &str) {
        if let Some(s) = self.speaking.as_mut() {
            s.queued.push_back(text.to_string());
            if s.stream.is_none() && !media.handle.is_playing() {
                self.next_queued(media);
            }
            return;
        }
        self.start_stream(media, text);
    }

    fn start_stream(&mut self, media: &mut CallMedia, text: &str) {
        match self.services.tts.try_speak(text) {
            Ok(stream) => self.begin_speaking(media, text, stream),
            Err(e) => warn!(error = %e, "cannot synthesise; nothing said"),
        }
    }

    fn begin_speaking(&mut self, media: &mut CallMedia, text: &str, stream: TtsStream) {
        self.silence_deadline = None;
        self.listener.bot_speaking(true);
        let queued = self.speaking.take().map(|s| s.queued).unwrap_or_default();
        self.speaking = Some(Speaking {
            stream: Some(stream),
            text: text.to_string(),
            parts: Vec::new(),
            sent_before: media.handle.stats().samples_sent,
            queued,
            started: Instant::now(),
        });
    }

    /// Starts the next queued text; false when nothing is queued.
    fn next_queued(&mut self, media: &mut CallMedia) -> bool {
        let next = self.speaking.as_mut().and_then(|s| s.queued.pop_front());
        match next {
            Some(text) => {
                self.start_stream(media, &text);
                true
            }
            None => false,
        }
    }

    /// Frontdoor has finished everything it had to say.
    fn finished_speaking(&mut self) {
        self.speaking = None;
        self.hold = None;
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
                self.hold = None;
                let sent_before = media.handle.stats().samples_sent;
                let length = samples.len();
                media.handle.play(samples);
                self.silence_deadline = None;
                self.listener.bot_speaking(true);
                self.speaking = Some(Speaking {
                    stream: None,
                    text: text.to_string(),
                    parts: vec![SpokenPart {
                        text: text.to_string(),
                        samples: length,
                    }],
                    sent_before,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_that_stops_on_a_dangling_word_trails_off() {
        for words in [
            "Um, I was wondering about.",
            "I was wondering about",
            "It's about my",
            "I need to report the.",
            "My neighbour is, erm",
            "The bins were missed and",
            "I've been thinking of",
        ] {
            assert!(trails_off(words), "{words:?}");
        }
        for words in [
            "When is my bin collection day?",
            "Who do I speak to?",
            "Who do I speak to.",
            "What's it about",
            "I want to report a pothole.",
            "I can't cope any more",
            "My bin wasn't collected, can you send someone out",
            "",
        ] {
            assert!(!trails_off(words), "{words:?}");
        }
    }

    #[test]
    fn short_bursts_interrupt_only_on_evidence() {
        // Confident, but acknowledgements or too few words.
        for words in ["Amen, none.", "Mm-hmm.", "Yeah.", "", "Thank you.", "Bins"] {
            assert!(!short_burst_interrupts(words, -0.2), "{words:?}");
        }
        for words in [
            "Stop.",
            "No, wait.",
            "Hang on",
            "Can I speak to a person",
            "report a pothole",
        ] {
            assert!(short_burst_interrupts(words, -0.2), "{words:?}");
        }
    }

    #[test]
    fn mishearings_of_a_backchannel_do_not_interrupt() {
        // What Whisper made of Piper's "Mm hmm." through G.711, with the
        // scores it gave them: unsure guesses, or one word looped.
        for (words, logprob) in [
            ("And then known.", -0.8),
            ("And remember,", -1.41),
            ("And I'm not.", -0.79),
            ("Meme Meme Meme", -0.78),
            ("Amen, ma'am.", -0.61),
            ("Memo.", -1.0),
            ("Bye-huh.", -0.67),
        ] {
            assert!(!short_burst_interrupts(words, logprob), "{words:?}");
        }
        // A word that means stop counts however unsure Whisper was of it,
        // where a caller would put it.
        for words in [
            "Stop.",
            "Wait a second.",
            "Help",
            "Oh, hang on.",
            "Sorry, what?",
            "Please stop.",
            "Memo, stop.",
            "No, not that.",
            "Er, no, the other one.",
            "No, wait.",
            "Actually, hold on.",
        ] {
            assert!(short_burst_interrupts(words, -1.5), "{words:?}");
        }
        // Heard on CI (Piper's "Mm hmm." over an answer) and in the cuts
        // measured here: a stop word after a guess, or "no" and nothing else.
        for words in ["Amen, no.", "No, no, no.", "No.", "Oh no.", "Amen, no, no."] {
            assert!(!short_burst_interrupts(words, -0.67), "{words:?}");
        }
        // A confident short request interrupts; the same words guessed do not.
        assert!(short_burst_interrupts("Report a pothole.", -0.32));
        assert!(short_burst_interrupts("Say that again.", -0.12));
        assert!(!short_burst_interrupts("Report a pothole.", -1.3));
    }

    #[test]
    fn the_cut_falls_where_the_audio_stopped() {
        let speaking = Speaking {
            stream: None,
            text: "Your bins are collected on Monday. Put them out by seven.".into(),
            parts: vec![
                SpokenPart {
                    text: "Your bins are collected on Monday.".into(),
                    samples: 8_000,
                },
                SpokenPart {
                    text: "Put them out by seven.".into(),
                    samples: 4_000,
                },
            ],
            sent_before: 0,
            queued: Default::default(),
            started: Instant::now(),
        };
        assert_eq!(speaking.heard(0), "");
        assert_eq!(speaking.heard(4_000), "Your bins are");
        assert_eq!(
            speaking.heard(10_000),
            "Your bins are collected on Monday. Put them"
        );
        assert_eq!(
            speaking.heard(20_000),
            "Your bins are collected on Monday. Put them out by seven."
        );
    }
}
