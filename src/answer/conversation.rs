//! One caller's conversation with the assistant: a plain state machine fed one
//! utterance at a time. It does no I/O and reads no clock, so the call
//! pipeline, the `chat` command and the tests all drive the same code.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AnswerEngine;
use super::classifier::IntentScores;
use super::governance::{Escalation, EscalationDecision, Priority};
use super::knowledge::{Flow, Intent, fill_template};
use super::normalize::{normalise, tokens};
use super::slots;

/// Why a call is handed to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferReason {
    Emergency,
    Distress,
    Safeguarding,
    HumanRequest,
    /// The assistant is not getting anywhere: repeated low confidence,
    /// repetition, failed clarifications or frustration.
    Complexity,
    /// A supervisor took the call over from the dashboard.
    Supervisor,
}

impl TransferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferReason::Emergency => "emergency",
            TransferReason::Distress => "distress",
            TransferReason::Safeguarding => "safeguarding",
            TransferReason::HumanRequest => "human_request",
            TransferReason::Complexity => "complexity",
            TransferReason::Supervisor => "supervisor",
        }
    }

    fn from_escalation(escalation: Escalation) -> TransferReason {
        match escalation {
            Escalation::Emergency => TransferReason::Emergency,
            Escalation::Distress => TransferReason::Distress,
            Escalation::Safeguarding => TransferReason::Safeguarding,
            Escalation::HumanRequest | Escalation::None => TransferReason::HumanRequest,
        }
    }
}

/// What the call pipeline must do after speaking the reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Continue,
    Transfer {
        reason: TransferReason,
        priority: Priority,
    },
    Hangup,
    /// A request the assistant took end to end (a "deflected" call).
    RequestCompleted {
        reference: String,
        kind: String,
        slots: BTreeMap<String, String>,
    },
}

/// Notable things about a turn, for the call record and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnFlag {
    NothingHeard,
    LowConfidence,
    Clarifying,
    Repeated,
    Frustration,
    Correction,
    StartAgain,
    FlowStarted,
    SlotFilled,
    ReadBack,
    OutOfScope,
    HumanOffered,
}

/// The assistant's response to one utterance.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    /// What to say to the caller.
    pub reply: String,
    /// The service the caller is talking about, when known.
    pub intent: Option<String>,
    pub confidence: f32,
    pub escalation: Escalation,
    /// Why the assistant did what it did (rule ids, scores), for the audit trail.
    pub reason: String,
    pub flags: Vec<TurnFlag>,
    pub action: Action,
}

/// A request completed during the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletedRequest {
    pub reference: String,
    pub kind: String,
    pub slots: BTreeMap<String, String>,
}

/// Deterministic request references such as `FD-7K4M2Q`: seeded per
/// conversation so tests can predict them, unambiguous when read aloud
/// (no 0/O or 1/I).
#[derive(Debug, Clone)]
pub struct ReferenceGenerator {
    state: u64,
}

const REFERENCE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

impl ReferenceGenerator {
    pub fn seeded(seed: u64) -> ReferenceGenerator {
        ReferenceGenerator { state: seed }
    }

    pub fn next_reference(&mut self) -> String {
        // splitmix64: cheap, well distributed, reproducible from the seed.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut reference = String::from("FD-");
        for i in 0..6 {
            let index = ((z >> (i * 5)) & 31) as usize;
            reference.push(char::from(REFERENCE_ALPHABET[index]));
        }
        reference
    }
}

/// "FD-7K4M2Q" → "F D, 7 K 4 M 2 Q" so text-to-speech spells it out.
pub fn speakable_reference(reference: &str) -> String {
    let (prefix, code) = reference.split_once('-').unwrap_or(("", reference));
    let spell = |s: &str| s.chars().map(String::from).collect::<Vec<_>>().join(" ");
    if prefix.is_empty() {
        spell(code)
    } else {
        format!("{}, {}", spell(prefix), spell(code))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FlowProgress {
    intent: String,
    values: BTreeMap<String, String>,
    failed_prompts: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum DialogueState {
    Open,
    Clarifying,
    AnythingElse,
    OfferedDetail { intent: String },
    Filling(FlowProgress),
    Confirming(FlowProgress),
    AwaitingCorrection(FlowProgress),
    Finished,
}

/// A conversation with one caller. Create with [`AnswerEngine::new_conversation`].
#[derive(Debug, Clone)]
pub struct Conversation {
    state: DialogueState,
    previous_utterance: Option<String>,
    low_confidence_turns: u32,
    failed_clarifications: u32,
    repeats: u32,
    human_offered: bool,
    last_transfer: Option<TransferReason>,
    references: ReferenceGenerator,
    completed: Vec<CompletedRequest>,
}

impl Conversation {
    pub(crate) fn new(references: ReferenceGenerator) -> Conversation {
        Conversation {
            state: DialogueState::Open,
            previous_utterance: None,
            low_confidence_turns: 0,
            failed_clarifications: 0,
            repeats: 0,
            human_offered: false,
            last_transfer: None,
            references,
            completed: Vec::new(),
        }
    }

    /// Requests completed so far, to store with the call.
    pub fn completed_requests(&self) -> &[CompletedRequest] {
        &self.completed
    }

    /// True once the assistant has handed over or said goodbye.
    pub fn is_finished(&self) -> bool {
        self.state == DialogueState::Finished
    }

    /// The transfer this conversation asked for cannot happen (no agents
    /// are configured on the route): the conversation goes on, so what the
    /// caller says next is answered, never met with a goodbye. Risk calls
    /// keep their safety message (`agent_unavailable`).
    pub fn transfer_unavailable(&mut self) {
        if self.state == DialogueState::Finished && self.last_transfer.is_some() {
            self.state = DialogueState::Open;
        }
    }

    /// What to say when a transfer was requested but no agent is free. Risk
    /// transfers get the safety message (999, Samaritans).
    pub fn agent_unavailable(&self, engine: &AnswerEngine) -> String {
        let safety = &engine.governance().safety;
        match self.last_transfer {
            Some(
                TransferReason::Emergency | TransferReason::Distress | TransferReason::Safeguarding,
            ) => safety.no_agent_available.clone(),
            _ => safety.no_agent_available_routine.clone(),
        }
    }

    pub fn respond(&mut self, engine: &AnswerEngine, text: &str) -> Turn {
        let words = &engine.knowledge().assistant;
        if self.state == DialogueState::Finished {
            return simple_turn(
                words.goodbye.clone(),
                "conversation already ended",
                Action::Hangup,
            );
        }
        let normalised = normalise(text);

        // Risk to a person comes before anything else the caller said.
        let decision = engine.governance().assess(&normalised);
        if decision.escalation.is_risk() {
            return self.transfer_for_risk(engine, &decision);
        }

        let policy = &engine.governance().complexity;
        if normalised.is_empty() {
            self.low_confidence_turns += 1;
            if self.low_confidence_turns >= policy.max_low_confidence_turns {
                return self.transfer_for_complexity(
                    engine,
                    format!(
                        "complexity: {} turns without understanding (nothing heard)",
                        self.low_confidence_turns
                    ),
                    vec![TurnFlag::NothingHeard],
                );
            }
            let mut turn = simple_turn(words.not_heard.clone(), "nothing heard", Action::Continue);
            turn.flags.push(TurnFlag::NothingHeard);
            return turn;
        }

        if let Some((rule, hit)) = policy.frustration(&normalised) {
            return self.transfer_for_complexity(
                engine,
                format!("complexity: frustration rule {rule} matched \"{hit}\""),
                vec![TurnFlag::Frustration],
            );
        }

        let repeated = self.is_repeat(&normalised, policy.repeat_similarity);
        self.previous_utterance = Some(normalised.clone());
        if repeated {
            self.repeats += 1;
            if self.repeats >= policy.max_repeats {
                return self.transfer_for_complexity(
                    engine,
                    format!(
                        "complexity: caller repeated themselves {} times",
                        self.repeats
                    ),
                    vec![TurnFlag::Repeated],
                );
            }
        }

        if is_start_again(&normalised) {
            self.state = DialogueState::Open;
            self.failed_clarifications = 0;
            let mut turn = simple_turn(
                words.start_again.clone(),
                "caller asked to start again",
                Action::Continue,
            );
            turn.flags.push(TurnFlag::StartAgain);
            return turn;
        }

        let scores = engine.classifier().classify(&normalised);
        let top_intent = engine.classifier().name(scores.ranked[0].0).to_string();
        let clarify_below = engine.governance().clarify_below;
        let asks_for_person = decision.escalation == Escalation::HumanRequest
            || (top_intent == "human_request" && scores.confidence >= clarify_below);
        if asks_for_person {
            return self.handle_human_request(engine, &normalised, &decision, &scores);
        }

        let mut turn = match std::mem::replace(&mut self.state, DialogueState::Open) {
            DialogueState::Filling(progress) => {
                self.continue_flow(engine, progress, &normalised, &scores)
            }
            DialogueState::Confirming(progress) => self.confirm_flow(engine, progress, &normalised),
            DialogueState::AwaitingCorrection(progress) => {
                self.apply_correction(engine, progress, &normalised)
            }
            DialogueState::OfferedDetail { intent } if is_yes(&normalised) => {
                let detail = engine
                    .knowledge()
                    .intent(&intent)
                    .and_then(|i| i.detail.clone())
                    .unwrap_or_default();
                self.state = DialogueState::AnythingElse;
                let mut turn = simple_turn(
                    join_sentences(&detail, &words.anything_else),
                    "caller asked for more detail",
                    Action::Continue,
                );
                turn.intent = Some(intent);
                turn
            }
            DialogueState::OfferedDetail { .. } | DialogueState::AnythingElse
                if is_no(&normalised) || is_goodbye(&normalised) =>
            {
                self.finish_with_goodbye(engine)
            }
            DialogueState::AnythingElse
                if is_yes(&normalised) && tokens(&normalised).count() <= 2 =>
            {
                self.state = DialogueState::Open;
                simple_turn(
                    words.clarify.clone(),
                    "caller has another enquiry",
                    Action::Continue,
                )
            }
            DialogueState::Open if is_goodbye(&normalised) => self.finish_with_goodbye(engine),
            previous => self.new_enquiry(
                engine,
                &normalised,
                &scores,
                previous == DialogueState::Clarifying,
            ),
        };
        if repeated {
            turn.flags.push(TurnFlag::Repeated);
        }
        turn
    }

    fn is_repeat(&self, normalised: &str, threshold: f32) -> bool {
        let Some(previous) = &self.previous_utterance else {
            return false;
        };
        let current: std::collections::HashSet<&str> = tokens(normalised).collect();
        let before: std::collections::HashSet<&str> = tokens(previous).collect();
        // Short answers ("yes", "the blue one") legitimately recur.
        if current.len() < 3 || before.len() < 3 {
            return false;
        }
        let shared = current.intersection(&before).count() as f32;
        let union = current.union(&before).count() as f32;
        union > 0.0 && shared / union >= threshold
    }

    fn transfer_for_risk(&mut self, engine: &AnswerEngine, decision: &EscalationDecision) -> Turn {
        let reason = TransferReason::from_escalation(decision.escalation);
        let (message, priority) = engine.governance().policy(decision.escalation).map_or_else(
            || {
                (
                    engine.governance().safety.no_agent_available.clone(),
                    Priority::Urgent,
                )
            },
            |p| (p.message.clone(), p.priority),
        );
        self.state = DialogueState::Finished;
        self.last_transfer = Some(reason);
        Turn {
            reply: message,
            intent: None,
            confidence: 1.0,
            escalation: decision.escalation,
            reason: decision.reason.clone(),
            flags: Vec::new(),
            action: Action::Transfer { reason, priority },
        }
    }

    fn transfer_for_complexity(
        &mut self,
        engine: &AnswerEngine,
        reason: String,
        flags: Vec<TurnFlag>,
    ) -> Turn {
        let policy = &engine.governance().complexity;
        self.state = DialogueState::Finished;
        self.last_transfer = Some(TransferReason::Complexity);
        Turn {
            reply: policy.message.clone(),
            intent: None,
            confidence: 0.0,
            escalation: Escalation::None,
            reason,
            flags,
            action: Action::Transfer {
                reason: TransferReason::Complexity,
                priority: policy.priority,
            },
        }
    }

    fn handle_human_request(
        &mut self,
        engine: &AnswerEngine,
        normalised: &str,
        decision: &EscalationDecision,
        scores: &IntentScores,
    ) -> Turn {
        let words = &engine.knowledge().assistant;
        let reason = if decision.escalation == Escalation::HumanRequest {
            decision.reason.clone()
        } else {
            format!("human_request: {}", scores.reason)
        };
        // At most one offer to help: a second ask, an insistent ask, or an ask
        // after the assistant already struggled goes straight through.
        let insists = tokens(normalised).any(|w| {
            matches!(
                w,
                "machine"
                    | "robot"
                    | "computer"
                    | "bot"
                    | "automated"
                    | "just"
                    | "now"
                    | "straight"
                    | "real"
                    | "actual"
            )
        });
        if self.human_offered
            || insists
            || self.failed_clarifications > 0
            || self.low_confidence_turns > 0
        {
            let priority = engine
                .governance()
                .policy(Escalation::HumanRequest)
                .map_or(Priority::Normal, |p| p.priority);
            self.state = DialogueState::Finished;
            self.last_transfer = Some(TransferReason::HumanRequest);
            return Turn {
                reply: words.human_transfer.clone(),
                intent: Some("human_request".into()),
                confidence: 1.0,
                escalation: Escalation::HumanRequest,
                reason,
                flags: Vec::new(),
                action: Action::Transfer {
                    reason: TransferReason::HumanRequest,
                    priority,
                },
            };
        }
        self.human_offered = true;
        self.state = DialogueState::Open;
        Turn {
            reply: words.human_offer.clone(),
            intent: Some("human_request".into()),
            confidence: 1.0,
            escalation: Escalation::HumanRequest,
            reason: format!("{reason}; offered help once before transferring"),
            flags: vec![TurnFlag::HumanOffered],
            action: Action::Continue,
        }
    }

    fn finish_with_goodbye(&mut self, engine: &AnswerEngine) -> Turn {
        self.state = DialogueState::Finished;
        simple_turn(
            engine.knowledge().assistant.goodbye.clone(),
            "caller has nothing else",
            Action::Hangup,
        )
    }

    fn new_enquiry(
        &mut self,
        engine: &AnswerEngine,
        normalised: &str,
        scores: &IntentScores,
        was_clarifying: bool,
    ) -> Turn {
        let words = &engine.knowledge().assistant;
        let classifier = engine.classifier();
        let policy = &engine.governance().complexity;
        let (top, _) = scores.ranked[0];
        let intent_name = classifier.name(top).to_string();

        if scores.confidence < engine.governance().clarify_below {
            self.low_confidence_turns += 1;
            if was_clarifying {
                self.failed_clarifications += 1;
            }
            if self.failed_clarifications >= policy.max_failed_clarifications {
                return self.transfer_for_complexity(
                    engine,
                    format!(
                        "complexity: {} clarifications failed ({})",
                        self.failed_clarifications, scores.reason
                    ),
                    vec![TurnFlag::LowConfidence],
                );
            }
            if self.low_confidence_turns >= policy.max_low_confidence_turns {
                return self.transfer_for_complexity(
                    engine,
                    format!(
                        "complexity: {} low-confidence turns ({})",
                        self.low_confidence_turns, scores.reason
                    ),
                    vec![TurnFlag::LowConfidence],
                );
            }
            self.state = DialogueState::Clarifying;
            let question = match (scores.ranked.first(), scores.ranked.get(1)) {
                (Some((first, best)), Some((second, next)))
                    if *next > 0.6 * best
                        && classifier.name(*first) != "out_of_scope"
                        && classifier.name(*second) != "out_of_scope" =>
                {
                    let title = |i: usize| {
                        engine
                            .knowledge()
                            .intent(classifier.name(i))
                            .map_or_else(String::new, |x| x.title.clone())
                    };
                    let mut values = BTreeMap::new();
                    values.insert("first".to_string(), title(*first));
                    values.insert("second".to_string(), title(*second));
                    fill_template(&words.clarify_between, &values)
                }
                _ => words.clarify.clone(),
            };
            return Turn {
                reply: question,
                intent: None,
                confidence: scores.confidence,
                escalation: Escalation::None,
                reason: format!("low confidence, asking once: {}", scores.reason),
                flags: vec![TurnFlag::LowConfidence, TurnFlag::Clarifying],
                action: Action::Continue,
            };
        }
        self.failed_clarifications = 0;

        let Some(intent) = engine.knowledge().intent(&intent_name) else {
            return simple_turn(
                words.clarify.clone(),
                "intent without knowledge",
                Action::Continue,
            );
        };
        if intent.name == "out_of_scope" {
            self.state = DialogueState::AnythingElse;
            let mut turn = answered_turn(
                intent,
                scores,
                join_sentences(&intent.answer, &words.anything_else),
            );
            turn.flags.push(TurnFlag::OutOfScope);
            return turn;
        }
        if let Some(flow) = &intent.flow {
            let starts = flow.start_when.is_empty()
                || flow
                    .start_when
                    .iter()
                    .any(|w| contains_phrase(normalised, &normalise(w)));
            if starts {
                return self.start_flow(engine, intent, flow, normalised, scores);
            }
        }
        let reply = if intent.detail.is_some() {
            self.state = DialogueState::OfferedDetail {
                intent: intent.name.clone(),
            };
            join_sentences(&intent.answer, &words.more_detail_offer)
        } else {
            self.state = DialogueState::AnythingElse;
            join_sentences(&intent.answer, &words.anything_else)
        };
        answered_turn(intent, scores, reply)
    }

    fn start_flow(
        &mut self,
        engine: &AnswerEngine,
        intent: &Intent,
        flow: &Flow,
        normalised: &str,
        scores: &IntentScores,
    ) -> Turn {
        let mut progress = FlowProgress {
            intent: intent.name.clone(),
            values: BTreeMap::new(),
            failed_prompts: 0,
        };
        // Details already given in the first sentence are not asked again.
        for slot in &flow.slots {
            if let Some(value) = slots::extract(slot.kind, normalised, false) {
                progress.values.insert(slot.name.clone(), value);
            }
        }
        let (next, flags) = self.next_step(engine, flow, progress);
        let mut turn = answered_turn(intent, scores, join_sentences(&flow.intro, &next));
        turn.flags.push(TurnFlag::FlowStarted);
        turn.flags.extend(flags);
        turn
    }

    /// Asks for the next missing slot, or reads everything back.
    fn next_step(
        &mut self,
        _engine: &AnswerEngine,
        flow: &Flow,
        progress: FlowProgress,
    ) -> (String, Vec<TurnFlag>) {
        match flow
            .slots
            .iter()
            .find(|s| !progress.values.contains_key(&s.name))
        {
            Some(slot) => {
                let prompt = slot.prompt.clone();
                self.state = DialogueState::Filling(progress);
                (prompt, Vec::new())
            }
            None => {
                let read_back = fill_template(&flow.confirm, &progress.values);
                self.state = DialogueState::Confirming(progress);
                (read_back, vec![TurnFlag::ReadBack])
            }
        }
    }

    fn continue_flow(
        &mut self,
        engine: &AnswerEngine,
        mut progress: FlowProgress,
        normalised: &str,
        scores: &IntentScores,
    ) -> Turn {
        let words = &engine.knowledge().assistant;
        let Some((intent, flow)) = flow_of(engine, &progress.intent) else {
            return simple_turn(
                words.clarify.clone(),
                "flow no longer defined",
                Action::Continue,
            );
        };
        let Some(asked) = flow
            .slots
            .iter()
            .find(|s| !progress.values.contains_key(&s.name))
        else {
            let (reply, flags) = self.next_step(engine, flow, progress);
            let mut turn = answered_turn(intent, scores, reply);
            turn.flags.extend(flags);
            return turn;
        };

        // A confident, different enquiry with no usable detail is a change of topic.
        let strict_value = slots::extract(asked.kind, normalised, false);
        let top = engine.classifier().name(scores.ranked[0].0);
        if strict_value.is_none()
            && top != progress.intent
            && top != "out_of_scope"
            && scores.confidence >= 0.75
        {
            return self.new_enquiry(engine, normalised, scores, false);
        }

        let value = strict_value.or_else(|| slots::extract(asked.kind, normalised, true));
        let Some(value) = value else {
            progress.failed_prompts += 1;
            if progress.failed_prompts >= engine.governance().complexity.max_failed_clarifications {
                return self.transfer_for_complexity(
                    engine,
                    format!(
                        "complexity: could not get the {} after {} tries",
                        asked.name, progress.failed_prompts
                    ),
                    vec![TurnFlag::LowConfidence],
                );
            }
            let reply = join_sentences(&words.slot_not_understood, &asked.prompt);
            self.state = DialogueState::Filling(progress);
            let mut turn = answered_turn(intent, scores, reply);
            turn.reason = format!("no {} found in the answer", asked.name);
            turn.flags.push(TurnFlag::LowConfidence);
            return turn;
        };
        progress.values.insert(asked.name.clone(), value);
        progress.failed_prompts = 0;
        for slot in &flow.slots {
            if !progress.values.contains_key(&slot.name)
                && let Some(extra) = slots::extract(slot.kind, normalised, false)
            {
                progress.values.insert(slot.name.clone(), extra);
            }
        }
        let (reply, flags) = self.next_step(engine, flow, progress);
        let mut turn = answered_turn(intent, scores, reply);
        turn.reason = format!("filled {}", asked.name);
        turn.confidence = 1.0;
        turn.flags.push(TurnFlag::SlotFilled);
        turn.flags.extend(flags);
        turn
    }

    fn confirm_flow(
        &mut self,
        engine: &AnswerEngine,
        mut progress: FlowProgress,
        normalised: &str,
    ) -> Turn {
        let words = &engine.knowledge().assistant;
        let Some((intent, flow)) = flow_of(engine, &progress.intent) else {
            return simple_turn(
                words.clarify.clone(),
                "flow no longer defined",
                Action::Continue,
            );
        };
        if corrections(flow, &mut progress, normalised, false) {
            return self.read_back_after_correction(engine, flow, progress);
        }
        if is_no(normalised) {
            self.state = DialogueState::AwaitingCorrection(progress);
            let mut turn = simple_turn(
                words.what_to_change.clone(),
                "caller said the read-back is wrong",
                Action::Continue,
            );
            turn.intent = Some(intent.name.clone());
            turn.flags.push(TurnFlag::Correction);
            return turn;
        }
        if is_yes(normalised) {
            let reference = self.references.next_reference();
            let mut values = progress.values.clone();
            values.insert("reference".into(), speakable_reference(&reference));
            let reply = join_sentences(&fill_template(&flow.done, &values), &words.anything_else);
            self.completed.push(CompletedRequest {
                reference: reference.clone(),
                kind: flow.kind.clone(),
                slots: progress.values.clone(),
            });
            self.state = DialogueState::AnythingElse;
            return Turn {
                reply,
                intent: Some(intent.name.clone()),
                confidence: 1.0,
                escalation: Escalation::None,
                reason: format!("caller confirmed {}; reference {reference}", flow.kind),
                flags: Vec::new(),
                action: Action::RequestCompleted {
                    reference,
                    kind: flow.kind.clone(),
                    slots: progress.values,
                },
            };
        }
        progress.failed_prompts += 1;
        if progress.failed_prompts >= engine.governance().complexity.max_failed_clarifications {
            return self.transfer_for_complexity(
                engine,
                "complexity: read-back neither confirmed nor corrected".into(),
                vec![TurnFlag::ReadBack],
            );
        }
        let reply = fill_template(&flow.confirm, &progress.values);
        self.state = DialogueState::Confirming(progress);
        let mut turn = simple_turn(reply, "asked again for yes or no", Action::Continue);
        turn.intent = Some(intent.name.clone());
        turn.flags.push(TurnFlag::ReadBack);
        turn
    }

    fn apply_correction(
        &mut self,
        engine: &AnswerEngine,
        mut progress: FlowProgress,
        normalised: &str,
    ) -> Turn {
        let words = &engine.knowledge().assistant;
        let Some((intent, flow)) = flow_of(engine, &progress.intent) else {
            return simple_turn(
                words.clarify.clone(),
                "flow no longer defined",
                Action::Continue,
            );
        };
        if corrections(flow, &mut progress, normalised, true) {
            return self.read_back_after_correction(engine, flow, progress);
        }
        progress.failed_prompts += 1;
        if progress.failed_prompts >= engine.governance().complexity.max_failed_clarifications {
            return self.transfer_for_complexity(
                engine,
                "complexity: could not understand the correction".into(),
                vec![TurnFlag::Correction],
            );
        }
        self.state = DialogueState::AwaitingCorrection(progress);
        let mut turn = simple_turn(
            words.what_to_change.clone(),
            "correction not understood",
            Action::Continue,
        );
        turn.intent = Some(intent.name.clone());
        turn
    }

    fn read_back_after_correction(
        &mut self,
        engine: &AnswerEngine,
        flow: &Flow,
        progress: FlowProgress,
    ) -> Turn {
        let intent = progress.intent.clone();
        let (reply, mut flags) = self.next_step(engine, flow, progress);
        flags.push(TurnFlag::Correction);
        Turn {
            reply,
            intent: Some(intent),
            confidence: 1.0,
            escalation: Escalation::None,
            reason: "caller corrected a detail".into(),
            flags,
            action: Action::Continue,
        }
    }
}

/// Updates slots from a correction. With `free` (the caller was asked what to
/// change) the answer may be taken as the new value of the one slot it fits.
fn corrections(flow: &Flow, progress: &mut FlowProgress, normalised: &str, free: bool) -> bool {
    use super::knowledge::SlotKind;
    let mut changed = false;
    for slot in &flow.slots {
        let current = progress.values.get(&slot.name).cloned().unwrap_or_default();
        let updated = match slot.kind {
            SlotKind::Address | SlotKind::Location => slots::correct_number(&current, normalised)
                .or_else(|| slots::extract(slot.kind, normalised, false)),
            _ => slots::extract(slot.kind, normalised, false),
        };
        if let Some(value) = updated
            && value != current
        {
            progress.values.insert(slot.name.clone(), value);
            changed = true;
        }
    }
    if !changed && free {
        // "it's Ashbourne Close" after "what needs changing?": one free-text slot takes it.
        let free_slots: Vec<_> = flow
            .slots
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    SlotKind::Address | SlotKind::Location | SlotKind::Items
                )
            })
            .collect();
        if let [only] = free_slots.as_slice()
            && let Some(value) = slots::extract(only.kind, normalised, true)
        {
            progress.values.insert(only.name.clone(), value);
            changed = true;
        }
    }
    changed
}

fn flow_of<'e>(engine: &'e AnswerEngine, intent: &str) -> Option<(&'e Intent, &'e Flow)> {
    let intent = engine.knowledge().intent(intent)?;
    intent.flow.as_ref().map(|flow| (intent, flow))
}

fn simple_turn(reply: String, reason: &str, action: Action) -> Turn {
    Turn {
        reply,
        intent: None,
        confidence: 0.0,
        escalation: Escalation::None,
        reason: reason.to_string(),
        flags: Vec::new(),
        action,
    }
}

fn answered_turn(intent: &Intent, scores: &IntentScores, reply: String) -> Turn {
    Turn {
        reply,
        intent: Some(intent.name.clone()),
        confidence: scores.confidence,
        escalation: Escalation::None,
        reason: scores.reason.clone(),
        flags: Vec::new(),
        action: Action::Continue,
    }
}

fn join_sentences(first: &str, second: &str) -> String {
    match (first.trim().is_empty(), second.trim().is_empty()) {
        (true, _) => second.trim().to_string(),
        (_, true) => first.trim().to_string(),
        _ => format!("{} {}", first.trim(), second.trim()),
    }
}

fn contains_phrase(normalised: &str, phrase: &str) -> bool {
    !phrase.is_empty() && format!(" {normalised} ").contains(&format!(" {phrase} "))
}

fn is_yes(normalised: &str) -> bool {
    if is_no(normalised) {
        return false;
    }
    let padded = format!(" {normalised} ");
    [
        " yes ",
        " yeah ",
        " yep ",
        " yup ",
        " yes please ",
        " correct ",
        " thats right ",
        " right ",
        " sure ",
        " please ",
        " go on ",
        " ok ",
        " okay ",
        " aye ",
        " absolutely ",
        " definitely ",
        " it is ",
        " thats it ",
        " that is right ",
        " spot on ",
        " lovely ",
        " perfect ",
    ]
    .iter()
    .any(|w| padded.contains(w))
}

fn is_no(normalised: &str) -> bool {
    let first = tokens(normalised).next().unwrap_or("");
    matches!(first, "no" | "nope" | "nah" | "wrong" | "incorrect")
        || normalised.starts_with("thats wrong")
        || normalised.starts_with("thats not right")
        || normalised.starts_with("not quite")
        || normalised.starts_with("thats not")
}

fn is_goodbye(normalised: &str) -> bool {
    let padded = format!(" {normalised} ");
    [
        " bye ",
        " goodbye ",
        " thats all ",
        " thats it ",
        " nothing else ",
        " no thanks ",
        " no thank you ",
        " thats everything ",
        " all done ",
        " cheers bye ",
        " ta ra ",
        " tara ",
    ]
    .iter()
    .any(|w| padded.contains(w))
}

fn is_start_again(normalised: &str) -> bool {
    let padded = format!(" {normalised} ");
    [
        " start again ",
        " start over ",
        " begin again ",
        " from the beginning ",
        " from the start ",
        " reset ",
    ]
    .iter()
    .any(|w| padded.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_reproducible_and_speakable() {
        let mut a = ReferenceGenerator::seeded(7);
        let mut b = ReferenceGenerator::seeded(7);
        let first = a.next_reference();
        assert_eq!(first, b.next_reference());
        assert_ne!(first, a.next_reference());
        assert!(first.starts_with("FD-") && first.len() == 9);
        assert!(!first[3..].contains(['0', 'O', '1', 'I']));
        assert_eq!(speakable_reference("FD-7K4M2Q"), "F D, 7 K 4 M 2 Q");
    }

    #[test]
    fn yes_no_and_goodbye() {
        assert!(is_yes("yes thats right"));
        assert!(!is_yes("no thats wrong"));
        assert!(is_no("no number twelve not twenty"));
        assert!(is_goodbye("no thats all thanks"));
        assert!(is_start_again("can we start again please"));
    }
}
