//! The council's knowledge base: one TOML file per service area, written and
//! maintained by council staff, plus `assistant.toml` for the assistant's own
//! words (greeting, clarifying questions, goodbyes) and the recogniser's usual
//! mishearings.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::AnswerError;

/// Every intent name the classifier may emit; the `classify` contract and the
/// evaluation labels use exactly these.
pub const INTENT_NAMES: [&str; 22] = [
    "bin_missed",
    "bin_day",
    "bulky_waste",
    "council_tax_pay",
    "council_tax_discount",
    "council_tax_move",
    "benefits",
    "housing_repair",
    "homelessness",
    "adult_social_care",
    "parking_permit",
    "parking_fine",
    "planning",
    "registrar",
    "school_admissions",
    "highways",
    "environmental",
    "library",
    "debt_help",
    "human_request",
    "general_contact",
    "out_of_scope",
];

pub const ASSISTANT_FILE: &str = "assistant.toml";

/// One thing a resident may want, and what the assistant says about it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub name: String,
    /// Short spoken description used in clarifying questions ("council tax payments").
    pub title: String,
    /// The short spoken answer.
    pub answer: String,
    /// Said when the caller wants more detail.
    #[serde(default)]
    pub detail: Option<String>,
    /// How residents say it; the classifier learns from these.
    pub examples: Vec<String>,
    /// Words or phrases that on their own point strongly at this intent.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Words that almost settle it on their own ("pothole", "bailiffs").
    #[serde(default)]
    pub strong_keywords: Vec<String>,
    #[serde(default)]
    pub flow: Option<Flow>,
    /// Filled in at load time: the file the intent came from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// A request the assistant can take end to end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Request type stored with the call (e.g. `missed_bin_report`).
    pub kind: String,
    /// The flow starts only if one of these is said; empty means always.
    #[serde(default)]
    pub start_when: Vec<String>,
    /// Said when the flow starts, before the first question.
    pub intro: String,
    #[serde(rename = "slot")]
    pub slots: Vec<Slot>,
    /// Read-back with `{slot}` placeholders.
    pub confirm: String,
    /// Said on completion; `{reference}` and `{slot}` placeholders.
    pub done: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    pub kind: SlotKind,
    pub prompt: String,
}

/// How a slot's value is recognised in what the caller says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    Address,
    BinType,
    AccountReference,
    Items,
    Location,
    HighwayProblem,
}

/// The assistant's own words.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantText {
    pub greeting: String,
    pub clarify: String,
    /// `{first}` and `{second}` are intent titles.
    pub clarify_between: String,
    pub more_detail_offer: String,
    pub anything_else: String,
    pub goodbye: String,
    pub out_of_scope: String,
    pub not_heard: String,
    pub human_offer: String,
    pub human_transfer: String,
    pub start_again: String,
    pub what_to_change: String,
    pub slot_not_understood: String,
    /// Misheard or alternative words → the word the knowledge base uses.
    #[serde(default)]
    pub synonyms: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    #[allow(dead_code)] // documents the file for its editors
    service: String,
    #[serde(rename = "intent")]
    intents: Vec<Intent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistantFile {
    assistant: AssistantText,
}

#[derive(Debug)]
pub struct KnowledgeBase {
    pub intents: Vec<Intent>,
    pub assistant: AssistantText,
}

impl KnowledgeBase {
    pub fn load(dir: &Path) -> Result<KnowledgeBase, AnswerError> {
        let entries = std::fs::read_dir(dir).map_err(|source| AnswerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();

        let mut assistant = None;
        let mut intents: Vec<Intent> = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(|source| AnswerError::Io {
                path: path.clone(),
                source,
            })?;
            let invalid = |reason: String| AnswerError::Invalid {
                path: path.clone(),
                reason,
            };
            if path.file_name().is_some_and(|n| n == ASSISTANT_FILE) {
                let file: AssistantFile = toml::from_str(&text)
                    .map_err(|e| invalid(format!("not a valid assistant file: {e}")))?;
                assistant = Some(file.assistant);
                continue;
            }
            let file: ServiceFile = toml::from_str(&text)
                .map_err(|e| invalid(format!("not a valid knowledge file: {e}")))?;
            for mut intent in file.intents {
                validate_intent(&intent).map_err(invalid)?;
                if let Some(existing) = intents.iter().find(|i| i.name == intent.name) {
                    return Err(invalid(format!(
                        "intent `{}` is already defined in {}",
                        intent.name,
                        existing.source.display()
                    )));
                }
                intent.source = path.clone();
                intents.push(intent);
            }
        }

        let assistant = assistant.ok_or_else(|| AnswerError::Invalid {
            path: dir.join(ASSISTANT_FILE),
            reason: "missing: the assistant's greeting and prompts live here".into(),
        })?;
        let defined: HashSet<&str> = intents.iter().map(|i| i.name.as_str()).collect();
        let missing: Vec<&str> = INTENT_NAMES
            .iter()
            .copied()
            .filter(|n| !defined.contains(n))
            .collect();
        if !missing.is_empty() {
            return Err(AnswerError::Invalid {
                path: dir.to_path_buf(),
                reason: format!("no knowledge file defines: {}", missing.join(", ")),
            });
        }
        Ok(KnowledgeBase { intents, assistant })
    }

    pub fn intent(&self, name: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.name == name)
    }
}

fn validate_intent(intent: &Intent) -> Result<(), String> {
    let name = &intent.name;
    if !INTENT_NAMES.contains(&name.as_str()) {
        return Err(format!(
            "intent `{name}` is not one of the known intents ({})",
            INTENT_NAMES.join(", ")
        ));
    }
    if intent.examples.is_empty() {
        return Err(format!(
            "intent `{name}`: needs examples of how residents ask for it"
        ));
    }
    for text in std::iter::once(&intent.answer).chain(intent.detail.iter()) {
        if text.trim().is_empty() {
            return Err(format!("intent `{name}`: answer text is empty"));
        }
        // Answers are spoken; a web address read aloud helps nobody.
        let lower = text.to_lowercase();
        if lower.contains("http") || lower.contains("www.") || lower.contains(".gov.uk") {
            return Err(format!(
                "intent `{name}`: spoken answers must not contain web addresses"
            ));
        }
    }
    if let Some(flow) = &intent.flow {
        if flow.slots.is_empty() {
            return Err(format!("intent `{name}`: a flow needs at least one slot"));
        }
        let slot_names: HashSet<&str> = flow.slots.iter().map(|s| s.name.as_str()).collect();
        for template in [&flow.confirm, &flow.done] {
            for placeholder in placeholders(template) {
                if placeholder != "reference" && !slot_names.contains(placeholder) {
                    return Err(format!(
                        "intent `{name}`: flow text uses {{{placeholder}}} but no slot has that name"
                    ));
                }
            }
        }
        if !flow.done.contains("{reference}") {
            return Err(format!(
                "intent `{name}`: the flow's done text must give the caller their {{reference}}"
            ));
        }
    }
    Ok(())
}

/// Names inside `{...}` in a template.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Fills `{name}` placeholders; unknown names are left as they are.
pub fn fill_template(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let key = &after[..end];
                match values.get(key) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
