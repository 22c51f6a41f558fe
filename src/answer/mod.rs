//! The answer engine: what the caller needs, what to say, and when a person
//! must take over.
//!
//! - [`knowledge`]: the council's knowledge base (`knowledge/*.toml`).
//! - [`governance`]: safeguarding and escalation rules (`governance/safeguarding.toml`).
//! - [`classifier`]: the lexical intent classifier built from the knowledge files.
//! - [`conversation`]: the per-call state machine (answers, request flows, hand-overs).
//! - [`cli`]: `classify`, `chat` and `eval` for the command line.
//!
//! Escalation is decided before intent and independently of it: a caller in
//! danger is handed over whatever service they also asked about.

pub mod classifier;
pub mod clauses;
pub mod cli;
pub mod conversation;
pub mod embed;
pub mod governance;
pub mod knowledge;
pub mod normalize;
pub mod semantic;
pub mod slots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use conversation::{
    Action, CompletedRequest, Conversation, ReferenceGenerator, TransferReason, Turn, TurnFlag,
};
pub use governance::{Escalation, EscalationDecision, Governance, Priority};
pub use knowledge::{INTENT_NAMES, KnowledgeBase};

use classifier::IntentClassifier;
use normalize::normalise;

/// Loading errors always name the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: [semantic] is enabled but its model cannot be loaded: {source}", governance.display())]
    SemanticModel {
        governance: PathBuf,
        source: embed::EmbedError,
    },
}

/// The decision for one utterance, as the `classify` command prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub intent: String,
    pub escalate: Escalation,
    pub confidence: f32,
    pub reason: String,
}

/// Confidence reported for an escalation found by a governance rule: rules
/// are explicit, so their matches are near-certain by construction.
const RULE_CONFIDENCE: f32 = 0.95;

#[derive(Debug)]
pub struct AnswerEngine {
    knowledge: KnowledgeBase,
    governance: Governance,
    classifier: IntentClassifier,
    next_seed: AtomicU64,
}

impl AnswerEngine {
    pub fn load(knowledge_dir: &Path, governance_file: &Path) -> Result<AnswerEngine, AnswerError> {
        let knowledge = KnowledgeBase::load(knowledge_dir)?;
        let mut governance = Governance::load(governance_file)?;
        let mut classifier =
            IntentClassifier::build(&knowledge.intents, &knowledge.assistant.synonyms);
        match governance.semantic_config.as_ref() {
            Some(section) if section.enabled => {
                // Enabled means required: a council that configured meaning-based
                // detection must not silently run on keywords alone.
                let scorer = semantic::SemanticScorer::load(section, &knowledge.intents).map_err(
                    |source| AnswerError::SemanticModel {
                        governance: governance_file.to_path_buf(),
                        source,
                    },
                )?;
                let scorer = std::sync::Arc::new(scorer);
                governance.attach_semantic(scorer.clone());
                classifier.attach_semantic(scorer);
            }
            Some(_) => tracing::warn!(
                file = %governance_file.display(),
                "[semantic] enabled = false: escalations are detected by rules alone"
            ),
            None => {}
        }
        // References only need to differ between calls, not be secret.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5EED, |d| d.as_nanos() as u64);
        Ok(AnswerEngine {
            knowledge,
            governance,
            classifier,
            next_seed: AtomicU64::new(seed),
        })
    }

    pub fn classify(&self, text: &str) -> Classification {
        let normalised = normalise(text);
        let decision = self.governance.assess(&normalised);
        let scores = self.classifier.classify(&normalised);
        let top = self.classifier.name(scores.ranked[0].0).to_string();
        let clarify_below = self.governance.clarify_below;

        let mut escalate = decision.escalation;
        let mut reason = decision.reason.clone();
        let mut intent = top.clone();
        let mut confidence = scores.confidence;
        if escalate == Escalation::None
            && top == "human_request"
            && scores.confidence >= clarify_below
        {
            // The knowledge base's examples caught a request for a person the rules missed.
            escalate = Escalation::HumanRequest;
            reason = format!("human_request: {}", scores.reason);
        }
        if escalate == Escalation::HumanRequest
            && (scores.confidence < clarify_below
                || matches!(top.as_str(), "general_contact" | "out_of_scope"))
        {
            intent = "human_request".into();
        }
        if escalate.is_risk() && scores.confidence < clarify_below {
            // No clear service behind a call about a person at risk: it is a
            // general contact, not a guess at some unrelated service.
            intent = "general_contact".into();
        }
        if escalate.is_escalation() {
            confidence = confidence.max(RULE_CONFIDENCE);
            reason = format!("{reason}; intent {intent}: {}", scores.reason);
        } else {
            reason = format!("{}; {reason}", scores.reason);
        }
        Classification {
            intent,
            escalate,
            confidence,
            reason,
        }
    }

    pub fn new_conversation(&self) -> Conversation {
        let seed = self
            .next_seed
            .fetch_add(0x2545_F491_4F6C_DD1D, Ordering::Relaxed);
        Conversation::new(ReferenceGenerator::seeded(seed))
    }

    /// A conversation whose request references are reproducible (tests, replays).
    pub fn new_conversation_seeded(&self, seed: u64) -> Conversation {
        Conversation::new(ReferenceGenerator::seeded(seed))
    }

    pub fn greeting(&self) -> String {
        self.knowledge.assistant.greeting.clone()
    }

    pub fn knowledge(&self) -> &KnowledgeBase {
        &self.knowledge
    }

    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    pub(crate) fn classifier(&self) -> &IntentClassifier {
        &self.classifier
    }
}
