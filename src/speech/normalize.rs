//! Text → words a voice reads the way a council caller expects.
//!
//! espeak-ng would read "FD-123456" as "F D minus one hundred and twenty-three
//! thousand…", "DE1 2FS" as "dee-one two-F-S" and "£12.50" unpredictably, so
//! the forms that matter on a council line are rewritten into plain words
//! before phonemisation. British conventions ("one hundred and five", "zed",
//! "oh" in phone numbers) because the callers are British.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Rewrites `text` so every number, amount, time, postcode and reference is
/// spelled out in words. Punctuation that ends clauses is kept.
pub fn normalize_for_speech(text: &str) -> String {
    let mut text = text.replace(['\u{2019}', '\u{2018}'], "'");
    for (pattern, words) in ABBREVIATIONS.iter() {
        text = pattern.replace_all(&text, *words).into_owned();
    }
    let text = REFERENCE.replace_all(&text, |c: &Captures| {
        format!("{}, {}", spell_letters(&c[1]), spell_digits(&c[2], "zero"))
    });
    let text = POSTCODE.replace_all(&text, |c: &Captures| {
        format!(
            "{}, {}",
            spell_alphanumeric(&c[1]),
            spell_alphanumeric(&c[2])
        )
    });
    let text = PHONE.replace_all(&text, |c: &Captures| {
        c[0].split([' ', '-'])
            .filter(|group| !group.is_empty())
            .map(|group| spell_digits(group, "oh"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let text = MONEY.replace_all(&text, |c: &Captures| {
        money_words(&c[1], c.get(2).map(|m| m.as_str()))
    });
    let text = PENCE.replace_all(&text, |c: &Captures| {
        let pence = parse_number(&c[1]);
        format!(
            "{} {}",
            number_words(pence),
            if pence == 1 { "penny" } else { "pence" }
        )
    });
    let text = CLOCK_TIME.replace_all(&text, |c: &Captures| {
        time_words(&c[1], Some(&c[2]), c.get(3).map(|m| m.as_str()))
    });
    let text = HOUR_TIME.replace_all(&text, |c: &Captures| time_words(&c[1], None, Some(&c[2])));
    let text = PERCENT.replace_all(&text, |c: &Captures| {
        format!("{} percent", decimal_words(&c[1]))
    });
    let text = ORDINAL.replace_all(&text, |c: &Captures| ordinal_words(parse_number(&c[1])));
    let text = DECIMAL.replace_all(&text, |c: &Captures| decimal_words(&c[0]));
    let text = INTEGER.replace_all(&text, |c: &Captures| integer_words(&c[0]));
    let text = text.replace('&', " and ");
    WHITESPACE.replace_all(text.trim(), " ").into_owned()
}

fn regex(pattern: &str) -> Regex {
    // The patterns are literals in this file, covered by the tests below.
    Regex::new(pattern).unwrap_or_else(|error| panic!("bad built-in pattern {pattern}: {error}"))
}

static ABBREVIATIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\bMr\.", "Mister"),
        (r"\bMrs\.", "Missus"),
        (r"\bMs\.", "Miz"),
        (r"\bDr\.", "Doctor"),
        (r"\be\.g\.", "for example"),
        (r"\bi\.e\.", "that is"),
        (r"\betc\.", "et cetera"),
        (r"\bNo\.\s*(\d)", "number $1"),
    ]
    .into_iter()
    .map(|(pattern, words)| (regex(pattern), words))
    .collect()
});
/// Case references such as "FD-123456": letters then digits, read one by one.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| regex(r"\b([A-Z]{1,4})-(\d{3,12})\b"));
/// UK postcodes: outward code ("DE1", "SW1A", "M1") and inward code ("2FS").
static POSTCODE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})\b"));
/// UK phone numbers ("01332 640000", "0800-123-4567"), read digit by digit in groups.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b0\d{2,4}(?:[ -]\d{3,6}){1,2}\b|\b0\d{9,10}\b"));
static MONEY: LazyLock<Regex> =
    LazyLock::new(|| regex(r"£\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?"));
static PENCE: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{1,3})p\b"));
static CLOCK_TIME: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b(\d{1,2}):(\d{2})(?:\s?([ap])\.?m\b)?"));
static HOUR_TIME: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\b(\d{1,2})\s?([ap])\.?m\b"));
static PERCENT: LazyLock<Regex> = LazyLock::new(|| regex(r"(\d+(?:\.\d+)?)\s?%"));
static ORDINAL: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{1,9})(?:st|nd|rd|th)\b"));
static DECIMAL: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d+\.\d+\b"));
static INTEGER: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b"));
static WHITESPACE: LazyLock<Regex> = LazyLock::new(|| regex(r"\s+"));

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
/// Letter names as said in British English ("zed", "aitch").
const LETTERS: [&str; 26] = [
    "ay",
    "bee",
    "see",
    "dee",
    "ee",
    "eff",
    "gee",
    "aitch",
    "eye",
    "jay",
    "kay",
    "el",
    "em",
    "en",
    "oh",
    "pee",
    "cue",
    "ar",
    "ess",
    "tee",
    "you",
    "vee",
    "double you",
    "ex",
    "why",
    "zed",
];

/// Digits to a number; saturates on absurd lengths (the regexes cap them).
fn parse_number(digits: &str) -> u64 {
    digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0u64, |acc, d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
}

/// Cardinal number in words, British style: 105 → "one hundred and five".
pub fn number_words(n: u64) -> String {
    if n < 20 {
        return ONES[n as usize].to_string();
    }
    if n < 100 {
        let tens = TENS[(n / 10) as usize];
        return match n % 10 {
            0 => tens.to_string(),
            ones => format!("{tens}-{}", ONES[ones as usize]),
        };
    }
    if n < 1000 {
        let hundreds = format!("{} hundred", ONES[(n / 100) as usize]);
        return match n % 100 {
            0 => hundreds,
            rest => format!("{hundreds} and {}", number_words(rest)),
        };
    }
    for (scale, name) in [
        (1_000_000_000_000u64, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if n >= scale {
            let head = format!("{} {name}", number_words(n / scale));
            return match n % scale {
                0 => head,
                rest if rest < 100 => format!("{head} and {}", number_words(rest)),
                rest => format!("{head} {}", number_words(rest)),
            };
        }
    }
    // Every n ≥ 1000 matched a scale above; kept for the type checker.
    spell_digits(&n.to_string(), "zero")
}

fn ordinal_words(n: u64) -> String {
    let cardinal = number_words(n);
    const IRREGULAR: [(&str, &str); 8] = [
        ("one", "first"),
        ("two", "second"),
        ("three", "third"),
        ("five", "fifth"),
        ("eight", "eighth"),
        ("nine", "ninth"),
        ("twelve", "twelfth"),
        ("y", "ieth"),
    ];
    for (ending, replacement) in IRREGULAR {
        if let Some(stem) = cardinal.strip_suffix(ending) {
            return format!("{stem}{replacement}");
        }
    }
    format!("{cardinal}th")
}

/// Long digit strings are identifiers, not quantities: read them digit by digit.
fn integer_words(digits: &str) -> String {
    let plain: String = digits.chars().filter(char::is_ascii_digit).collect();
    if !digits.contains(',') && (plain.len() > 7 || (plain.len() > 1 && plain.starts_with('0'))) {
        spell_digits(&plain, "zero")
    } else {
        number_words(parse_number(&plain))
    }
}

fn decimal_words(number: &str) -> String {
    match number.split_once('.') {
        Some((whole, fraction)) => format!(
            "{} point {}",
            integer_words(whole),
            spell_digits(fraction, "zero")
        ),
        None => integer_words(number),
    }
}

fn money_words(pounds: &str, pence: Option<&str>) -> String {
    let pounds = parse_number(pounds);
    // "£3.5" means three pounds fifty.
    let pence = pence.map(|p| {
        if p.len() == 1 {
            parse_number(p) * 10
        } else {
            parse_number(p)
        }
    });
    let pound_words = format!(
        "{} {}",
        number_words(pounds),
        if pounds == 1 { "pound" } else { "pounds" }
    );
    match pence {
        None | Some(0) => pound_words,
        Some(p) if pounds == 0 => format!("{} pence", number_words(p)),
        Some(p) => format!("{pound_words} {}", number_words(p)),
    }
}

fn time_words(hour: &str, minute: Option<&str>, meridiem: Option<&str>) -> String {
    let hour_number = parse_number(hour);
    let minute_number = minute.map_or(0, parse_number);
    if hour_number > 23 || minute_number > 59 {
        // Not a time (a score, a ratio): read the numbers.
        return match minute {
            Some(m) => format!(
                "{} {}",
                number_words(hour_number),
                number_words(parse_number(m))
            ),
            None => number_words(hour_number),
        };
    }
    // "14:30" is said "two thirty pee em" on the phone, not "fourteen thirty".
    let (hour_number, meridiem) = match meridiem {
        None if hour_number > 12 => (hour_number - 12, Some("p")),
        other => (hour_number, other),
    };
    let hour_words = number_words(hour_number);
    let minutes = match minute_number {
        0 if meridiem.is_none() => " o'clock".to_string(),
        0 => String::new(),
        m if m < 10 => format!(" oh {}", number_words(m)),
        m => format!(" {}", number_words(m)),
    };
    let suffix = match meridiem.map(|m| m.to_ascii_lowercase()) {
        Some(m) if m == "a" => " ay em",
        Some(m) if m == "p" => " pee em",
        _ => "",
    };
    format!("{hour_words}{minutes}{suffix}")
}

fn digit_word(digit: char, zero: &'static str) -> &'static str {
    match digit.to_digit(10) {
        Some(0) => zero,
        Some(d) => ONES[d as usize],
        None => "",
    }
}

fn spell_digits(digits: &str, zero: &'static str) -> String {
    digits
        .chars()
        .filter(char::is_ascii_digit)
        .map(|d| digit_word(d, zero))
        .collect::<Vec<_>>()
        .join(" ")
}

fn letter_word(letter: char) -> &'static str {
    let upper = letter.to_ascii_uppercase();
    if upper.is_ascii_uppercase() {
        LETTERS[(upper as u8 - b'A') as usize]
    } else {
        ""
    }
}

fn spell_letters(letters: &str) -> String {
    letters
        .chars()
        .map(letter_word)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spell_alphanumeric(code: &str) -> String {
    code.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                digit_word(c, "zero")
            } else {
                letter_word(c)
            }
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals_follow_british_usage() {
        assert_eq!(number_words(0), "zero");
        assert_eq!(number_words(42), "forty-two");
        assert_eq!(number_words(105), "one hundred and five");
        assert_eq!(number_words(2024), "two thousand and twenty-four");
        assert_eq!(
            number_words(1_250_000),
            "one million two hundred and fifty thousand"
        );
        assert_eq!(ordinal_words(21), "twenty-first");
        assert_eq!(ordinal_words(12), "twelfth");
        assert_eq!(ordinal_words(30), "thirtieth");
        assert_eq!(ordinal_words(4), "fourth");
    }

    #[test]
    fn money_is_read_in_pounds_and_pence() {
        assert_eq!(
            normalize_for_speech("It costs £12.50."),
            "It costs twelve pounds fifty."
        );
        assert_eq!(normalize_for_speech("£1"), "one pound");
        assert_eq!(normalize_for_speech("£0.75"), "seventy-five pence");
        assert_eq!(
            normalize_for_speech("£1,200 a year"),
            "one thousand two hundred pounds a year"
        );
        assert_eq!(normalize_for_speech("only 50p"), "only fifty pence");
    }

    #[test]
    fn times_are_read_as_a_person_would() {
        assert_eq!(
            normalize_for_speech("Open 9:30am to 5pm."),
            "Open nine thirty ay em to five pee em."
        );
        assert_eq!(normalize_for_speech("at 10:05"), "at ten oh five");
        assert_eq!(normalize_for_speech("at 14:00"), "at two pee em");
        assert_eq!(normalize_for_speech("at 9:00."), "at nine o'clock.");
    }

    #[test]
    fn postcodes_and_references_are_spelled_out() {
        assert_eq!(
            normalize_for_speech("Send it to DE1 2FS please."),
            "Send it to dee ee one, two eff ess please."
        );
        assert_eq!(
            normalize_for_speech("Your reference is FD-123456."),
            "Your reference is eff dee, one two three four five six."
        );
        assert_eq!(
            normalize_for_speech("SW1A 1AA"),
            "ess double you one ay, one ay ay"
        );
    }

    #[test]
    fn phone_numbers_and_long_ids_are_read_digit_by_digit() {
        assert_eq!(
            normalize_for_speech("Call 01332 640000."),
            "Call oh one three three two, six four oh oh oh oh."
        );
        assert_eq!(
            normalize_for_speech("case 123456789"),
            "case one two three four five six seven eight nine"
        );
    }

    #[test]
    fn plain_numbers_percentages_and_decimals() {
        assert_eq!(
            normalize_for_speech("Bin day is the 3rd."),
            "Bin day is the third."
        );
        assert_eq!(normalize_for_speech("2.5 miles"), "two point five miles");
        assert_eq!(normalize_for_speech("up 4%"), "up four percent");
        assert_eq!(
            normalize_for_speech("Mr. Smith & co"),
            "Mister Smith and co"
        );
    }

    #[test]
    fn text_without_numbers_is_unchanged_apart_from_spacing() {
        let text = "Hello, you have reached the city council.  How can I help?";
        assert_eq!(
            normalize_for_speech(text),
            "Hello, you have reached the city council. How can I help?"
        );
    }
}
