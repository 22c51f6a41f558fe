//! Safeguarding and escalation rules, loaded from a file a safeguarding lead
//! owns (`governance/safeguarding.toml`).
//!
//! Detection is deliberately rule-based: every escalation must be explainable
//! to an auditor by the rule that fired, and a lead must be able to add a
//! phrase they heard on a call without a programmer or a retrained model.
//! Figurative guards *mask* the words they match rather than veto the whole
//! utterance, so "this is killing me, I want to end it all" still escalates.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::AnswerError;
use super::normalize::normalise;
use super::semantic::{SemanticScorer, SemanticSection};

/// What the engine must do about the person, whatever the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    None,
    Distress,
    Safeguarding,
    Emergency,
    HumanRequest,
}

impl Escalation {
    pub const ALL_ESCALATING: [Escalation; 4] = [
        Escalation::Emergency,
        Escalation::Distress,
        Escalation::Safeguarding,
        Escalation::HumanRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Escalation::None => "none",
            Escalation::Distress => "distress",
            Escalation::Safeguarding => "safeguarding",
            Escalation::Emergency => "emergency",
            Escalation::HumanRequest => "human_request",
        }
    }

    pub fn parse(name: &str) -> Option<Escalation> {
        Some(match name {
            "none" => Escalation::None,
            "distress" => Escalation::Distress,
            "safeguarding" => Escalation::Safeguarding,
            "emergency" => Escalation::Emergency,
            "human_request" => Escalation::HumanRequest,
            _ => return None,
        })
    }

    pub fn is_escalation(self) -> bool {
        self != Escalation::None
    }

    /// Risk to a person (as opposed to a preference for a human).
    pub fn is_risk(self) -> bool {
        matches!(
            self,
            Escalation::Distress | Escalation::Safeguarding | Escalation::Emergency
        )
    }
}

/// How urgently the contact centre must pick up a transferred call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
}

/// What an escalation category does once it fires.
#[derive(Debug, Clone)]
pub struct CategoryPolicy {
    pub threshold: f32,
    pub priority: Priority,
    pub queue: String,
    /// Spoken to the caller before the transfer.
    pub message: String,
}

/// Messages a caller must hear whatever else fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyMessages {
    /// Played when no agent can take a transferred call at risk.
    pub no_agent_available: String,
    /// Played when no agent can take an ordinary transfer.
    pub no_agent_available_routine: String,
}

/// Thresholds for handing over a conversation that is not working.
#[derive(Debug, Clone)]
pub struct ComplexityPolicy {
    pub max_low_confidence_turns: u32,
    pub max_failed_clarifications: u32,
    pub max_repeats: u32,
    pub repeat_similarity: f32,
    pub priority: Priority,
    pub message: String,
    frustration: Vec<CompiledMatcher>,
}

impl ComplexityPolicy {
    /// The frustration rule that matched, if the caller is fed up with the assistant.
    pub fn frustration(&self, normalised: &str) -> Option<(String, String)> {
        self.frustration
            .iter()
            .find_map(|m| m.find(normalised).map(|hit| (m.id.clone(), hit)))
    }
}

/// The outcome of assessing one utterance, with its audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationDecision {
    pub escalation: Escalation,
    /// Summed weight of the fired rules in the chosen category.
    pub score: f32,
    /// Rule ids, matched words and scores, for the agent and the audit log.
    pub reason: String,
}

#[derive(Debug, Clone)]
struct CompiledMatcher {
    id: String,
    regexes: Vec<Regex>,
}

impl CompiledMatcher {
    fn find(&self, text: &str) -> Option<String> {
        self.regexes
            .iter()
            .find_map(|re| re.find(text).map(|m| m.as_str().to_string()))
    }

    /// Every different wording the matcher finds, so that separate weak
    /// signals ("had enough" and "pills") add up.
    /// The rule's matches that are separate pieces of evidence: the same
    /// words matched twice, or by two patterns over overlapping spans ("ive
    /// had enough" and "had enough"; "wont be here any more" inside "wont be
    /// here any more after friday"), count once, so a two-sign rule needs
    /// two different things said.
    fn find_distinct(&self, text: &str) -> Vec<String> {
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        let mut found: Vec<String> = Vec::new();
        for re in &self.regexes {
            for m in re.find_iter(text) {
                let span = m.range();
                let overlaps = spans
                    .iter()
                    .any(|s| s.start < span.end && span.start < s.end);
                if !overlaps && found.len() < 8 {
                    found.push(m.as_str().to_string());
                    spans.push(span);
                }
            }
        }
        found
    }
}

/// A guard masks figurative wording, unless the utterance also says the
/// danger is happening now ("we had a gas leak last month and it's back"):
/// a guard that cannot be switched off by present-tense evidence would hide
/// exactly the call it must not miss.
#[derive(Debug, Clone)]
struct CompiledGuard {
    matcher: CompiledMatcher,
    unless: Option<CompiledMatcher>,
}

#[derive(Debug)]
struct CompiledRule {
    matcher: CompiledMatcher,
    category: Escalation,
    weight: f32,
}

/// The validated, compiled governance configuration.
#[derive(Debug)]
pub struct Governance {
    precedence: Vec<Escalation>,
    categories: BTreeMap<Escalation, CategoryPolicy>,
    guards: Vec<CompiledGuard>,
    rules: Vec<CompiledRule>,
    pub complexity: ComplexityPolicy,
    pub safety: SafetyMessages,
    /// Below this classifier confidence the assistant asks rather than answers.
    pub clarify_below: f32,
    /// `[semantic]` as written; the model is loaded by the engine.
    pub semantic_config: Option<SemanticSection>,
    /// Meaning-based detection, consulted after the rules when attached.
    semantic: Option<Arc<SemanticScorer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceFile {
    precedence: Vec<String>,
    safety: SafetyMessages,
    categories: BTreeMap<String, CategoryFile>,
    #[serde(default, rename = "guard")]
    guards: Vec<GuardFile>,
    #[serde(rename = "rule")]
    rules: Vec<RuleFile>,
    complexity: ComplexityFile,
    understanding: UnderstandingFile,
    #[serde(default)]
    semantic: Option<SemanticSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    threshold: f32,
    priority: Priority,
    queue: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatcherFile {
    id: String,
    #[serde(default)]
    #[allow(dead_code)] // read by people, kept so the file may explain itself
    note: Option<String>,
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFile {
    id: String,
    #[serde(default)]
    #[allow(dead_code)] // read by people, kept so the file may explain itself
    note: Option<String>,
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    /// Patterns that, when found anywhere in the utterance, stop this guard
    /// from masking anything.
    #[serde(default)]
    unless: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    category: String,
    #[serde(default = "default_weight")]
    weight: f32,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
}

fn default_weight() -> f32 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComplexityFile {
    max_low_confidence_turns: u32,
    max_failed_clarifications: u32,
    max_repeats: u32,
    repeat_similarity: f32,
    priority: Priority,
    message: String,
    frustration: MatcherFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnderstandingFile {
    clarify_below: f32,
}

impl Governance {
    pub fn load(path: &Path) -> Result<Governance, AnswerError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnswerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Governance::parse(&text, path)
    }

    /// Parses and validates; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Governance, AnswerError> {
        let invalid = |reason: String| AnswerError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file: GovernanceFile =
            toml::from_str(text).map_err(|e| invalid(format!("not valid governance TOML: {e}")))?;

        let mut precedence = Vec::with_capacity(4);
        for name in &file.precedence {
            let category = Escalation::parse(name)
                .filter(|c| c.is_escalation())
                .ok_or_else(|| invalid(format!("precedence: unknown category `{name}`")))?;
            if precedence.contains(&category) {
                return Err(invalid(format!("precedence: `{name}` listed twice")));
            }
            precedence.push(category);
        }
        for category in Escalation::ALL_ESCALATING {
            if !precedence.contains(&category) {
                return Err(invalid(format!(
                    "precedence: `{}` is missing; every category must be ranked",
                    category.as_str()
                )));
            }
        }

        let mut categories = BTreeMap::new();
        for (name, cfg) in file.categories {
            let category = Escalation::parse(&name)
                .filter(|c| c.is_escalation())
                .ok_or_else(|| invalid(format!("[categories.{name}]: unknown category")))?;
            if !(cfg.threshold.is_finite() && cfg.threshold > 0.0) {
                return Err(invalid(format!(
                    "[categories.{name}]: threshold must be a positive number"
                )));
            }
            if cfg.message.trim().is_empty() || cfg.queue.trim().is_empty() {
                return Err(invalid(format!(
                    "[categories.{name}]: message and queue must not be empty"
                )));
            }
            categories.insert(
                category,
                CategoryPolicy {
                    threshold: cfg.threshold,
                    priority: cfg.priority,
                    queue: cfg.queue,
                    message: cfg.message,
                },
            );
        }
        for category in Escalation::ALL_ESCALATING {
            if !categories.contains_key(&category) {
                return Err(invalid(format!(
                    "[categories.{}] is missing: say what this escalation does",
                    category.as_str()
                )));
            }
        }

        let mut seen_ids = HashSet::new();
        let mut guards = Vec::with_capacity(file.guards.len());
        for guard in &file.guards {
            let matcher = MatcherFile {
                id: guard.id.clone(),
                note: None,
                phrases: guard.phrases.clone(),
                patterns: guard.patterns.clone(),
            };
            let matcher = compile_matcher(&matcher, "guard", &mut seen_ids).map_err(invalid)?;
            let unless = if guard.unless.is_empty() {
                None
            } else {
                let exceptions = MatcherFile {
                    id: guard.id.clone(),
                    note: None,
                    phrases: Vec::new(),
                    patterns: guard.unless.clone(),
                };
                // Its own id set: the exceptions share the guard's id on purpose.
                Some(
                    compile_matcher(&exceptions, "guard `unless`", &mut HashSet::new())
                        .map_err(invalid)?,
                )
            };
            guards.push(CompiledGuard { matcher, unless });
        }

        let mut rules = Vec::with_capacity(file.rules.len());
        for rule in &file.rules {
            let category = Escalation::parse(&rule.category)
                .filter(|c| c.is_escalation())
                .ok_or_else(|| {
                    invalid(format!(
                        "rule `{}`: unknown category `{}` (use distress, safeguarding, emergency or human_request)",
                        rule.id, rule.category
                    ))
                })?;
            if !(rule.weight.is_finite() && rule.weight > 0.0) {
                return Err(invalid(format!(
                    "rule `{}`: weight must be a positive number",
                    rule.id
                )));
            }
            let as_matcher = MatcherFile {
                id: rule.id.clone(),
                note: None,
                phrases: rule.phrases.clone(),
                patterns: rule.patterns.clone(),
            };
            let matcher = compile_matcher(&as_matcher, "rule", &mut seen_ids).map_err(invalid)?;
            rules.push(CompiledRule {
                matcher,
                category,
                weight: rule.weight,
            });
        }
        for category in Escalation::ALL_ESCALATING {
            if !rules.iter().any(|r| r.category == category) {
                return Err(invalid(format!(
                    "no rule detects `{}`; at least one is required",
                    category.as_str()
                )));
            }
        }

        let c = file.complexity;
        if !(0.0..=1.0).contains(&c.repeat_similarity) {
            return Err(invalid(
                "[complexity] repeat_similarity must be between 0 and 1".into(),
            ));
        }
        if c.max_failed_clarifications == 0 || c.max_low_confidence_turns == 0 || c.max_repeats == 0
        {
            return Err(invalid(
                "[complexity] limits must be at least 1 (0 would hand over every call)".into(),
            ));
        }
        if c.message.trim().is_empty() {
            return Err(invalid("[complexity] message must not be empty".into()));
        }
        let frustration = vec![
            compile_matcher(&c.frustration, "complexity.frustration", &mut seen_ids)
                .map_err(invalid)?,
        ];

        let clarify_below = file.understanding.clarify_below;
        if !(0.0..1.0).contains(&clarify_below) {
            return Err(invalid(
                "[understanding] clarify_below must be at least 0 and below 1".into(),
            ));
        }
        if file.safety.no_agent_available.trim().is_empty()
            || file.safety.no_agent_available_routine.trim().is_empty()
        {
            return Err(invalid("[safety] messages must not be empty".into()));
        }

        if let Some(semantic) = &file.semantic {
            semantic.validate().map_err(invalid)?;
        }

        Ok(Governance {
            semantic_config: file.semantic,
            semantic: None,
            precedence,
            categories,
            guards,
            rules,
            complexity: ComplexityPolicy {
                max_low_confidence_turns: c.max_low_confidence_turns,
                max_failed_clarifications: c.max_failed_clarifications,
                max_repeats: c.max_repeats,
                repeat_similarity: c.repeat_similarity,
                priority: c.priority,
                message: c.message,
                frustration,
            },
            safety: file.safety,
            clarify_below,
        })
    }

    pub fn policy(&self, category: Escalation) -> Option<&CategoryPolicy> {
        self.categories.get(&category)
    }

    /// Attaches the semantic layer: from now on [`Governance::assess`]
    /// escalates when either the rules or the meaning-based examples fire.
    pub fn attach_semantic(&mut self, scorer: Arc<SemanticScorer>) {
        self.semantic = Some(scorer);
    }

    pub fn semantic(&self) -> Option<&Arc<SemanticScorer>> {
        self.semantic.as_ref()
    }

    /// The order in which categories win when more than one fires.
    pub fn precedence(&self) -> &[Escalation] {
        &self.precedence
    }

    /// Assesses already-normalised text. Never fails: unknown input is `none`.
    ///
    /// Rules first (explainable, exact), then, when attached, the semantic
    /// layer. Either can escalate; when both fire, precedence picks the
    /// category. The reason always names the nearest semantic example.
    pub fn assess(&self, normalised: &str) -> EscalationDecision {
        let (mut decision, masked) = self.assess_rules(normalised);
        let Some(scorer) = &self.semantic else {
            return decision;
        };
        if normalised.trim().is_empty() {
            return decision;
        }
        // Clauses are scored only when the rules found no risk.
        let semantic = match scorer.assess_with(normalised, &masked, !decision.escalation.is_risk())
        {
            Ok(semantic) => semantic,
            Err(error) => {
                // Rules still stand; the failure is on the audit trail.
                tracing::error!(%error, "semantic layer failed; rules only for this utterance");
                decision.reason.push_str("; semantic layer failed: ");
                decision.reason.push_str(&error.to_string());
                return decision;
            }
        };
        let rank = |c: Escalation| self.precedence.iter().position(|p| *p == c);
        // Precedence orders categories that are handled differently (an
        // emergency's 999 advice comes first). Between categories that reach
        // the same queue at the same priority (distress and safeguarding both
        // go to the safeguarding team) the closer examples name the reason,
        // which is what the agent reads.
        let same_handling = |a: Escalation, b: Escalation| match (self.policy(a), self.policy(b)) {
            (Some(x), Some(y)) => x.queue == y.queue && x.priority == y.priority,
            _ => false,
        };
        let semantic_hit = semantic.fired(&self.precedence).map(|first| {
            semantic
                .matches
                .iter()
                .filter(|m| m.fired && same_handling(m.category, first.category))
                .fold(first, |best, m| if m.score > best.score { m } else { best })
        });
        // So a rule that found a risk keeps its category against a semantic
        // hit handled the same way unless the caller's words are closer to
        // the hit's examples than to the rule category's: a borderline score
        // ("he hits me when he's been drinking" drifting towards the
        // drinking-and-tablets distress examples) must not relabel an
        // explicit rule. A hit handled differently (emergency over a
        // distress rule, any risk over a request for a person) still wins
        // by precedence.
        let rule_category_score = semantic
            .matches
            .iter()
            .find(|m| m.category == decision.escalation)
            .map(|m| m.score);
        let semantic_wins = semantic_hit.is_some_and(|hit| {
            if !decision.escalation.is_escalation() {
                return true;
            }
            let outranks = rank(hit.category) < rank(decision.escalation);
            if same_handling(hit.category, decision.escalation) {
                outranks && rule_category_score.is_none_or(|own| hit.score > own)
            } else {
                outranks
            }
        });
        match semantic_hit {
            Some(hit) if semantic_wins => {
                decision = EscalationDecision {
                    escalation: hit.category,
                    score: hit.score,
                    reason: format!(
                        "{}: {}; rules: {}",
                        hit.category.as_str(),
                        semantic.describe(Some(hit)),
                        decision.reason
                    ),
                };
            }
            _ => {
                let _ = write!(decision.reason, "; {}", semantic.describe(semantic_hit));
            }
        }
        decision
    }

    /// The rules alone, and the text with figurative spans masked (what the
    /// semantic layer embeds). Public for diagnostics and offline studies.
    pub fn assess_rules(&self, normalised: &str) -> (EscalationDecision, String) {
        // Guards blank out figurative spans so the rules never see them.
        let mut masked = normalised.to_string();
        let mut guard_notes = String::new();
        for guard in &self.guards {
            // Checked against what the caller said, not the masked text: an
            // earlier guard must not hide the evidence that the danger is now.
            if let Some(present) = guard.unless.as_ref().and_then(|u| u.find(normalised)) {
                if guard.matcher.find(&masked).is_some() {
                    let _ = write!(
                        guard_notes,
                        "; guard {} not applied (\"{present}\" says it is happening now)",
                        guard.matcher.id
                    );
                }
                continue;
            }
            for re in &guard.matcher.regexes {
                if let std::borrow::Cow::Owned(replaced) = re.replace_all(&masked, " _ ") {
                    let _ = write!(
                        guard_notes,
                        "; guard {} masked figurative wording",
                        guard.matcher.id
                    );
                    masked = replaced;
                }
            }
        }

        let mut scores: BTreeMap<Escalation, (f32, String)> = BTreeMap::new();
        for rule in &self.rules {
            let hits = rule.matcher.find_distinct(&masked);
            if hits.is_empty() {
                continue;
            }
            let added = rule.weight * hits.len() as f32;
            let entry = scores.entry(rule.category).or_insert((0.0, String::new()));
            entry.0 += added;
            if !entry.1.is_empty() {
                entry.1.push_str(", ");
            }
            let _ = write!(
                entry.1,
                "{} matched \"{}\" (+{:.2})",
                rule.matcher.id,
                hits.join("\", \""),
                added
            );
        }

        for category in &self.precedence {
            let Some((score, hits)) = scores.get(category) else {
                continue;
            };
            let threshold = self
                .categories
                .get(category)
                .map_or(1.0, |policy| policy.threshold);
            if *score >= threshold {
                let decision = EscalationDecision {
                    escalation: *category,
                    score: *score,
                    reason: format!(
                        "{}: {} (score {:.2} >= {:.2}){}",
                        category.as_str(),
                        hits,
                        score,
                        threshold,
                        guard_notes
                    ),
                };
                return (decision, masked);
            }
        }

        let mut reason = String::from("no escalation rule reached its threshold");
        for (category, (score, hits)) in &scores {
            let _ = write!(
                reason,
                "; below threshold {}: {} ({score:.2})",
                category.as_str(),
                hits
            );
        }
        reason.push_str(&guard_notes);
        let decision = EscalationDecision {
            escalation: Escalation::None,
            score: 0.0,
            reason,
        };
        (decision, masked)
    }
}

/// Builds the regexes for one rule or guard. Phrases become word-bounded
/// literal matches; patterns are regexes. Both are normalised like the
/// caller's words (lower case, apostrophes removed) so "can't" in the file
/// matches "cant" or "can't" from the recogniser.
fn compile_matcher(
    file: &MatcherFile,
    kind: &str,
    seen_ids: &mut HashSet<String>,
) -> Result<CompiledMatcher, String> {
    if file.id.trim().is_empty() {
        return Err(format!("a {kind} has an empty id"));
    }
    if !seen_ids.insert(file.id.clone()) {
        return Err(format!("{kind} `{}`: id used twice", file.id));
    }
    if file.phrases.is_empty() && file.patterns.is_empty() {
        return Err(format!(
            "{kind} `{}`: needs at least one phrase or pattern",
            file.id
        ));
    }
    let mut regexes = Vec::with_capacity(2);
    let mut alternatives = Vec::with_capacity(file.phrases.len());
    for phrase in &file.phrases {
        let canonical = normalise(phrase);
        if canonical.is_empty() {
            return Err(format!(
                "{kind} `{}`: phrase {phrase:?} is empty once punctuation is removed",
                file.id
            ));
        }
        alternatives.push(regex::escape(&canonical));
    }
    if !alternatives.is_empty() {
        let source = format!(r"\b(?:{})\b", alternatives.join("|"));
        regexes.push(
            Regex::new(&source)
                .map_err(|e| format!("{kind} `{}`: phrases do not compile: {e}", file.id))?,
        );
    }
    for pattern in &file.patterns {
        let source: String = pattern
            .chars()
            .filter(|c| !matches!(c, '\'' | '’' | '‘'))
            .collect::<String>()
            .to_lowercase();
        let re = Regex::new(&source).map_err(|e| {
            format!(
                "{kind} `{}`: pattern {pattern:?} is not a valid regular expression: {e}",
                file.id
            )
        })?;
        if re.is_match("") {
            return Err(format!(
                "{kind} `{}`: pattern {pattern:?} matches empty text, so it would fire on every call",
                file.id
            ));
        }
        regexes.push(re);
    }
    Ok(CompiledMatcher {
        id: file.id.clone(),
        regexes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid file: every category, one rule, and the guard under test.
    fn parse_with(guard: &str) -> Result<Governance, AnswerError> {
        let text = format!(
            r#"
precedence = ["emergency", "distress", "safeguarding", "human_request"]
[safety]
no_agent_available = "call 999"
no_agent_available_routine = "try later"
[categories.emergency]
threshold = 1.0
priority = "urgent"
queue = "urgent"
message = "call 999"
[categories.distress]
threshold = 1.0
priority = "urgent"
queue = "safeguarding"
message = "stay on the line"
[categories.safeguarding]
threshold = 1.0
priority = "urgent"
queue = "safeguarding"
message = "putting you through"
[categories.human_request]
threshold = 1.0
priority = "normal"
queue = "general"
message = "putting you through"
[understanding]
clarify_below = 0.4
[complexity]
max_low_confidence_turns = 3
max_failed_clarifications = 2
max_repeats = 2
repeat_similarity = 0.8
priority = "normal"
message = "let me get someone"
[complexity.frustration]
id = "complexity.frustration"
phrases = ["youre not listening"]
{guard}
[[rule]]
id = "emergency.gas"
category = "emergency"
phrases = ["gas leak"]
[[rule]]
id = "distress.explicit"
category = "distress"
phrases = ["kill myself"]
[[rule]]
id = "safeguarding.violence"
category = "safeguarding"
phrases = ["hits me"]
[[rule]]
id = "human_request.person"
category = "human_request"
phrases = ["real person"]
"#
        );
        Governance::parse(&text, Path::new("test.toml"))
    }

    fn governance_with(guard: &str) -> Governance {
        parse_with(guard).expect("test governance parses")
    }

    const PAST_GUARD: &str = r#"
[[guard]]
id = "harmless.past_incident"
patterns = ['\bgas\s+leak\s+last\s+(month|year)\b']
unless = ['\b(again|its\s+back|right\s+now)\b']
"#;

    #[test]
    fn overlapping_matches_of_a_two_sign_rule_count_once() {
        let governance = governance_with(
            r#"
[[rule]]
id = "distress.weak"
category = "distress"
weight = 0.5
phrases = ["had enough", "ive had enough", "cant sleep"]
"#,
        );
        let one = governance.assess("ive had enough of these bins");
        assert_eq!(one.escalation, Escalation::None, "{}", one.reason);
        let two = governance.assess("ive had enough and i cant sleep");
        assert_eq!(two.escalation, Escalation::Distress, "{}", two.reason);
    }

    #[test]
    fn a_guard_masks_a_past_incident() {
        let decision = governance_with(PAST_GUARD).assess("we had a gas leak last month");
        assert_eq!(decision.escalation, Escalation::None, "{}", decision.reason);
        assert!(decision.reason.contains("harmless.past_incident"));
    }

    #[test]
    fn present_tense_evidence_switches_the_guard_off() {
        let decision =
            governance_with(PAST_GUARD).assess("we had a gas leak last month and its back again");
        assert_eq!(
            decision.escalation,
            Escalation::Emergency,
            "{}",
            decision.reason
        );
        assert!(
            decision.reason.contains("not applied"),
            "the audit trail says why the guard stood aside: {}",
            decision.reason
        );
    }

    #[test]
    fn an_invalid_unless_pattern_is_refused_with_the_guard_id() {
        let broken = PAST_GUARD.replace(r"unless = ['\b(again", r"unless = ['\b((again");
        let error = parse_with(&broken)
            .expect_err("a broken `unless` pattern must stop start-up")
            .to_string();
        assert!(error.contains("harmless.past_incident"), "{error}");
    }
}
