//! The semantic layer: recognises escalations and intents by meaning, so that
//! wording no rule anticipated ("there's a rope in the garage and I keep
//! looking at it") still reaches a person.
//!
//! Method: nearest neighbours. The safeguarding lead writes example sentences
//! per escalation category in `governance/safeguarding.toml` (`[semantic]`);
//! they, the lead's figurative and ordinary examples, and the knowledge base's
//! example sentences are embedded once at start-up. A category's score for
//! an utterance is the mean cosine similarity of its `neighbours` closest
//! examples (the ordinary examples are scored the same way). The category
//! fires when that score reaches its `threshold` *and* beats the ordinary
//! score by `margin`, or when the single nearest example reaches `certain`
//! whatever the ordinary examples say.
//!
//! Why a mean over several neighbours: with a small sentence model one
//! stray example close to an ordinary sentence ("my son" in a safeguarding
//! example pulling in "my son is a student") decides alone under nearest-one
//! matching; several agreeing examples are a steadier sign of meaning. Cross-
//! validation on the governance examples themselves (five folds, no test
//! sentences) favoured three neighbours over one at every recall level.
//! Why neighbours rather than a trained classifier (a logistic head over the
//! same embeddings did no better in that cross-validation): a lead fixes a
//! miss by adding the caller's sentence, the effect is immediate and
//! predictable, and every decision names the examples that produced it.
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

/// Most neighbours a score may average: the scan keeps them on the stack.
pub const MAX_NEIGHBOURS: usize = 8;

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
    /// How many nearest examples a category's (and the ordinary) score
    /// averages; 1 is plain nearest-example matching.
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    pub categories: BTreeMap<String, SemanticCategoryFile>,
    pub ordinary: OrdinaryFile,
    /// Scoring the clauses of a long utterance one by one.
    #[serde(default)]
    pub clauses: ClausesFile,
}

/// `[semantic.clauses]`: a long utterance that leans towards a risk but does
/// not reach it as a whole is split into clauses ([`super::clauses`]), and
/// each clause is scored like an utterance of its own, more strictly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClausesFile {
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Utterances shorter than this (in words) are scored whole only.
    #[serde(default = "default_clause_min_words")]
    pub min_words: usize,
    /// Most clauses scored per utterance (one model run embeds them all).
    #[serde(default = "default_max_clauses")]
    pub max_clauses: usize,
    /// Added to a category's `margin` for a clause: a clause is short, and
    /// short text lands near risk examples more easily than a sentence.
    #[serde(default = "default_clause_margin")]
    pub margin: f32,
    /// The whole utterance must lean this close to a risk category (its
    /// score minus the ordinary score) before clauses are scored at all:
    /// the gate that keeps ordinary calls at one model run.
    #[serde(default = "default_clause_lean")]
    pub lean: f32,
}

impl Default for ClausesFile {
    fn default() -> Self {
        Self {
            enabled: true,
            min_words: default_clause_min_words(),
            max_clauses: default_max_clauses(),
            margin: default_clause_margin(),
            lean: default_clause_lean(),
        }
    }
}

fn default_clause_min_words() -> usize {
    10
}
fn default_max_clauses() -> usize {
    3
}
fn default_clause_margin() -> f32 {
    0.12
}
fn default_clause_lean() -> f32 {
    -0.20
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
/// One session embeds an utterance in ~3 ms, so even dozens of callers
/// finishing turns at once wait little; each extra session costs ~68 MB.
fn default_sessions() -> usize {
    1
}
fn default_neighbours() -> usize {
    1
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
        if !(1..=MAX_NEIGHBOURS).contains(&self.neighbours) {
            return Err(format!(
                "[semantic] neighbours must be between 1 and {MAX_NEIGHBOURS}"
            ));
        }
        let clauses = &self.clauses;
        if !(4..=200).contains(&clauses.min_words) {
            return Err("[semantic.clauses] min_words must be between 4 and 200".into());
        }
        if !(2..=8).contains(&clauses.max_clauses) {
            return Err("[semantic.clauses] max_clauses must be between 2 and 8".into());
        }
        for (name, value) in [("margin", clauses.margin), ("lean", clauses.lean)] {
            if !(value.is_finite() && (-1.0..=1.0).contains(&value)) {
                return Err(format!(
                    "[semantic.clauses] {name} must be between -1 and 1"
                ));
            }
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

    /// The `k` phrases closest to `query`, best first, in one pass and
    /// without allocating (k is at most [`MAX_NEIGHBOURS`]).
    fn closest(&self, query: &[f32], k: usize) -> Neighbours {
        self.closest_except(query, k, |_| false)
    }

    /// As [`Self::closest`], ignoring the rows `skip` names (held-out folds).
    fn closest_except(&self, query: &[f32], k: usize, skip: impl Fn(usize) -> bool) -> Neighbours {
        let mut found = Neighbours::default();
        let k = k.clamp(1, MAX_NEIGHBOURS);
        for (index, row) in self.vectors.chunks_exact(query.len().max(1)).enumerate() {
            if !skip(index) {
                found.offer(index, dot(row, query), k);
            }
        }
        found
    }

    fn row(&self, index: usize, dimension: usize) -> &[f32] {
        self.vectors
            .get(index * dimension..(index + 1) * dimension)
            .unwrap_or(&[])
    }

    fn word_count(&self, index: usize) -> usize {
        self.phrases
            .get(index)
            .map_or(0, |p| normalise(p).split_whitespace().count())
    }
}

/// The closest examples of one set, best first.
#[derive(Debug, Clone, Copy, Default)]
struct Neighbours {
    entries: [(usize, f32); MAX_NEIGHBOURS],
    len: usize,
}

impl Neighbours {
    /// Keeps (index, similarity) if it is among the best `k` seen so far.
    fn offer(&mut self, index: usize, similarity: f32, k: usize) {
        if self.len == k {
            match self.entries.get(k - 1) {
                Some(worst) if similarity > worst.1 => self.len -= 1,
                _ => return,
            }
        }
        // Insertion into a sorted run of at most eight: cheaper than a heap.
        let mut at = self.len;
        while at > 0 && self.entries[at - 1].1 < similarity {
            self.entries[at] = self.entries[at - 1];
            at -= 1;
        }
        self.entries[at] = (index, similarity);
        self.len += 1;
    }

    fn as_slice(&self) -> &[(usize, f32)] {
        &self.entries[..self.len]
    }

    fn best(&self) -> Option<(usize, f32)> {
        self.as_slice().first().copied()
    }

    /// Mean similarity of the neighbours kept; 0 when there are none.
    fn mean(&self) -> f32 {
        if self.len == 0 {
            return 0.0;
        }
        self.as_slice().iter().map(|(_, s)| s).sum::<f32>() / self.len as f32
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

impl CategoryPrototypes {
    /// The firing rule, shared by live assessment and cross-validation.
    fn fires(&self, nearest: f32, score: f32, competitor: f32) -> bool {
        nearest >= self.certain || (score >= self.threshold && score - competitor >= self.margin)
    }
}

/// How the configured examples and thresholds fare on examples held out of
/// them: the honest estimate of how the semantic layer alone generalises.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossValidation {
    /// Per risk category: (category, held-out examples, how many escalated).
    pub categories: Vec<(Escalation, usize, usize)>,
    /// Held-out ordinary examples, and how many a risk category fired on.
    pub ordinary: (usize, usize),
}

impl CrossValidation {
    /// Share of held-out risk examples that escalated.
    pub fn recall(&self, category: Escalation) -> Option<f64> {
        self.categories
            .iter()
            .find(|(c, _, _)| *c == category)
            .filter(|(_, total, _)| *total > 0)
            .map(|(_, total, fired)| *fired as f64 / *total as f64)
    }

    /// Share of held-out ordinary examples that a risk category fired on.
    pub fn false_escalation(&self) -> f64 {
        let (total, fired) = self.ordinary;
        if total == 0 {
            0.0
        } else {
            fired as f64 / total as f64
        }
    }
}

/// The nearest examples of one category, and whether it fired.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticMatch {
    pub category: Escalation,
    /// The nearest example and its similarity.
    pub prototype: String,
    pub similarity: f32,
    /// Mean similarity of the category's nearest examples: the score that
    /// is compared with `threshold`.
    pub score: f32,
    /// The other examples that make up `score`, with their similarities.
    pub supporting: Vec<(String, f32)>,
    pub threshold: f32,
    pub fired: bool,
    /// The clause that fired the category, when the whole utterance did not,
    /// and what its score had to beat (the clause's own ordinary score).
    pub clause: Option<(String, f32)>,
}

/// What the semantic layer concluded about one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticAssessment {
    /// One entry per configured category, in the file's order.
    pub matches: Vec<SemanticMatch>,
    /// The nearest ordinary or figurative example and its similarity.
    pub nearest_ordinary: (String, f32),
    /// Mean similarity of the nearest ordinary examples (the competitor score).
    pub ordinary_score: f32,
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

    /// The category whose examples are closest to the utterance, fired or not.
    pub fn nearest(&self) -> Option<&SemanticMatch> {
        self.matches
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
    }

    /// For the audit trail: the example that decided, and the nearest ordinary one.
    pub fn describe(&self, decided: Option<&SemanticMatch>) -> String {
        let mut out = String::from("semantic: ");
        match decided.or_else(|| self.nearest()) {
            Some(m) => {
                if let Some((clause, competitor)) = &m.clause {
                    let _ = write!(
                        out,
                        "the clause \"{clause}\" (its ordinary score {competitor:.2}): "
                    );
                }
                let _ = write!(
                    out,
                    "nearest {} example \"{}\" similarity {:.2}",
                    m.category.as_str(),
                    m.prototype,
                    m.similarity,
                );
                for (phrase, similarity) in &m.supporting {
                    let _ = write!(out, ", \"{phrase}\" {similarity:.2}");
                }
                let _ = write!(
                    out,
                    "; score {:.2} (threshold {:.2}, {})",
                    m.score,
                    m.threshold,
                    if m.fired { "fired" } else { "not fired" }
                );
            }
            None => out.push_str("no category examples"),
        }
        let _ = write!(
            out,
            ", nearest ordinary \"{}\" {:.2} (ordinary score {:.2})",
            self.nearest_ordinary.0, self.nearest_ordinary.1, self.ordinary_score
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
    neighbours: usize,
    clauses: ClausesFile,
}

/// One text's nearest examples in every set.
struct Scores {
    ordinary: Neighbours,
    /// Mean similarity of the nearest human_request examples (`f32::MIN`
    /// when that category has no examples).
    human_request: f32,
    /// Per configured category, in `SemanticScorer::categories` order.
    categories: Vec<Neighbours>,
}

impl Scores {
    /// What a category's score must beat. A request for a person is not a
    /// risk: a risk category must also beat the human_request examples ("no,
    /// i want to speak to someone" is near "i dont want to be here" for a
    /// small model).
    fn competitor(&self, category: Escalation) -> f32 {
        if category.is_risk() {
            self.ordinary.mean().max(self.human_request)
        } else {
            self.ordinary.mean()
        }
    }
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
            neighbours: section.neighbours.clamp(1, MAX_NEIGHBOURS),
            clauses: section.clauses.clone(),
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

    /// The nearest examples of every set to one embedded text.
    fn score(&self, query: &[f32]) -> Scores {
        let k = self.neighbours;
        let categories: Vec<Neighbours> = self
            .categories
            .iter()
            .map(|c| c.examples.closest(query, k))
            .collect();
        let human_request = self
            .categories
            .iter()
            .zip(&categories)
            .filter(|(c, _)| c.category == Escalation::HumanRequest)
            .map(|(_, n)| n.mean())
            .fold(f32::MIN, f32::max);
        Scores {
            ordinary: self.ordinary.closest(query, k),
            human_request,
            categories,
        }
    }

    /// Escalation evidence for normalised text. `masked` is the text with
    /// figurative spans blanked by the governance guards; it is what is
    /// embedded, and `normalised` is the cache key the classifier will use.
    ///
    /// A long utterance that leans towards a risk without reaching it is
    /// then scored clause by clause (`[semantic.clauses]`): a clause fires a
    /// risk category on the category's threshold and a stricter margin,
    /// never on `certain` (a short clause can sit very close to one example
    /// by its topic words alone: "the eviction notice came today").
    pub fn assess(&self, normalised: &str, masked: &str) -> Result<SemanticAssessment, EmbedError> {
        self.assess_with(normalised, masked, true)
    }

    /// As [`Self::assess`]; `clauses` false skips clause scoring (the rules
    /// already found a risk: the caller reaches a person either way, and
    /// the second model run would only cost time).
    pub fn assess_with(
        &self,
        normalised: &str,
        masked: &str,
        clauses: bool,
    ) -> Result<SemanticAssessment, EmbedError> {
        let query = self.embedding(normalised, masked)?;
        let whole = self.score(&query);
        let words = normalised.split_whitespace().count();
        let long_enough = words >= MIN_WORDS;
        let mut matches = Vec::with_capacity(self.categories.len());
        let mut lean = f32::MIN;
        for (c, closest) in self.categories.iter().zip(&whole.categories) {
            let Some((_, similarity)) = closest.best() else {
                continue;
            };
            let score = closest.mean();
            let competitor = whole.competitor(c.category);
            if c.category.is_risk() {
                lean = lean.max(score - competitor);
            }
            let fired = long_enough && c.fires(similarity, score, competitor);
            matches.extend(self.matched(c, closest, fired, None));
        }
        let risk_fired = matches.iter().any(|m| m.fired && m.category.is_risk());
        let settings = &self.clauses;
        if clauses
            && settings.enabled
            && !risk_fired
            && words >= settings.min_words
            && lean >= settings.lean
            && let Err(error) = self.assess_clauses(masked, &mut matches)
        {
            // The whole-utterance result stands; the failure is logged.
            tracing::error!(%error, "clause scoring failed; whole utterance only");
        }
        Ok(SemanticAssessment {
            matches,
            nearest_ordinary: whole
                .ordinary
                .best()
                .map_or((String::new(), 0.0), |(i, s)| {
                    (self.ordinary.phrases[i].clone(), s)
                }),
            ordinary_score: whole.ordinary.mean(),
        })
    }

    /// Scores each clause of `masked` (one model run for all of them) and
    /// marks the risk categories a clause fires, naming the clause.
    fn assess_clauses(
        &self,
        masked: &str,
        matches: &mut [SemanticMatch],
    ) -> Result<(), EmbedError> {
        let parts = super::clauses::clauses(masked, self.clauses.max_clauses);
        if parts.len() < 2 {
            return Ok(());
        }
        let texts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let vectors = self.embedder.embed_batch(&texts)?;
        for (clause, vector) in parts.iter().zip(&vectors) {
            let scores = self.score(vector);
            let risks = self.categories.iter().zip(&scores.categories);
            for (c, closest) in risks.filter(|(c, _)| c.category.is_risk()) {
                let Some(m) = matches.iter_mut().find(|m| m.category == c.category) else {
                    continue;
                };
                let score = closest.mean();
                let competitor = scores.competitor(c.category);
                let fires =
                    score >= c.threshold && score - competitor >= c.margin + self.clauses.margin;
                // The strongest firing clause names the reason.
                if fires
                    && (!m.fired || score > m.score)
                    && let Some(hit) =
                        self.matched(c, closest, true, Some((clause.clone(), competitor)))
                {
                    *m = hit;
                }
            }
        }
        Ok(())
    }

    /// A category's match from its nearest examples (none if it has none).
    fn matched(
        &self,
        c: &CategoryPrototypes,
        closest: &Neighbours,
        fired: bool,
        clause: Option<(String, f32)>,
    ) -> Option<SemanticMatch> {
        let (nearest, similarity) = closest.best()?;
        Some(SemanticMatch {
            category: c.category,
            prototype: c.examples.phrases[nearest].clone(),
            similarity,
            score: closest.mean(),
            supporting: closest
                .as_slice()
                .iter()
                .skip(1)
                .map(|(i, s)| (c.examples.phrases[*i].clone(), *s))
                .collect(),
            threshold: c.threshold,
            fired,
            clause,
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

    /// `folds`-fold cross-validation of the risk categories on the examples
    /// themselves: each example falls in the fold its own words hash to (so
    /// adding or moving an example moves no other between folds, and the
    /// figures change only by what was edited); each fold is judged, with
    /// the configured thresholds, against the examples of the other folds
    /// only. This is how the thresholds were chosen, and
    /// it needs no test sentences. Uses the vectors embedded at load, so it
    /// costs only dot products (well under a second for a thousand examples).
    pub fn cross_validate(&self, folds: usize) -> CrossValidation {
        let folds = folds.max(2);
        let k = self.neighbours;
        let dimension = self.embedder.dimension();
        let fold_of = |set: &PrototypeSet| -> Vec<usize> {
            set.phrases
                .iter()
                .map(|p| fold_of_phrase(p, folds))
                .collect()
        };
        let ordinary_folds = fold_of(&self.ordinary);
        let category_folds: Vec<Vec<usize>> = self
            .categories
            .iter()
            .map(|c| fold_of(&c.examples))
            .collect();
        let human_request = self
            .categories
            .iter()
            .zip(&category_folds)
            .find(|(c, _)| c.category == Escalation::HumanRequest);
        // Whether any risk category fires on `query`, with fold `fold` held out.
        let escalates = |query: &[f32], fold: usize| {
            let ordinary = self
                .ordinary
                .closest_except(query, k, |i| ordinary_folds[i] == fold)
                .mean();
            let human = human_request.map_or(f32::MIN, |(c, c_folds)| {
                c.examples
                    .closest_except(query, k, |i| c_folds[i] == fold)
                    .mean()
            });
            let competitor = ordinary.max(human);
            self.categories
                .iter()
                .zip(&category_folds)
                .filter(|(c, _)| c.category.is_risk())
                .any(|(c, c_folds)| {
                    let closest = c.examples.closest_except(query, k, |i| c_folds[i] == fold);
                    closest
                        .best()
                        .is_some_and(|(_, nearest)| c.fires(nearest, closest.mean(), competitor))
                })
        };
        let mut categories = Vec::new();
        for (c, c_folds) in self
            .categories
            .iter()
            .zip(&category_folds)
            .filter(|(c, _)| c.category.is_risk())
        {
            let (mut total, mut fired) = (0, 0);
            for (index, &fold) in c_folds.iter().enumerate() {
                if c.examples.word_count(index) < MIN_WORDS {
                    continue;
                }
                total += 1;
                fired += usize::from(escalates(c.examples.row(index, dimension), fold));
            }
            categories.push((c.category, total, fired));
        }
        let (mut total, mut fired) = (0, 0);
        for (index, &fold) in ordinary_folds.iter().enumerate() {
            if self.ordinary.word_count(index) < MIN_WORDS {
                continue;
            }
            total += 1;
            fired += usize::from(escalates(self.ordinary.row(index, dimension), fold));
        }
        CrossValidation {
            categories,
            ordinary: (total, fired),
        }
    }

    /// Embeds arbitrary text (benchmarks, diagnostics).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embedder.embed(text)
    }
}

/// The cross-validation fold of an example: FNV-1a over its normalised
/// words. Hand-written (eight lines) because the standard library's hasher
/// is not promised to stay the same between Rust releases, and the folds
/// must.
fn fold_of_phrase(phrase: &str, folds: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in normalise(phrase).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % folds.max(1) as u64) as usize
}

/// Dot product in eight independent lanes: a plain `.sum()` over f32 must
/// add in order, so the compiler cannot use SIMD; eight partial sums let it
/// (about 4x faster here, and every utterance scans some 1,700 examples).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
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
            score: similarity,
            supporting: vec![("q".into(), similarity - 0.1)],
            threshold: 0.5,
            fired,
            clause: None,
        };
        let a = SemanticAssessment {
            matches: vec![
                hit(Escalation::Distress, true, 0.6),
                hit(Escalation::Emergency, true, 0.55),
                hit(Escalation::Safeguarding, false, 0.9),
            ],
            nearest_ordinary: ("o".into(), 0.3),
            ordinary_score: 0.25,
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
        let described = a.describe(None);
        assert!(described.contains("similarity 0.90"), "{described}");
        assert!(described.contains("\"q\" 0.80"), "{described}");
        assert!(described.contains("ordinary score 0.25"), "{described}");
    }

    #[test]
    fn neighbours_keep_the_best_k_in_order() {
        let mut n = Neighbours::default();
        for (index, similarity) in [0.1, 0.9, 0.4, 0.7, 0.2, 0.8].into_iter().enumerate() {
            n.offer(index, similarity, 3);
        }
        assert_eq!(n.as_slice(), &[(1, 0.9), (5, 0.8), (3, 0.7)]);
        assert_eq!(n.best(), Some((1, 0.9)));
        assert!((n.mean() - 0.8).abs() < 1e-6);
        assert_eq!(Neighbours::default().mean(), 0.0);

        let mut one = Neighbours::default();
        for (index, similarity) in [0.3, 0.5, 0.4].into_iter().enumerate() {
            one.offer(index, similarity, 1);
        }
        assert_eq!(one.as_slice(), &[(1, 0.5)]);
    }

    #[test]
    fn closest_scans_rows_of_the_query_dimension() {
        let set = PrototypeSet {
            phrases: vec!["a".into(), "b".into(), "c".into()],
            labels: vec![0; 3],
            vectors: vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
        };
        let closest = set.closest(&[0.0, 1.0], 2);
        assert_eq!(closest.as_slice(), &[(1, 1.0), (2, 0.8)]);
        assert_eq!(set.closest(&[1.0, 0.0], 1).best(), Some((0, 1.0)));
        // Asking for more than there are keeps what there is.
        assert_eq!(set.closest(&[1.0, 0.0], 8).as_slice().len(), 3);
    }

    #[test]
    fn clause_settings_default_on_and_are_checked() {
        let s = section(MINIMAL);
        assert!(s.clauses.enabled);
        assert_eq!((s.clauses.min_words, s.clauses.max_clauses), (10, 3));
        let with = |extra: &str| section(&format!("{MINIMAL}\n[clauses]\n{extra}"));
        assert!(
            with("max_clauses = 1")
                .validate()
                .unwrap_err()
                .contains("max_clauses")
        );
        assert!(
            with("min_words = 2")
                .validate()
                .unwrap_err()
                .contains("min_words")
        );
        assert!(
            with("margin = 3.0")
                .validate()
                .unwrap_err()
                .contains("margin")
        );
        assert!(with("lean = -2.0").validate().unwrap_err().contains("lean"));
        assert_eq!(with("enabled = false").validate(), Ok(()));
        assert!(
            toml::from_str::<SemanticSection>(&format!("{MINIMAL}\n[clauses]\nsplit = 1")).is_err()
        );
    }

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 9, 16, 383, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "n={n}");
        }
        // Unequal lengths use the shorter, as zip did.
        assert!((dot(&[1.0, 2.0, 3.0], &[1.0, 1.0]) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn neighbours_outside_the_supported_range_are_refused() {
        let mut s = section(MINIMAL);
        assert_eq!(s.neighbours, 1);
        s.neighbours = 0;
        assert!(s.validate().unwrap_err().contains("neighbours"));
        s.neighbours = MAX_NEIGHBOURS + 1;
        assert!(s.validate().unwrap_err().contains("neighbours"));
        s.neighbours = 3;
        assert_eq!(s.validate(), Ok(()));
    }
}
