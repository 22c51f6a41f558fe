//! Lexical intent classifier built at start-up from the knowledge files.
//!
//! Why lexical: it needs no model download, costs microseconds per utterance,
//! and a council officer improves it by adding an example sentence to a TOML
//! file. It combines three signals per intent:
//! - nearest example (TF-IDF cosine over word stems and stem pairs), which
//!   captures how residents actually phrase things;
//! - similarity to the intent's centroid, which smooths over unusual wording;
//! - keywords that on their own point at one service ("pothole", "summons").
//!
//! Recogniser errors are absorbed by a synonym table (e.g. "counsel" →
//! "council") and by snapping unknown words to the nearest known word within a
//! small edit distance.

use std::collections::HashMap;

use super::knowledge::Intent;
use super::normalize::tokens;

/// Words that say nothing about which service a caller wants.
const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "you",
    "your",
    "yours",
    "we",
    "our",
    "ours",
    "us",
    "they",
    "them",
    "their",
    "he",
    "she",
    "his",
    "her",
    "him",
    "it",
    "its",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "im",
    "ive",
    "id",
    "ill",
    "youre",
    "weve",
    "theyre",
    "theyve",
    "hes",
    "shes",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "from",
    "with",
    "by",
    "and",
    "or",
    "but",
    "so",
    "if",
    "as",
    "that",
    "thats",
    "this",
    "these",
    "those",
    "there",
    "theres",
    "here",
    "just",
    "yeah",
    "yes",
    "yep",
    "hi",
    "hello",
    "hiya",
    "morning",
    "afternoon",
    "evening",
    "please",
    "thanks",
    "thank",
    "cheers",
    "ok",
    "okay",
    "oh",
    "well",
    "right",
    "also",
    "really",
    "very",
    "quite",
    "bit",
    "got",
    "get",
    "gets",
    "getting",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "doing",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "want",
    "wanna",
    "gonna",
    "like",
    "about",
    "some",
    "any",
    "know",
    "need",
    "needs",
    "sorry",
    "then",
    "now",
    "only",
    "actually",
    "basically",
    "literally",
    "wondering",
    "calling",
    "ringing",
    "phoning",
    "ring",
    "call",
    "whats",
    "its",
    "one",
    "thing",
    "yous",
    "ya",
    "mate",
    "love",
    "duck",
    "again",
    "still",
    "too",
    "tell",
    "let",
    "lets",
    "say",
    "said",
    "see",
];

/// Negations collapse to one token: "not collected" and "wasnt collected" agree.
const NEGATIONS: &[&str] = &[
    "not", "no", "didnt", "wasnt", "hasnt", "havent", "isnt", "arent", "werent", "never", "nobody",
    "dont", "doesnt", "aint", "hadnt",
];

const NEAREST_EXAMPLE_WEIGHT: f32 = 0.55;
const CENTROID_WEIGHT: f32 = 0.30;
const KEYWORD_WEIGHT: f32 = 0.12;
const KEYWORD_CAP: f32 = 4.0;
/// Weight of a `strong_keywords` entry relative to an ordinary keyword.
const STRONG_KEYWORD: f32 = 2.0;
/// Below this best score nothing the caller said resembles council business.
const NOTHING_RECOGNISED: f32 = 0.12;

type SparseVector = Vec<(u32, f32)>;

/// Ranked guess for one utterance.
#[derive(Debug, Clone)]
pub struct IntentScores {
    /// Intent indices with their scores, best first (at most three).
    pub ranked: Vec<(usize, f32)>,
    pub confidence: f32,
    pub reason: String,
}

#[derive(Debug)]
pub struct IntentClassifier {
    names: Vec<String>,
    out_of_scope: usize,
    features: HashMap<String, u32>,
    idf: Vec<f32>,
    /// Known single words, for snapping misheard words.
    known_words: Vec<String>,
    examples: Vec<(usize, SparseVector)>,
    centroids: Vec<SparseVector>,
    keywords: Vec<(Vec<String>, usize, f32)>,
    synonyms: Vec<(String, String)>,
    /// Meaning-based similarity to each intent's examples, blended in when attached.
    semantic: Option<std::sync::Arc<super::semantic::SemanticScorer>>,
}

impl IntentClassifier {
    pub fn build(
        intents: &[Intent],
        synonyms: &std::collections::BTreeMap<String, String>,
    ) -> IntentClassifier {
        let synonyms: Vec<(String, String)> = synonyms
            .iter()
            .map(|(from, to)| {
                (
                    format!(" {} ", super::normalize::normalise(from)),
                    format!(" {} ", super::normalize::normalise(to)),
                )
            })
            .filter(|(from, _)| !from.trim().is_empty())
            .collect();
        let mut classifier = IntentClassifier {
            names: intents.iter().map(|i| i.name.clone()).collect(),
            out_of_scope: intents
                .iter()
                .position(|i| i.name == "out_of_scope")
                .unwrap_or(0),
            features: HashMap::new(),
            idf: Vec::new(),
            known_words: Vec::new(),
            examples: Vec::new(),
            centroids: Vec::new(),
            keywords: Vec::new(),
            synonyms,
            semantic: None,
        };

        // Document frequency counts intents, not sentences: a word used by one
        // service only is a strong clue however many examples repeat it.
        let mut per_intent_features: Vec<Vec<Vec<String>>> = Vec::with_capacity(intents.len());
        let mut intent_frequency: HashMap<String, u32> = HashMap::new();
        for (index, intent) in intents.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            let mut example_features = Vec::with_capacity(intent.examples.len());
            for example in &intent.examples {
                let stems = classifier.stems(&super::normalize::normalise(example), false);
                let features = feature_strings(&stems);
                for f in &features {
                    seen.insert(f.clone());
                }
                example_features.push(features);
            }
            let weighted = intent
                .keywords
                .iter()
                .map(|k| (k, 1.0))
                .chain(intent.strong_keywords.iter().map(|k| (k, STRONG_KEYWORD)));
            for (keyword, base) in weighted {
                let stems = classifier.stems(&super::normalize::normalise(keyword), false);
                if stems.is_empty() {
                    continue;
                }
                for f in feature_strings(&stems) {
                    seen.insert(f);
                }
                // A multi-word keyword is a more specific clue than one word.
                let weight = base * (1.0 + 0.5 * (stems.len().min(3) as f32 - 1.0));
                classifier.keywords.push((stems, index, weight));
            }
            for f in seen {
                *intent_frequency.entry(f).or_insert(0) += 1;
            }
            per_intent_features.push(example_features);
        }

        let intent_count = intents.len() as f32;
        let mut entries: Vec<(&String, &u32)> = intent_frequency.iter().collect();
        entries.sort();
        for (feature, df) in entries {
            let id = classifier.idf.len() as u32;
            classifier.features.insert(feature.clone(), id);
            classifier
                .idf
                .push(((intent_count + 1.0) / (*df as f32 + 0.5)).ln().max(0.01));
            if !feature.contains(' ') {
                classifier.known_words.push(feature.clone());
            }
        }

        for (index, example_features) in per_intent_features.iter().enumerate() {
            let mut centroid: HashMap<u32, f32> = HashMap::new();
            for features in example_features {
                let vector = classifier.vectorise(features);
                for (id, w) in &vector {
                    *centroid.entry(*id).or_insert(0.0) += w;
                }
                classifier.examples.push((index, vector));
            }
            let mut centroid: SparseVector = centroid.into_iter().collect();
            centroid.sort_unstable_by_key(|(id, _)| *id);
            normalise_vector(&mut centroid);
            classifier.centroids.push(centroid);
        }
        classifier
    }

    /// Blends the semantic layer's intent similarities into every score from
    /// now on; the scorer must have been built from the same intents.
    pub fn attach_semantic(&mut self, scorer: std::sync::Arc<super::semantic::SemanticScorer>) {
        self.semantic = Some(scorer);
    }

    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("out_of_scope", String::as_str)
    }

    pub fn classify(&self, normalised: &str) -> IntentScores {
        let stems = self.stems(normalised, true);
        let features = feature_strings(&stems);
        let query = self.vectorise(&features);
        if query.is_empty() {
            return IntentScores {
                ranked: vec![(self.out_of_scope, 0.0)],
                confidence: 0.1,
                reason: "no words the knowledge base recognises".into(),
            };
        }

        let mut nearest = vec![0.0f32; self.names.len()];
        for (intent, example) in &self.examples {
            let similarity = dot(&query, example);
            if similarity > nearest[*intent] {
                nearest[*intent] = similarity;
            }
        }
        let mut keyword_hits = vec![0.0f32; self.names.len()];
        let mut matched_keywords: Vec<String> = Vec::new();
        for (keyword, intent, weight) in &self.keywords {
            if contains_sequence(&stems, keyword) {
                keyword_hits[*intent] += weight;
                if matched_keywords.len() < 4 {
                    matched_keywords.push(keyword.join(" "));
                }
            }
        }

        let mut scored: Vec<(usize, f32)> = (0..self.names.len())
            .map(|i| {
                let centroid = dot(&query, &self.centroids[i]);
                let score = NEAREST_EXAMPLE_WEIGHT * nearest[i]
                    + CENTROID_WEIGHT * centroid
                    + KEYWORD_WEIGHT * keyword_hits[i].min(KEYWORD_CAP);
                (i, score)
            })
            .collect();
        let lexical_best = scored.iter().map(|s| s.1).fold(0.0f32, f32::max);
        let semantic_note = self.blend_semantic(normalised, &mut scored);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(3);

        let best = if lexical_best < NOTHING_RECOGNISED {
            lexical_best
        } else {
            scored[0].1
        };
        let second = scored.get(1).map_or(0.0, |s| s.1);
        if best < NOTHING_RECOGNISED {
            return IntentScores {
                ranked: vec![(self.out_of_scope, best)],
                confidence: 0.15,
                reason: format!("nothing close to council business (best score {best:.2})"),
            };
        }
        let confidence = calibrate(best, second);
        let mut reason = format!(
            "classifier: {} score {:.2}, runner-up {} {:.2}",
            self.name(scored[0].0),
            best,
            scored.get(1).map_or("-", |s| self.name(s.0)),
            second
        );
        if !matched_keywords.is_empty() {
            reason.push_str("; keywords: ");
            reason.push_str(&matched_keywords.join(", "));
        }
        if let Some(note) = semantic_note {
            reason.push_str("; ");
            reason.push_str(&note);
        }
        IntentScores {
            ranked: scored,
            confidence,
            reason,
        }
    }

    /// Adds `weight × (similarity − best similarity)` per intent: the
    /// ranking moves towards the semantically nearest intent, while the best
    /// score (and so the confidence) never rises above the lexical evidence.
    fn blend_semantic(&self, normalised: &str, scored: &mut [(usize, f32)]) -> Option<String> {
        let scorer = self.semantic.as_ref()?;
        let similarities = match scorer.intent_similarities(normalised) {
            Ok(similarities) => similarities,
            Err(error) => {
                tracing::warn!(%error, "semantic intent scores unavailable; lexical only");
                return None;
            }
        };
        let top = similarities.iter().copied().fold(0.0f32, f32::max);
        let weight = scorer.intent_weight();
        for (intent, score) in scored.iter_mut() {
            if let Some(similarity) = similarities.get(*intent) {
                *score += weight * (similarity - top);
            }
        }
        let (nearest, similarity) = similarities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        Some(format!(
            "semantic intent {} {:.2}",
            self.name(nearest),
            similarity
        ))
    }

    /// Content-word stems of normalised text. At query time (`snap`), unknown
    /// words are snapped to the nearest known word to absorb mishearings.
    fn stems(&self, normalised: &str, snap: bool) -> Vec<String> {
        let mut padded = String::with_capacity(normalised.len() + 2);
        padded.push(' ');
        padded.push_str(normalised);
        padded.push(' ');
        for (from, to) in &self.synonyms {
            if padded.contains(from.as_str()) {
                padded = padded.replace(from.as_str(), to.as_str());
            }
        }
        let mut out = Vec::new();
        for token in tokens(&padded) {
            if NEGATIONS.contains(&token) {
                out.push("not".to_string());
                continue;
            }
            if STOPWORDS.contains(&token) {
                continue;
            }
            let mut stemmed = stem(token);
            if snap
                && !self.features.contains_key(&stemmed)
                && let Some(known) = self.nearest_known_word(&stemmed)
            {
                stemmed = known;
            }
            out.push(stemmed);
        }
        out
    }

    fn nearest_known_word(&self, word: &str) -> Option<String> {
        let length = word.chars().count();
        if !(5..=24).contains(&length) || !word.chars().all(|c| c.is_ascii_alphabetic()) {
            return None;
        }
        let allowed = if length >= 8 { 2 } else { 1 };
        let mut best: Option<(usize, &String)> = None;
        for known in &self.known_words {
            if known.len().abs_diff(length) > allowed {
                continue;
            }
            let distance = edit_distance(word, known);
            if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, known));
            }
        }
        best.map(|(_, w)| w.clone())
    }

    fn vectorise(&self, features: &[String]) -> SparseVector {
        let mut vector: SparseVector = features
            .iter()
            .filter_map(|f| self.features.get(f).map(|id| (*id, self.idf[*id as usize])))
            .collect();
        vector.sort_unstable_by_key(|(id, _)| *id);
        vector.dedup_by_key(|(id, _)| *id);
        normalise_vector(&mut vector);
        vector
    }
}

/// Maps raw scores to a 0..1 confidence: high when the best intent scores well
/// and clearly beats the runner-up; low when two services are neck and neck.
fn calibrate(best: f32, second: f32) -> f32 {
    let strength = ((best - NOTHING_RECOGNISED) / 0.45).clamp(0.0, 1.0);
    let margin = ((best - second) / 0.12).clamp(0.0, 1.0);
    (0.2 + 0.8 * strength * (0.35 + 0.65 * margin)).clamp(0.0, 1.0)
}

/// Unigrams and adjacent pairs.
fn feature_strings(stems: &[String]) -> Vec<String> {
    let mut features = Vec::with_capacity(stems.len() * 2);
    features.extend(stems.iter().cloned());
    for pair in stems.windows(2) {
        features.push(format!("{} {}", pair[0], pair[1]));
    }
    features
}

fn contains_sequence(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && needle.len() <= haystack.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A deliberately light English stemmer: consistent, not linguistically exact.
fn stem(word: &str) -> String {
    let n = word.len();
    if !word.is_ascii() {
        return word.to_string();
    }
    if n > 4 && word.ends_with("ies") {
        return format!("{}y", &word[..n - 3]);
    }
    if n > 4 && word.ends_with("ied") {
        return format!("{}y", &word[..n - 3]);
    }
    if n > 5 && word.ends_with("ing") {
        return word[..n - 3].to_string();
    }
    if n > 4 && word.ends_with("ed") && !word.ends_with("eed") {
        return word[..n - 2].to_string();
    }
    if n > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        return word[..n - 1].to_string();
    }
    word.to_string()
}

fn normalise_vector(vector: &mut SparseVector) {
    let norm = vector.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, w) in vector.iter_mut() {
            *w /= norm;
        }
    }
}

fn dot(a: &SparseVector, b: &SparseVector) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

/// Levenshtein distance over bytes (callers pass ASCII words only).
fn edit_distance(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_is_consistent_across_forms() {
        assert_eq!(stem("bins"), "bin");
        assert_eq!(stem("collected"), stem("collecting"));
        assert_eq!(stem("emptied"), "empty");
        assert_eq!(stem("address"), "address");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("pothole", "pothol"), 1);
        assert_eq!(edit_distance("council", "counsel"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
