//! Word error rate, for the accuracy tests and benchmarks.
//!
//! Both sides are normalised first, so that Whisper is not charged for
//! writing "10" where the reference says "ten", "ill-disposed" for "ill
//! disposed", or "Mr." for "mister".

/// Word-level edit counts of a hypothesis against a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordErrors {
    /// Substitutions + deletions + insertions.
    pub errors: usize,
    /// Words in the (normalised) reference.
    pub reference_words: usize,
}

impl WordErrors {
    /// Errors per reference word (0 when the reference is empty and so is the
    /// hypothesis; 1 per inserted word otherwise).
    pub fn rate(&self) -> f64 {
        if self.reference_words == 0 {
            self.errors as f64
        } else {
            self.errors as f64 / self.reference_words as f64
        }
    }
}

impl std::ops::Add for WordErrors {
    type Output = WordErrors;
    fn add(self, other: WordErrors) -> WordErrors {
        WordErrors {
            errors: self.errors + other.errors,
            reference_words: self.reference_words + other.reference_words,
        }
    }
}

/// Counts word errors of `hypothesis` against `reference` after normalising
/// both with [`normalize`].
pub fn word_errors(reference: &str, hypothesis: &str) -> WordErrors {
    let reference = normalize(reference);
    let hypothesis = normalize(hypothesis);
    let reference: Vec<&str> = reference.split_whitespace().collect();
    let hypothesis: Vec<&str> = hypothesis.split_whitespace().collect();
    WordErrors {
        errors: edit_distance(&reference, &hypothesis),
        reference_words: reference.len(),
    }
}

/// Lower case, no punctuation, hyphens as spaces, numbers as words, common
/// abbreviations spelled out.
pub fn normalize(text: &str) -> String {
    let lowered = text.to_lowercase();
    let mut spaced = String::with_capacity(lowered.len());
    let mut chars = lowered.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        let next = chars.peek().copied().unwrap_or(' ');
        match c {
            // "1,000" and "2.5" keep their digits together.
            ',' | '.' if previous.is_ascii_digit() && next.is_ascii_digit() => {
                if c == '.' {
                    spaced.push_str(" point ");
                }
            }
            '\'' | '’' => {}
            c if c.is_alphanumeric() => spaced.push(c),
            _ => spaced.push(' '),
        }
        previous = c;
    }
    let mut words = Vec::new();
    for word in spaced.split_whitespace() {
        match word {
            "mr" => words.push("mister".to_string()),
            "mrs" => words.push("missus".to_string()),
            "dr" => words.push("doctor".to_string()),
            "ok" => words.push("okay".to_string()),
            w if w.bytes().all(|b| b.is_ascii_digit()) => match w.parse::<u64>() {
                Ok(n) if n < 1_000_000_000_000 => words.push(number_to_words(n)),
                _ => words.extend(w.chars().map(|d| digit_word(d).to_string())),
            },
            w => words.push(w.to_string()),
        }
    }
    words.join(" ")
}

fn digit_word(digit: char) -> &'static str {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    digit.to_digit(10).map_or("", |d| DIGITS[d as usize])
}

/// Cardinal number in words, without the "and" (both sides of a WER
/// comparison go through here, so only consistency matters). The words come
/// from the speech normaliser, so what Frontdoor says and how it scores
/// recognised numbers agree.
pub fn number_to_words(n: u64) -> String {
    crate::speech::normalize::number_words(n)
        .replace(" and ", " ")
        .replace('-', " ")
}

/// Levenshtein distance over words, in O(min(n, m)) memory.
fn edit_distance(reference: &[&str], hypothesis: &[&str]) -> usize {
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut current = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        current[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[hypothesis.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_removes_case_punctuation_and_spells_numbers() {
        assert_eq!(normalize("Ten of Clubs."), "ten of clubs");
        assert_eq!(normalize("10 of clubs"), "ten of clubs");
        assert_eq!(normalize("Mr. John Dashwood"), "mister john dashwood");
        assert_eq!(
            normalize("an ill-disposed young man"),
            "an ill disposed young man"
        );
        assert_eq!(
            normalize("1,250 pounds"),
            "one thousand two hundred fifty pounds"
        );
        assert_eq!(normalize("don't"), "dont");
    }

    #[test]
    fn wer_counts_substitutions_deletions_and_insertions() {
        let e = word_errors("go forward ten meters", "go forward ten meters");
        assert_eq!(
            e,
            WordErrors {
                errors: 0,
                reference_words: 4
            }
        );
        assert_eq!(
            word_errors("go forward ten meters", "go forward 10 metres").errors,
            1
        );
        assert_eq!(
            word_errors("go forward ten meters", "go ten meters").errors,
            1
        );
        assert_eq!(word_errors("five five", "five five five").errors, 1);
        assert_eq!(word_errors("a b", "").rate(), 1.0);
        assert_eq!(word_errors("", "").rate(), 0.0);
    }

    #[test]
    fn number_words() {
        assert_eq!(number_to_words(0), "zero");
        assert_eq!(number_to_words(15), "fifteen");
        assert_eq!(number_to_words(42), "forty two");
        assert_eq!(number_to_words(105), "one hundred five");
        assert_eq!(number_to_words(2_000_001), "two million one");
    }

    #[test]
    fn error_counts_add_up() {
        let total = word_errors("a b c", "a b") + word_errors("d", "e");
        assert_eq!(
            total,
            WordErrors {
                errors: 2,
                reference_words: 4
            }
        );
        assert!((total.rate() - 0.5).abs() < 1e-9);
    }
}
