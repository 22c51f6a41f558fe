//! Personal data redaction for transcripts, audit details and log lines.
//!
//! Transcripts come from Whisper, so a number can arrive as digits
//! ("4929 1234"), as words ("four nine two nine", "oh seven", "double four")
//! or as a mix of both, split by commas or full stops where the caller
//! paused. Text is therefore read as a stream of tokens: digit groups and
//! spoken digits that follow each other form a *number run*, and the kinds
//! below are recognised on runs, never on the raw characters.
//!
//! What is recognised (each is enabled by name in `[governance] redact`):
//! - `card`: 13 to 19 digits passing the Luhn check.
//! - `sort_code`: any six digits shortly after "sort code"; `NN-NN-NN` on its
//!   own too, unless it reads as a date (`20-12-23`) with no bank word near.
//! - `account_number`: eight digits, only with a bank word shortly before
//!   ("bank", "sort code", "current/savings account", "building society",
//!   "direct debit", a bank's name). A bare "account number 12345678" is
//!   kept on purpose: the council tax account number is also eight digits,
//!   the assistant asks for it and reads it back, and losing it from the
//!   record would make the call impossible to follow up.
//! - `ni_number`: UK National Insurance numbers (valid prefixes only), written
//!   or spelled out.
//! - `phone`: UK numbers starting 01, 02, 03 or 07 (10 or 11 digits), and the
//!   same in +44 / 0044 form.
//! - `email`: written addresses and spoken ones ("jo dot bloggs at example
//!   dot co dot uk").
//!
//! Dates and times are never joined into runs (`/` and `:` end a run), and
//! short numbers (house numbers, amounts, references such as "FD-7K4M2Q")
//! match no kind, so they stay as they are.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::GovernanceError;
use crate::config::GovernanceSection;

/// One kind of personal data that can be redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiKind {
    Card,
    SortCode,
    AccountNumber,
    NiNumber,
    Phone,
    Email,
}

impl PiiKind {
    pub const ALL: [PiiKind; 6] = [
        PiiKind::Card,
        PiiKind::SortCode,
        PiiKind::AccountNumber,
        PiiKind::NiNumber,
        PiiKind::Phone,
        PiiKind::Email,
    ];

    /// The name used in `[governance] redact`.
    pub fn config_name(self) -> &'static str {
        match self {
            PiiKind::Card => "card",
            PiiKind::SortCode => "sort_code",
            PiiKind::AccountNumber => "account_number",
            PiiKind::NiNumber => "ni_number",
            PiiKind::Phone => "phone",
            PiiKind::Email => "email",
        }
    }

    /// What replaces the data in stored and logged text.
    pub fn replacement(self) -> &'static str {
        match self {
            PiiKind::Card => "[card]",
            PiiKind::SortCode => "[sort code]",
            PiiKind::AccountNumber => "[account number]",
            PiiKind::NiNumber => "[NI number]",
            PiiKind::Phone => "[phone]",
            PiiKind::Email => "[email]",
        }
    }

    pub fn from_config_name(name: &str) -> Option<PiiKind> {
        let name = name.trim();
        PiiKind::ALL
            .into_iter()
            .find(|kind| kind.config_name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Redacts personal data from text before it is stored or logged.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Redactor {
    /// One bit per [`PiiKind`].
    kinds: u8,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = PiiKind::ALL
            .into_iter()
            .filter(|k| self.redacts(*k))
            .map(PiiKind::config_name)
            .collect();
        f.debug_struct("Redactor").field("kinds", &kinds).finish()
    }
}

impl Redactor {
    /// The kinds named in `cfg.redact`; an unknown name is an error (a typo
    /// must not silently switch redaction off).
    pub fn from_config(cfg: &GovernanceSection) -> Result<Redactor, GovernanceError> {
        let mut kinds = 0;
        for name in &cfg.redact {
            let kind = PiiKind::from_config_name(name)
                .ok_or_else(|| GovernanceError::UnknownKind(name.clone()))?;
            kinds |= kind.bit();
        }
        Ok(Redactor { kinds })
    }

    /// A redactor that changes nothing (tests, tools).
    pub fn none() -> Redactor {
        Redactor { kinds: 0 }
    }

    /// Every kind.
    pub fn all() -> Redactor {
        Redactor::with_kinds(&PiiKind::ALL)
    }

    pub fn with_kinds(kinds: &[PiiKind]) -> Redactor {
        Redactor {
            kinds: kinds.iter().fold(0, |bits, k| bits | k.bit()),
        }
    }

    pub fn redacts(&self, kind: PiiKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// `text` with the enabled kinds replaced by their tokens (`[card]`, ...).
    /// Text with nothing to redact is returned as it is, without allocating.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.kinds == 0 || !self.might_contain_pii(text) {
            return Cow::Borrowed(text);
        }
        let mut found = Vec::new();
        if self.redacts(PiiKind::Email) {
            find_emails(text, &mut found);
        }
        let needs_tokens = self.kinds & !PiiKind::Email.bit() != 0;
        if needs_tokens {
            let tokens = tokenize(text);
            if self.redacts(PiiKind::NiNumber) {
                find_written_ni_numbers(text, &mut found);
                find_spelled_ni_numbers(text, &tokens, &mut found);
            }
            self.find_number_runs(text, &tokens, &mut found);
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(replace_spans(text, found))
    }

    /// A single pass over the bytes: digits, an `@`, " at ", a spoken digit
    /// or a spoken "dot" are the only ways any kind can appear.
    fn might_contain_pii(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        if bytes.iter().any(|b| b.is_ascii_digit() || *b == b'@') {
            return true;
        }
        // "jo.bloggs at gmail.com" has no digit and no "dot" word.
        if self.redacts(PiiKind::Email) && contains_ignore_case(text, " at ") {
            return true;
        }
        word_spans(text).any(|(start, end)| {
            let word = &text[start..end];
            digit_word(word).is_some()
                || is_multiplier(word)
                || (self.redacts(PiiKind::Email) && word.eq_ignore_ascii_case("dot"))
        })
    }

    fn find_number_runs(&self, text: &str, tokens: &[Token], found: &mut Vec<Found>) {
        let number_kinds = [
            PiiKind::Card,
            PiiKind::SortCode,
            PiiKind::AccountNumber,
            PiiKind::Phone,
        ];
        if !number_kinds.into_iter().any(|k| self.redacts(k)) {
            return;
        }
        let mut digits = String::new();
        let mut index = 0;
        while index < tokens.len() {
            if tokens[index].number.is_none() {
                index += 1;
                continue;
            }
            let mut end = index + 1;
            while end < tokens.len()
                && tokens[end].number.is_some()
                && run_continues(text, tokens[end - 1].end, tokens[end].start)
            {
                end += 1;
            }
            self.classify_run(text, tokens, index, end, &mut digits, found);
            index = end;
        }
    }

    /// Finds the kinds inside one run `tokens[first..end]`: from each token
    /// on, the longest stretch that matches a kind, then on past it. A run
    /// that joins two numbers ("07700 900123, 4929 1234 ...") thus yields
    /// both.
    fn classify_run(
        &self,
        text: &str,
        tokens: &[Token],
        first: usize,
        end: usize,
        digits: &mut String,
        found: &mut Vec<Found>,
    ) {
        let mut start = first;
        while start < end {
            let mut matched = None;
            let mut stop = start;
            digits.clear();
            // Candidates longer than the longest kind (19 digits) are not
            // tried, which bounds the work per run whatever its length.
            while stop < end {
                push_digits(digits, text, &tokens[stop]);
                if digits.len() > MAX_NUMBER_DIGITS {
                    break;
                }
                stop += 1;
                if let Some(kind) = self.classify(text, tokens, start, stop, digits) {
                    matched = Some((kind, stop));
                }
            }
            match matched {
                Some((kind, stop)) => {
                    found.push(number_span(text, tokens, start, stop, kind));
                    start = stop;
                }
                None => start += 1,
            }
        }
    }

    fn classify(
        &self,
        text: &str,
        tokens: &[Token],
        start: usize,
        stop: usize,
        digits: &str,
    ) -> Option<PiiKind> {
        let len = digits.len();
        if self.redacts(PiiKind::Card) && (13..=19).contains(&len) && luhn_valid(digits) {
            return Some(PiiKind::Card);
        }
        if self.redacts(PiiKind::Phone) && is_uk_phone(digits) {
            return Some(PiiKind::Phone);
        }
        if self.redacts(PiiKind::SortCode)
            && len == 6
            && (context_before(text, tokens, start, SORT_CODE_WINDOW, says_sort_code)
                || (is_dashed_pairs(text, tokens, start, stop)
                    && (!looks_like_date(digits)
                        || context_before(text, tokens, start, SORT_CODE_WINDOW, is_bank_word))))
        {
            return Some(PiiKind::SortCode);
        }
        if self.redacts(PiiKind::AccountNumber) && len == 8 && has_bank_context(text, tokens, start)
        {
            return Some(PiiKind::AccountNumber);
        }
        None
    }
}

/// The longest number any kind needs (a 19-digit card).
const MAX_NUMBER_DIGITS: usize = 19;
/// Tokens looked back for "sort code" before six digits.
const SORT_CODE_WINDOW: usize = 8;
/// Tokens looked back for a bank word before eight digits; wide enough for
/// "sort code two oh four five seven seven and the account is ...".
const ACCOUNT_WINDOW: usize = 16;

/// A stretch of `text` to replace.
#[derive(Debug, Clone, Copy)]
struct Found {
    start: usize,
    end: usize,
    kind: PiiKind,
}

/// A maximal stretch of ASCII letters and digits, with the digits it stands
/// for when it is a number (digit group or spoken digits).
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    number: Option<Number>,
}

#[derive(Debug, Clone, Copy)]
enum Number {
    /// Written digits: the token's own text.
    Digits,
    /// "four": one digit.
    Spoken(u8),
    /// "double four", "triple one": the digit `count` times.
    Repeated { digit: u8, count: u8 },
    /// "forty nine", "twelve", "nine hundred": a value written out in full.
    Value(u16),
}

/// Byte ranges of ASCII alphanumeric stretches. Non-ASCII characters are
/// separators, so every range starts and ends on a character boundary.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    let mut position = 0;
    std::iter::from_fn(move || {
        while position < bytes.len() && !bytes[position].is_ascii_alphanumeric() {
            position += 1;
        }
        if position >= bytes.len() {
            return None;
        }
        let start = position;
        while position < bytes.len() && bytes[position].is_ascii_alphanumeric() {
            position += 1;
        }
        Some((start, position))
    })
}

fn tokenize(text: &str) -> Vec<Token> {
    let spans: Vec<(usize, usize)> = word_spans(text).collect();
    let mut tokens = Vec::with_capacity(spans.len());
    let mut index = 0;
    while index < spans.len() {
        let (start, end) = spans[index];
        let word = &text[start..end];
        let next = spans.get(index + 1).map(|&(s, e)| &text[s..e]);
        let mut push = |end: usize, number: Option<Number>| {
            tokens.push(Token { start, end, number });
        };
        if word.bytes().all(|b| b.is_ascii_digit()) {
            push(end, Some(Number::Digits));
        } else if let Some(count) = multiplier_count(word)
            && let Some(digit) = next.and_then(digit_word)
        {
            push(spans[index + 1].1, Some(Number::Repeated { digit, count }));
            index += 1;
        } else if let Some(tens) = tens_word(word) {
            // "forty nine" is 49; "forty" alone is 40.
            match next.and_then(digit_word).filter(|d| *d > 0) {
                Some(unit) => {
                    push(
                        spans[index + 1].1,
                        Some(Number::Value(tens + u16::from(unit))),
                    );
                    index += 1;
                }
                _ => push(end, Some(Number::Value(tens))),
            }
        } else if let Some(teen) = teen_word(word) {
            push(end, Some(Number::Value(teen)))
        } else if let Some(digit) = digit_word(word) {
            if digit > 0 && next.is_some_and(|w| w.eq_ignore_ascii_case("hundred")) {
                push(
                    spans[index + 1].1,
                    Some(Number::Value(u16::from(digit) * 100)),
                );
                index += 1;
            } else {
                push(end, Some(Number::Spoken(digit)));
            }
        } else {
            push(end, None);
        }
        index += 1;
    }
    tokens
}

/// Appends the digits `token` stands for.
fn push_digits(digits: &mut String, text: &str, token: &Token) {
    use std::fmt::Write;
    match token.number {
        Some(Number::Digits) => digits.push_str(&text[token.start..token.end]),
        Some(Number::Spoken(d)) => digits.push(char::from(b'0' + d)),
        Some(Number::Repeated { digit, count }) => {
            for _ in 0..count {
                digits.push(char::from(b'0' + digit));
            }
        }
        Some(Number::Value(v)) => {
            // Writing into a String cannot fail.
            let _ = write!(digits, "{v}");
        }
        None => {}
    }
}

fn digit_word(word: &str) -> Option<u8> {
    const WORDS: [(&str, u8); 14] = [
        ("zero", 0),
        ("oh", 0),
        ("o", 0),
        ("nought", 0),
        ("one", 1),
        ("two", 2),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("six", 6),
        ("seven", 7),
        ("eight", 8),
        ("nine", 9),
        ("nil", 0),
    ];
    if word.len() > 6 {
        return None;
    }
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, d)| d)
}

fn multiplier_count(word: &str) -> Option<u8> {
    if word.eq_ignore_ascii_case("double") {
        Some(2)
    } else if word.eq_ignore_ascii_case("triple") || word.eq_ignore_ascii_case("treble") {
        Some(3)
    } else {
        None
    }
}

fn is_multiplier(word: &str) -> bool {
    multiplier_count(word).is_some()
}

fn tens_word(word: &str) -> Option<u16> {
    const WORDS: [(&str, u16); 8] = [
        ("twenty", 20),
        ("thirty", 30),
        ("forty", 40),
        ("fifty", 50),
        ("sixty", 60),
        ("seventy", 70),
        ("eighty", 80),
        ("ninety", 90),
    ];
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, v)| v)
}

fn teen_word(word: &str) -> Option<u16> {
    const WORDS: [(&str, u16); 10] = [
        ("ten", 10),
        ("eleven", 11),
        ("twelve", 12),
        ("thirteen", 13),
        ("fourteen", 14),
        ("fifteen", 15),
        ("sixteen", 16),
        ("seventeen", 17),
        ("eighteen", 18),
        ("nineteen", 19),
    ];
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, v)| v)
}

/// Whether two number tokens belong to the same run: only short gaps of
/// spaces, dashes, brackets, `+`, commas and full stops (Whisper writes a
/// pause in a read-out number as ", " or ". "). `/` and `:` end a run, so
/// dates and times never merge into one long number.
fn run_continues(text: &str, previous_end: usize, next_start: usize) -> bool {
    let gap = &text.as_bytes()[previous_end..next_start];
    gap.len() <= 4
        && gap
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'-' | b'(' | b')' | b'+' | b',' | b'.'))
}

fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (position, byte) in digits.bytes().rev().enumerate() {
        let mut value = u32::from(byte.wrapping_sub(b'0'));
        if value > 9 {
            return false;
        }
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    sum.is_multiple_of(10)
}

/// UK landlines and mobiles: 01/02/03/07 with 10 or 11 digits, or the same
/// after a 44 / 0044 country code.
fn is_uk_phone(digits: &str) -> bool {
    let national = if let Some(rest) = digits.strip_prefix("0044") {
        rest
    } else if let Some(rest) = digits.strip_prefix("44") {
        rest
    } else if let Some(rest) = digits.strip_prefix('0') {
        rest
    } else {
        return false;
    };
    let first_ok = matches!(national.as_bytes().first(), Some(b'1' | b'2' | b'3' | b'7'));
    first_ok && (9..=10).contains(&national.len())
}

/// "12-34-56": three pairs of written digits joined by dashes.
fn is_dashed_pairs(text: &str, tokens: &[Token], start: usize, stop: usize) -> bool {
    let candidate = &tokens[start..stop];
    candidate.len() == 3
        && candidate
            .iter()
            .all(|t| matches!(t.number, Some(Number::Digits)) && t.end - t.start == 2)
        && candidate
            .windows(2)
            .all(|pair| &text[pair[0].end..pair[1].start] == "-")
}

/// "20-12-23" is a sort code or the 20th of December: with no bank word
/// near it, a valid day and month is left alone.
fn looks_like_date(digits: &str) -> bool {
    let pair = |i: usize| digits.get(i..i + 2).and_then(|p| p.parse::<u8>().ok());
    matches!((pair(0), pair(2)), (Some(1..=31), Some(1..=12)))
}

/// Whether any of the `window` tokens before `tokens[start]` (or a pair of
/// them) satisfies `test`.
fn context_before(
    text: &str,
    tokens: &[Token],
    start: usize,
    window: usize,
    test: fn(&str, Option<&str>) -> bool,
) -> bool {
    let from = start.saturating_sub(window);
    (from..start).any(|i| {
        let word = &text[tokens[i].start..tokens[i].end];
        let next = tokens
            .get(i + 1)
            .filter(|_| i + 1 < start)
            .map(|t| &text[t.start..t.end]);
        test(word, next)
    })
}

/// A bank word shortly before `tokens[start]`, with no council word between
/// it and the number: "I pay by direct debit, my council tax account number
/// is 41235678" is the council's reference, not a bank account.
fn has_bank_context(text: &str, tokens: &[Token], start: usize) -> bool {
    let from = start.saturating_sub(ACCOUNT_WINDOW);
    for i in (from..start).rev() {
        let word = &text[tokens[i].start..tokens[i].end];
        if is_council_word(word) {
            return false;
        }
        let next = tokens
            .get(i + 1)
            .filter(|_| i + 1 < start)
            .map(|t| &text[t.start..t.end]);
        if is_bank_word(word, next) {
            return true;
        }
    }
    false
}

fn is_council_word(word: &str) -> bool {
    ["council", "tax", "rent", "reference", "ref"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn says_sort_code(word: &str, next: Option<&str>) -> bool {
    word.eq_ignore_ascii_case("sortcode")
        || (word.eq_ignore_ascii_case("sort")
            && next.is_some_and(|n| n.eq_ignore_ascii_case("code")))
}

fn is_bank_word(word: &str, next: Option<&str>) -> bool {
    const WORDS: [&str; 16] = [
        "bank",
        "banks",
        "banking",
        "sortcode",
        "iban",
        "barclays",
        "hsbc",
        "lloyds",
        "natwest",
        "santander",
        "nationwide",
        "halifax",
        "monzo",
        "starling",
        "tsb",
        "rbs",
    ];
    const BEFORE_ACCOUNT: [&str; 3] = ["current", "savings", "joint"];
    if says_sort_code(word, next) || WORDS.iter().any(|w| w.eq_ignore_ascii_case(word)) {
        return true;
    }
    let Some(next) = next else {
        return false;
    };
    (BEFORE_ACCOUNT.iter().any(|w| w.eq_ignore_ascii_case(word))
        && next.eq_ignore_ascii_case("account"))
        || (word.eq_ignore_ascii_case("building") && next.eq_ignore_ascii_case("society"))
        || (word.eq_ignore_ascii_case("direct") && next.eq_ignore_ascii_case("debit"))
}

/// The span of a matched number, taking in a `+` or `(` just before it and
/// a `)` just after it so "+44 (0)7700 900123" leaves no stray characters.
fn number_span(text: &str, tokens: &[Token], start: usize, stop: usize, kind: PiiKind) -> Found {
    let bytes = text.as_bytes();
    let mut begin = tokens[start].start;
    while begin > 0 && matches!(bytes[begin - 1], b'+' | b'(') {
        begin -= 1;
    }
    let mut end = tokens[stop - 1].end;
    let opened = text[begin..end].bytes().filter(|b| *b == b'(').count();
    let closed = text[begin..end].bytes().filter(|b| *b == b')').count();
    if opened > closed && bytes.get(end) == Some(&b')') {
        end += 1;
    }
    Found {
        start: begin,
        end,
        kind,
    }
}

static WRITTEN_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
});

/// "jo dot bloggs at example dot co dot uk", also half written
/// ("jo.bloggs at example.com"). The address must end in a common top-level
/// domain so ordinary "... at the library ..." never matches.
static SPOKEN_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b[a-z0-9][a-z0-9._\-]*(?:\s+(?:dot|underscore|dash|hyphen)\s+[a-z0-9][a-z0-9_\-]*)*\s+at\s+[a-z0-9][a-z0-9\-]*(?:(?:\s+dot\s+|\.)[a-z0-9\-]+)*(?:\s+dot\s+|\.)(?:com|co|uk|org|net|gov|ac|nhs|io|me|info|biz|email)\b",
    )
});

/// "AB123456C", "ab 12 34 56 c"; the prefix is checked in code.
static WRITTEN_NI_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)\b([a-z])([a-z])[ \-]?(\d{2})[ \-]?(\d{2})[ \-]?(\d{2})[ \-]?([a-d])\b")
});

/// The patterns are constants covered by the unit tests; a failure here is
/// a programming error, never input.
fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in redaction pattern: {e}"))
}

fn find_emails(text: &str, found: &mut Vec<Found>) {
    if text.contains('@') {
        for m in WRITTEN_EMAIL.find_iter(text) {
            found.push(Found {
                start: m.start(),
                end: m.end(),
                kind: PiiKind::Email,
            });
        }
    }
    if contains_ignore_case(text, " at ") {
        for m in SPOKEN_EMAIL.find_iter(text) {
            found.push(Found {
                start: m.start(),
                end: m.end(),
                kind: PiiKind::Email,
            });
        }
    }
}

fn contains_ignore_case(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// HMRC's rules: the first letter is not D, F, I, Q, U or V; the second is
/// not D, F, I, O, Q, U or V; and some pairs are never issued.
fn valid_ni_prefix(first: u8, second: u8) -> bool {
    let first = first.to_ascii_uppercase();
    let second = second.to_ascii_uppercase();
    if !first.is_ascii_uppercase() || !second.is_ascii_uppercase() {
        return false;
    }
    if matches!(first, b'D' | b'F' | b'I' | b'Q' | b'U' | b'V')
        || matches!(second, b'D' | b'F' | b'I' | b'O' | b'Q' | b'U' | b'V')
    {
        return false;
    }
    !matches!(
        [first, second],
        [b'B', b'G']
            | [b'G', b'B']
            | [b'N', b'K']
            | [b'K', b'N']
            | [b'T', b'N']
            | [b'N', b'T']
            | [b'Z', b'Z']
    )
}

fn find_written_ni_numbers(text: &str, found: &mut Vec<Found>) {
    for captures in WRITTEN_NI_NUMBER.captures_iter(text) {
        let letter = |i: usize| captures.get(i).and_then(|m| m.as_str().bytes().next());
        let (Some(whole), Some(first), Some(second)) = (captures.get(0), letter(1), letter(2))
        else {
            continue;
        };
        if valid_ni_prefix(first, second) {
            found.push(Found {
                start: whole.start(),
                end: whole.end(),
                kind: PiiKind::NiNumber,
            });
        }
    }
}

/// "Q Q one two three four five six C", "AB one two, three four, five six D":
/// a two-letter prefix (one word or two letters), a run of six digits, and
/// a final letter A to D.
fn find_spelled_ni_numbers(text: &str, tokens: &[Token], found: &mut Vec<Found>) {
    let word = |i: usize| &text[tokens[i].start..tokens[i].end];
    let letters =
        |i: usize| tokens[i].number.is_none() && word(i).bytes().all(|b| b.is_ascii_alphabetic());
    let mut digits = String::new();
    let mut index = 0;
    while index < tokens.len() {
        if tokens[index].number.is_none() {
            index += 1;
            continue;
        }
        let run_start = index;
        let mut run_end = index + 1;
        while run_end < tokens.len()
            && tokens[run_end].number.is_some()
            && run_continues(text, tokens[run_end - 1].end, tokens[run_end].start)
        {
            run_end += 1;
        }
        index = run_end;
        digits.clear();
        for token in &tokens[run_start..run_end] {
            push_digits(&mut digits, text, token);
        }
        if digits.len() != 6 || run_end >= tokens.len() || !letters(run_end) {
            continue;
        }
        let suffix = word(run_end).as_bytes();
        if !(suffix.len() == 1 && matches!(suffix[0].to_ascii_uppercase(), b'A'..=b'D')) {
            continue;
        }
        let prefix_start =
            if run_start >= 1 && letters(run_start - 1) && word(run_start - 1).len() == 2 {
                let pair = word(run_start - 1).as_bytes();
                valid_ni_prefix(pair[0], pair[1]).then_some(run_start - 1)
            } else if run_start >= 2
                && letters(run_start - 1)
                && letters(run_start - 2)
                && word(run_start - 1).len() == 1
                && word(run_start - 2).len() == 1
            {
                let (first, second) = (
                    word(run_start - 2).as_bytes()[0],
                    word(run_start - 1).as_bytes()[0],
                );
                valid_ni_prefix(first, second).then_some(run_start - 2)
            } else {
                None
            };
        if let Some(prefix) = prefix_start {
            found.push(Found {
                start: tokens[prefix].start,
                end: tokens[run_end].end,
                kind: PiiKind::NiNumber,
            });
        }
    }
}

/// Builds the redacted text; overlapping finds keep the one that starts
/// first (the longer one when two start together).
fn replace_spans(text: &str, mut found: Vec<Found>) -> String {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in found {
        if span.start < copied {
            continue;
        }
        out.push_str(&text[copied..span.start]);
        out.push_str(span.kind.replacement());
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> String {
        Redactor::all().redact(text).into_owned()
    }

    fn unchanged(text: &str) {
        let redacted = Redactor::all().redact(text);
        assert!(
            matches!(redacted, Cow::Borrowed(_)) || redacted == text,
            "{text:?} was changed to {redacted:?}"
        );
        assert_eq!(redacted, text);
    }

    #[test]
    fn config_names_every_kind_and_rejects_unknown_ones() {
        let redactor = Redactor::from_config(&GovernanceSection::default()).expect("defaults");
        assert_eq!(redactor, Redactor::all());
        let typo = GovernanceSection {
            redact: vec!["card".into(), "credit_card".into()],
            ..GovernanceSection::default()
        };
        match Redactor::from_config(&typo) {
            Err(GovernanceError::UnknownKind(name)) => assert_eq!(name, "credit_card"),
            other => panic!("expected UnknownKind, got {other:?}"),
        }
        let only_email = GovernanceSection {
            redact: vec!["email".into()],
            ..GovernanceSection::default()
        };
        let redactor = Redactor::from_config(&only_email).expect("email");
        assert_eq!(
            redactor.redact("card 4929 1234 5678 9015, mail jo@example.com"),
            "card 4929 1234 5678 9015, mail [email]"
        );
        assert_eq!(format!("{redactor:?}"), r#"Redactor { kinds: ["email"] }"#);
    }

    #[test]
    fn none_changes_nothing() {
        let text = "card 4929 1234 5678 9015";
        assert!(matches!(Redactor::none().redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn card_numbers_written_and_spoken() {
        assert_eq!(
            all("My card number is 4929 1234 5678 9015."),
            "My card number is [card]."
        );
        assert_eq!(all("it's 4929-1234-5678-9015 thanks"), "it's [card] thanks");
        assert_eq!(all("4929123456789015"), "[card]");
        assert_eq!(all("amex 3782 822463 10005"), "amex [card]");
        assert_eq!(
            all("four nine two nine, one two three four, five six seven eight, nine oh one five"),
            "[card]"
        );
        assert_eq!(
            all(
                "Card is four one double one, one one one one. One, one, one, one, one one one one please"
            ),
            "Card is [card] please"
        );
        assert_eq!(
            all("it's 4929 one two three four 5678 nine zero one five"),
            "it's [card]"
        );
    }

    #[test]
    fn luhn_failing_sixteen_digits_stay() {
        unchanged("the number on the letter is 4929 1234 5678 9016");
        unchanged("4929123456789012");
    }

    #[test]
    fn sort_codes() {
        assert_eq!(all("it's 40-45-77"), "it's [sort code]");
        assert_eq!(all("bank details 20-12-23"), "bank details [sort code]");
        // A date written with dashes, with no bank word near, stays.
        unchanged("the 20-12-23 collection was missed");
        assert_eq!(all("my sort code is 204577"), "my sort code is [sort code]");
        assert_eq!(
            all("Sort code, two oh, four five, seven seven."),
            "Sort code, [sort code]."
        );
        // Six digits with no sort code context are kept.
        unchanged("we paid 204577 last year");
        unchanged("from 20 45 77");
    }

    #[test]
    fn bank_account_numbers_need_a_bank_context() {
        assert_eq!(
            all("my bank account number is 41235678"),
            "my bank account number is [account number]"
        );
        assert_eq!(
            all("sort code 20-45-77 account number 41235678"),
            "sort code [sort code] account number [account number]"
        );
        assert_eq!(
            all(
                "the sort code is two oh four five seven seven and the account is four one two three five six seven eight"
            ),
            "the sort code is [sort code] and the account is [account number]"
        );
        assert_eq!(
            all("pay it by direct debit from 41235678"),
            "pay it by direct debit from [account number]"
        );
        unchanged("I pay by direct debit, my council tax account number is 41235678");
    }

    #[test]
    fn council_tax_references_dates_times_and_addresses_stay() {
        // The assistant asks for and reads back the eight-digit council tax
        // account number; it must survive in the record.
        unchanged("my council tax account number is 41235678");
        unchanged("it's four one two three five six seven eight");
        unchanged("I have your council tax account number as 41235678. Is that right?");
        unchanged("Your reference is FD-7K4M2Q.");
        unchanged("Your reference is F D, 7 K 4 M 2 Q.");
        unchanged("my bin wasn't collected on 12/03/2024 at 10:30 from 14 Ashbourne Road DE1 2AB");
        unchanged("Flat 3, 27 Station Street, the 21st of March at half nine");
        unchanged("we moved in on the twenty first of march two thousand and twenty four");
        unchanged(
            "Dangerous defects are made safe within twenty four hours, and others within five working days.",
        );
        unchanged("I owe £1,250.50 on my bill");
        unchanged("Oh, no one told me, I paid nine hundred pounds");
    }

    #[test]
    fn ni_numbers() {
        assert_eq!(
            all("my NI number is AB123456C"),
            "my NI number is [NI number]"
        );
        assert_eq!(all("it's ab 12 34 56 c."), "it's [NI number].");
        assert_eq!(all("J X one two three four five six A"), "[NI number]");
        assert_eq!(
            all("NI number is JX, twelve, thirty four, fifty six, D"),
            "NI number is [NI number]"
        );
        // Invalid prefixes (D, F, I, Q, U, V first; O second; BG, GB, ...)
        // and final letters beyond D are not NI numbers.
        unchanged("QQ123456C");
        unchanged("GB123456A");
        unchanged("AO123456A");
        unchanged("AB123456E");
    }

    #[test]
    fn uk_phone_numbers() {
        assert_eq!(all("call me on 07700 900123"), "call me on [phone]");
        assert_eq!(all("it's (020) 7946 0958"), "it's [phone]");
        assert_eq!(all("+44 7700 900123 is my mobile"), "[phone] is my mobile");
        assert_eq!(all("0044 20 7946 0958"), "[phone]");
        assert_eq!(all("landline 01632 960123"), "landline [phone]");
        assert_eq!(
            all("Oh seven seven double oh, nine hundred, one two three."),
            "[phone]."
        );
        assert_eq!(
            all("plus four four seven seven oh oh nine oh oh one two three"),
            "plus [phone]"
        );
        assert_eq!(all("07700 900123, or 01632 960123"), "[phone], or [phone]");
        unchanged("0800 123 4567 is the council's free number");
    }

    #[test]
    fn email_addresses() {
        assert_eq!(
            all("email jo.bloggs+tax@example.co.uk please"),
            "email [email] please"
        );
        assert_eq!(
            all("it's jo dot bloggs at example dot co dot uk"),
            "it's [email]"
        );
        assert_eq!(
            all("send it to jo.bloggs at gmail.com"),
            "send it to [email]"
        );
        unchanged("I was at the library dot dot dot");
        unchanged("I'll be at home at 5 o'clock");
    }

    #[test]
    fn text_without_personal_data_is_borrowed() {
        for text in [
            "",
            "I'd like to report a missed bin collection",
            "what time does the tip open on a Sunday",
            "Hello, you're through to the council.",
        ] {
            assert!(
                matches!(Redactor::all().redact(text), Cow::Borrowed(_)),
                "{text:?}"
            );
        }
        // Digits that match nothing still come back borrowed.
        assert!(matches!(
            Redactor::all().redact("number 12 on Ashbourne Road"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn several_kinds_in_one_turn_and_json() {
        assert_eq!(
            all(
                "card 4111 1111 1111 1111, mobile 07700 900123, email jo@example.com, NI AB123456C"
            ),
            "card [card], mobile [phone], email [email], NI [NI number]"
        );
        // Request details are stored as JSON: tokens never break it.
        assert_eq!(
            all(r#"{"account_reference":"41235678","note":"card 4111111111111111"}"#),
            r#"{"account_reference":"41235678","note":"card [card]"}"#
        );
    }

    #[test]
    fn long_number_runs_stay_bounded_and_non_ascii_is_safe() {
        let long = "1 ".repeat(5000);
        let _ = all(&long);
        assert_eq!(all("café 4929 1234 5678 9015 ✓"), "café [card] ✓");
        unchanged("naïve — ünïcödé ✓ 12");
    }
}
