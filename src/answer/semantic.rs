//! The semantic layer: recognises escalations and intents by meaning, so that
//! wording no rule anticipated ("there's a rope in the garage and I keep
//! looking at it") still reaches a person.
//!
//! Method: nearest prototype. The safeguarding lead writes example sentences
//! per escalation category in `governance/safeguarding.toml` (`[semantic]`);
//! they, the lead's figurative and ordinary examples, and the knowledge base's
//! example sentences are embedded once at start-up. An utterance fires a
//! category when its cosine similarity to that category's nearest example
//! reaches the category's `threshold` *and* beats the nearest ordinary
//! example by `margin` (or reaches `certain`, whatever the ordinary examples
//! say). Why nearest-neighbour rather than a trained classifier: a lead fixes
//! a miss by adding the caller's sentence, the effect is immediate and
//! predictable, and every decision names the example that produced it.
//!
//! The rules in [`super::governance`] stay the explainable first line: either
//! route escalates, and precedence decides between categories.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;

use super::embed::{EmbedError, EmbeddingModelFiles, EmbeddingModelSpec, SentenceEmbedder};
use super::governance::Escalation;
use super::knowledge::Intent;
use super::normalize::normalise;

/// Below this many words the semantic layer reports but never escalates: the
/// mean of one to three word vectors is dominated by a single word ("the blue
/// one" lands near "he is turning blue"). Short risk phrases ("he hits me",
/// "i want to die") are the rules' job, and they catch them.
const MIN_WORDS: usize = 4;

/// `[semantic]` in the governance file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticSection {
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// One of [`super::embed::EMBEDDING_MODELS`] by name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Directory with `model.onnx` and `tokenizer.json`; empty means the cache.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default = "default_intent_weight")]
    pub intent_weight: f32,
    /// ONNX sessions (each single-threaded): how many utterances can be
    /// embedded at the same moment.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    pub categories: BTreeMap<String, SemanticCategoryFile>,
    pub ordinary: OrdinaryFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCategoryFile {
    pub threshold: f32,
    pub margin: f32,
    pub certain: f32,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdinaryFile {
    pub examples: Vec<String>,
}

fn default_enabled() -> bool {
    true
}
fn default_model() -> String {
    super::embed::PARAPHRASE_MINILM_L3.name.to_string()
}
fn default_max_tokens() -> usize {
    64
}
fn default_intent_weight() -> f32 {
    0.5
}
fn default_sessions() -> usize {
    2
}

impl SemanticSection {
    /// Checks what can be checked without the model; `Err` is the reason.
    pub fn validate(&self) -> Result<(), String> {
        if EmbeddingModelSpec::by_name(&self.model).is_none() {
            let known: Vec<&str> = super::embed::EMBEDDING_MODELS
                .iter()
                .map(|m| m.name)
                .collect();
            return Err(format!(
                "[semantic] model `{}` is unknown (known: {})",
                self.model,
                known.join(", ")
            ));
        }
        if !(8..=512).contains(&self.max_tokens) {
            return Err("[semantic] max_tokens must be between 8 and 512".into());
        }
        if !(0.0..=2.0).contains(&self.intent_weight) {
            return Err("[semantic] intent_weight must be between 0 and 2".into());
        }
        if !(1..=64).contains(&self.sessions) {
            return Err("[semantic] sessions must be between 1 and 64".into());
        }
        for (name, category) in &self.categories {
            let known = Escalation::parse(name).filter(|c| c.is_escalation());
            if known.is_none() {
                return Err(format!("[semantic.categories.{name}]: unknown category"));
            }
            let in_unit = |x: f32| x.is_finite() && x > 0.0 && x <= 1.0;
            if !in_unit(category.threshold) || !in_unit(category.certain) {
                return Err(format!(
                    "[semantic.categories.{name}]: threshold and certain must be above 0 and at most 1"
                ));
            }
            if category.certain < category.threshold {
                return Err(format!(
                    "[semantic.categories.{name}]: certain ({}) must not be below threshold ({})",
                    category.certain, category.threshold
                ));
            }
            if !(category.margin.is_finite() && (-1.0..=1.0).contains(&category.margin)) {
                return Err(format!(
                    "[semantic.categories.{name}]: margin must be between -1 and 1"
                ));
            }
            if category.examples.iter().all(|e| normalise(e).is_empty()) {
                return Err(format!(
                    "[semantic.categories.{name}]: needs at least one example sentence"
                ));
            }
        }
        for required in [
            Escalation::Distress,
            Escalation::Safeguarding,
            Escalation::Emergency,
        ] {
            if !self.categories.contains_key(required.as_str()) {
                return Err(format!(
                    "[semantic.categories.{}] is missing: risk to a person must have examples",
                    required.as_str()
                ));
            }
        }
        Ok(())
    }
}

/// Example sentences and their unit vectors, row after row.
#[derive(Debug)]
struct PrototypeSet {
    phrases: Vec<String>,
    /// Label per phrase (intent index for intent examples, 0 otherwise).
    labels: Vec<usize>,
    vectors: Vec<f32>,
}

impl PrototypeSet {
    fn embed(
        embedder: &SentenceEmbedder,
        phrases: impl IntoIterator<Item = (String, usize)>,
    ) -> Result<Self, EmbedError> {
        let mut set = PrototypeSet {
            phrases: Vec::new(),
            labels: Vec::new(),
            vectors: Vec::new(),
        };
        for (phrase, label) in phrases {
            let normalised = normalise(&phrase);
            if normalised.is_empty() {
                continue;
            }
            set.vectors.extend(embedder.embed(&normalised)?);
            set.phrases.push(phrase);
            set.labels.push(label);
        }
        Ok(set)
    }

    /// (index, similarity) of the nearest phrase; `None` when empty.
    fn nearest(&self, query: &[f32]) -> Option<(usize, f32)> {
        self.vectors
            .chunks_exact(query.len().max(1))
            .map(|row| dot(row, query))
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[derive(Debug)]
struct CategoryPrototypes {
    category: Escalation,
    threshold: f32,
    margin: f32,
    certain: f32,
    examples: PrototypeSet,
}

/// The nearest example of one category, and whether it fired.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticMatch {
    pub category: Escalation,
    pub prototype: String,
    pub similarity: f32,
    pub threshold: f32,
    pub fired: bool,
}

/// What the semantic layer concluded about one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticAssessment {
    /// One entry per configured category, in the file's order.
    pub matches: Vec<SemanticMatch>,
    /// The nearest ordinary or figurative example and its similarity.
    pub nearest_ordinary: (String, f32),
}

impl SemanticAssessment {
    /// The fired category that comes first in `precedence`.
    pub fn fired(&self, precedence: &[Escalation]) -> Option<&SemanticMatch> {
        precedence.iter().find_map(|category| {
            self.matches
                .iter()
                .find(|m| m.fired && m.category == *category)
        })
    }

    /// The category example closest to the utterance, fired or not.
    pub fn nearest(&self) -> Option<&SemanticMatch> {
        self.matches
            .iter()
            .max_by(|a, b| a.similarity.total_cmp(&b.similarity))
    }

    /// For the audit trail: the example that decided, and the nearest ordinary one.
    pub fn describe(&self, decided: Option<&SemanticMatch>) -> String {
        let mut out = String::from("semantic: ");
        match decided.or_else(|| self.nearest()) {
            Some(m) => {
                let _ = write!(
                    out,
                    "nearest {} example \"{}\" similarity {:.2} (threshold {:.2}, {})",
                    m.category.as_str(),
                    m.prototype,
                    m.similarity,
                    m.threshold,
                    if m.fired { "fired" } else { "not fired" }
                );
            }
            None => out.push_str("no category examples"),
        }
        let _ = write!(
            out,
            ", nearest ordinary \"{}\" {:.2}",
            self.nearest_ordinary.0, self.nearest_ordinary.1
        );
        out
    }
}

/// Embeds utterances and compares them with the prototypes; loaded once.
#[derive(Debug)]
pub struct SemanticScorer {
    embedder: SentenceEmbedder,
    categories: Vec<CategoryPrototypes>,
    ordinary: PrototypeSet,
    intent_examples: PrototypeSet,
    intent_count: usize,
    intent_weight: f32,
}

thread_local! {
    /// The last utterance embedded on this thread. A turn asks the governance
    /// (escalation) and then the classifier (intent) about the same text; the
    /// cache makes that one model run, not two.
    static LAST_EMBEDDING: RefCell<Option<(usize, String, Vec<f32>)>> = const { RefCell::new(None) };
}

impl SemanticScorer {
    /// Loads the model named in `section` and embeds every prototype. Fails,
    /// naming the file and how to fetch it, if the model is not there.
    pub fn load(section: &SemanticSection, intents: &[Intent]) -> Result<Self, EmbedError> {
        let spec =
            EmbeddingModelSpec::by_name(&section.model).ok_or_else(|| EmbedError::Model {
                path: PathBuf::from(&section.model),
                reason: "unknown model name".into(),
            })?;
        let files = EmbeddingModelFiles::locate(&spec, section.model_dir.as_deref());
        Self::load_from(section, intents, &spec, &files)
    }

    pub fn load_from(
        section: &SemanticSection,
        intents: &[Intent],
        spec: &EmbeddingModelSpec,
        files: &EmbeddingModelFiles,
    ) -> Result<Self, EmbedError> {
        let started = std::time::Instant::now();
        let embedder = SentenceEmbedder::load(spec, files, section.max_tokens, section.sessions)?;
        let mut categories = Vec::with_capacity(section.categories.len());
        for (name, file) in &section.categories {
            let Some(category) = Escalation::parse(name).filter(|c| c.is_escalation()) else {
                continue;
            };
            let examples =
                PrototypeSet::embed(&embedder, file.examples.iter().map(|e| (e.clone(), 0)))?;
            categories.push(CategoryPrototypes {
                category,
                threshold: file.threshold,
                margin: file.margin,
                certain: file.certain,
                examples,
            });
        }
        // The knowledge base's examples are what ordinary calls sound like;
        // a request for a person is the one intent that is an escalation.
        let knowledge_ordinary = intents
            .iter()
            .filter(|intent| intent.name != "human_request")
            .flat_map(|intent| intent.examples.iter().map(|e| (e.clone(), 0)));
        let ordinary = PrototypeSet::embed(
            &embedder,
            section
                .ordinary
                .examples
                .iter()
                .map(|e| (e.clone(), 0))
                .chain(knowledge_ordinary),
        )?;
        let intent_examples = PrototypeSet::embed(
            &embedder,
            intents.iter().enumerate().flat_map(|(index, intent)| {
                intent.examples.iter().map(move |e| (e.clone(), index))
            }),
        )?;
        tracing::info!(
            model = spec.name,
            dimension = embedder.dimension(),
            prototypes = categories
                .iter()
                .map(|c| c.examples.phrases.len())
                .sum::<usize>()
                + ordinary.phrases.len()
                + intent_examples.phrases.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "semantic layer ready"
        );
        Ok(Self {
            embedder,
            categories,
            ordinary,
            intent_examples,
            intent_count: intents.len(),
            intent_weight: section.intent_weight,
        })
    }

    pub fn intent_weight(&self) -> f32 {
        self.intent_weight
    }

    /// Embeds `text`, reusing this thread's last result for the same `key`.
    fn embedding(&self, key: &str, text: &str) -> Result<Vec<f32>, EmbedError> {
        let id = self as *const Self as usize;
        let cached = LAST_EMBEDDING.with(|cell| {
            cell.borrow()
                .as_ref()
                .filter(|(owner, k, _)| *owner == id && k == key)
                .map(|(_, _, v)| v.clone())
        });
        if let Some(vector) = cached {
            return Ok(vector);
        }
        let vector = self.embedder.embed(text)?;
        LAST_EMBEDDING.with(|cell| {
            *cell.borrow_mut() = Some((id, key.to_string(), vector.clone()));
        });
        Ok(vector)
    }

    /// Escalation evidence for normalised text. `masked` is the text with
    /// figurative spans blanked by the governance guards; it is what is
    /// embedded, and `normalised` is the cache key the classifier will use.
    pub fn assess(&self, normalised: &str, masked: &str) -> Result<SemanticAssessment, EmbedError> {
        let query = self.embedding(normalised, masked)?;
        let nearest_ordinary = self
            .ordinary
            .nearest(&query)
            .map_or((String::new(), 0.0), |(i, s)| {
                (self.ordinary.phrases[i].clone(), s)
            });
        // A request for a person is not a risk: a risk category must also
        // beat the nearest human_request example ("no, i want to speak to
        // someone" is near "i dont want to be here" for a small model).
        let nearest_human_request = self
            .categories
            .iter()
            .filter(|c| c.category == Escalation::HumanRequest)
            .filter_map(|c| c.examples.nearest(&query))
            .map(|(_, similarity)| similarity)
            .fold(f32::MIN, f32::max);
        let long_enough = normalised.split_whitespace().count() >= MIN_WORDS;
        let matches = self
            .categories
            .iter()
            .filter_map(|c| {
                let (index, similarity) = c.examples.nearest(&query)?;
                let competitor = if c.category.is_risk() {
                    nearest_ordinary.1.max(nearest_human_request)
                } else {
                    nearest_ordinary.1
                };
                let fired = long_enough
                    && (similarity >= c.certain
                        || (similarity >= c.threshold && similarity - competitor >= c.margin));
                Some(SemanticMatch {
                    category: c.category,
                    prototype: c.examples.phrases[index].clone(),
                    similarity,
                    threshold: c.threshold,
                    fired,
                })
            })
            .collect();
        Ok(SemanticAssessment {
            matches,
            nearest_ordinary,
        })
    }

    /// Per intent (knowledge order), the similarity of its nearest example.
    pub fn intent_similarities(&self, normalised: &str) -> Result<Vec<f32>, EmbedError> {
        let query = self.embedding(normalised, normalised)?;
        let mut best = vec![0f32; self.intent_count];
        let dim = query.len().max(1);
        for (row, label) in self
            .intent_examples
            .vectors
            .chunks_exact(dim)
            .zip(&self.intent_examples.labels)
        {
            if let Some(slot) = best.get_mut(*label) {
                *slot = slot.max(dot(row, &query));
            }
        }
        Ok(best)
    }

    /// Embeds arbitrary text (benchmarks, diagnostics).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embedder.embed(text)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> SemanticSection {
        toml::from_str(text).expect("test section parses")
    }

    const MINIMAL: &str = r#"
        [categories.distress]
        threshold = 0.5
        margin = 0.0
        certain = 0.8
        examples = ["i want to die"]
        [categories.safeguarding]
        threshold = 0.5
        margin = 0.0
        certain = 0.8
        examples = ["he hits me"]
        [categories.emergency]
        threshold = 0.5
        margin = 0.0
        certain = 0.8
        examples = ["the house is on fire"]
        [ordinary]
        examples = ["this is killing me"]
    "#;

    #[test]
    fn a_complete_section_validates_with_defaults() {
        let s = section(MINIMAL);
        assert!(s.enabled);
        assert_eq!(s.model, "paraphrase-minilm-l3-v2");
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn bad_sections_are_refused_with_a_reason() {
        let mut s = section(MINIMAL);
        s.categories.remove("emergency");
        assert!(s.validate().unwrap_err().contains("emergency"));

        let mut s = section(MINIMAL);
        s.model = "gpt".into();
        assert!(s.validate().unwrap_err().contains("unknown"));

        let mut s = section(MINIMAL);
        if let Some(c) = s.categories.get_mut("distress") {
            c.certain = 0.3;
        }
        assert!(s.validate().unwrap_err().contains("certain"));

        let mut s = section(MINIMAL);
        if let Some(c) = s.categories.get_mut("distress") {
            c.examples = vec!["  ".into()];
        }
        assert!(s.validate().unwrap_err().contains("example"));
    }

    #[test]
    fn precedence_picks_among_fired_categories() {
        let hit = |category, fired, similarity| SemanticMatch {
            category,
            prototype: "p".into(),
            similarity,
            threshold: 0.5,
            fired,
        };
        let a = SemanticAssessment {
            matches: vec![
                hit(Escalation::Distress, true, 0.6),
                hit(Escalation::Emergency, true, 0.55),
                hit(Escalation::Safeguarding, false, 0.9),
            ],
            nearest_ordinary: ("o".into(), 0.3),
        };
        let order = [
            Escalation::Emergency,
            Escalation::Distress,
            Escalation::Safeguarding,
            Escalation::HumanRequest,
        ];
        assert_eq!(
            a.fired(&order).map(|m| m.category),
            Some(Escalation::Emergency)
        );
        assert_eq!(
            a.nearest().map(|m| m.category),
            Some(Escalation::Safeguarding)
        );
        assert!(a.describe(None).contains("similarity 0.90"));
    }
}
