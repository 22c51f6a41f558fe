//! Splitting a long utterance into clauses for the semantic layer.
//!
//! Callers bury the thing that matters behind a council topic: "i need to
//! sort a payment plan for the council tax but honestly ive been saving up
//! my sleeping tablets". Embedded whole, the sentence lands near the council
//! tax examples (and a sentence model reads only its first 64 word pieces),
//! so the risk clause is outvoted. Scored on its own, the clause after "but
//! honestly" is plainly distress. Speech recognition hands over no
//! punctuation, so clauses are found at discourse words ("and", "but",
//! "because", "honestly", "to be honest"…), the places where people change
//! the subject in speech.
//!
//! Hand-written because no crate splits unpunctuated spoken English into
//! clauses; a parser would need punctuation and cost far more than the 5 ms
//! budget allows.

/// Words that start a new clause. They are dropped from the clause itself
/// ("but honestly ive been saving up my tablets" → "ive been saving up my
/// tablets"): they carry no meaning the sentence model needs.
const SINGLE: &[&str] = &[
    "and",
    "but",
    "because",
    "cos",
    "coz",
    "cause",
    "so",
    "since",
    "anyway",
    "anyways",
    "also",
    "honestly",
    "although",
    "though",
    "however",
    "plus",
    "besides",
    "meanwhile",
    "whilst",
    "while",
    "otherwise",
    "basically",
    "actually",
];

/// Phrases that start a new clause, as word sequences.
const PHRASES: &[&[&str]] = &[
    &["to", "be", "honest"],
    &["the", "thing", "is"],
    &["on", "top", "of", "that"],
    &["i", "mean"],
    &["if", "im", "honest"],
    &["truth", "be", "told"],
];

/// Clauses shorter than this join their neighbour: "my bin and my
/// recycling" is one thing, not two.
const MIN_CLAUSE_WORDS: usize = 5;

/// The clauses of `text` (already normalised: lower case, single spaces),
/// at most `max` of them, each at least five words, in order. One clause or
/// none means the utterance does not split; the caller then has nothing to
/// add to its whole-utterance score.
///
/// Clauses that join keep the words between them ("me and my partner split
/// up" stays as said, not "me my partner split up"): only the word that
/// opens a clause is dropped.
pub fn clauses(text: &str, max: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    // Each clause as a range of `words`, its opening discourse word excluded.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < words.len() {
        let phrase = PHRASES
            .iter()
            .find(|p| words.get(at..at + p.len()) == Some(p))
            .map(|p| p.len());
        match phrase.or_else(|| SINGLE.contains(&words[at]).then_some(1)) {
            Some(skip) => {
                if at > start {
                    spans.push((start, at));
                }
                at += skip;
                start = at;
            }
            None => at += 1,
        }
    }
    if words.len() > start {
        spans.push((start, words.len()));
    }
    let len = |(a, b): (usize, usize)| b - a;
    // Short fragments join the clause before them (the first joins the next).
    let mut joined: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for span in spans {
        match joined.last_mut() {
            Some(last) if len(span) < MIN_CLAUSE_WORDS || len(*last) < MIN_CLAUSE_WORDS => {
                last.1 = span.1
            }
            _ => joined.push(span),
        }
    }
    // Too many: merge the neighbouring pair that is shortest together, so
    // every word is still scored and the long clauses stay whole.
    let max = max.max(1);
    while joined.len() > max {
        let Some(pair) = (0..joined.len() - 1).min_by_key(|&i| joined[i + 1].1 - joined[i].0)
        else {
            break;
        };
        let next = joined.remove(pair + 1);
        joined[pair].1 = next.1;
    }
    joined
        .into_iter()
        .map(|(a, b)| words[a..b].join(" "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_discourse_words_and_drops_them() {
        assert_eq!(
            clauses(
                "i need to sort a payment plan for the council tax but honestly ive been saving up my sleeping tablets",
                3
            ),
            vec![
                "i need to sort a payment plan for the council tax",
                "ive been saving up my sleeping tablets"
            ]
        );
        assert_eq!(
            clauses(
                "the bins were missed again to be honest i dont want to be here any more",
                3
            ),
            vec![
                "the bins were missed again",
                "i dont want to be here any more"
            ]
        );
    }

    #[test]
    fn short_fragments_join_a_neighbour() {
        // "my recycling" alone is no clause; joined, the words stay as said.
        assert_eq!(
            clauses("they missed my black bin and my recycling", 3),
            vec!["they missed my black bin and my recycling"]
        );
        // A short opening fragment joins what follows.
        assert_eq!(
            clauses("so yeah and the boiler has stopped working again", 3),
            vec!["yeah and the boiler has stopped working again"]
        );
        assert_eq!(
            clauses("me and my partner split up and ive got nowhere to live", 3),
            vec!["me and my partner split up", "ive got nowhere to live"]
        );
    }

    #[test]
    fn never_more_than_asked_and_every_word_kept() {
        let text = "i rang about the bins on our road and they said monday without fail \
                    but nobody from the depot came out at all so the road is still blocked \
                    and anyway my neighbour is no help to anyone either";
        assert_eq!(clauses(text, 8).len(), 5);
        // Merged, the words between stay; only clause openers are dropped.
        let three = clauses(text, 3);
        assert_eq!(three.len(), 3, "{three:?}");
        let kept: usize = three.iter().map(|c| c.split_whitespace().count()).sum();
        // Two of the four openers ("and", "but", "so", "and anyway") open a
        // kept clause and are dropped; the others sit inside merged ones.
        assert!(kept < text.split_whitespace().count(), "{three:?}");
        assert!(kept >= text.split_whitespace().count() - 3, "{three:?}");
        assert!(
            three[0].starts_with("i rang") && three[2].ends_with("either"),
            "{three:?}"
        );
        assert_eq!(clauses(text, 1).len(), 1);
        let one = clauses(text, 1).join(" ");
        assert!(
            one.starts_with("i rang") && one.ends_with("either"),
            "{one}"
        );
    }

    #[test]
    fn odd_input_gives_nothing_or_one_clause() {
        assert!(clauses("", 3).is_empty());
        assert!(clauses("and but so", 3).is_empty());
        assert_eq!(clauses("help", 3), vec!["help"]);
        assert_eq!(clauses(&"and ".repeat(5000), 3).len(), 0);
        assert_eq!(clauses(&"word ".repeat(5000), 3).len(), 1);
    }
}
