//! Recognising request details (addresses, bin types, account references...)
//! in what the caller says, and corrections to them.

use std::sync::LazyLock;

use regex::Regex;

use super::knowledge::SlotKind;
use super::normalize::{tokens, words_to_digits};

const STREET_SUFFIXES: &str = "road|rd|street|st|avenue|lane|close|drive|way|crescent|grove|place|terrace|court|gardens|walk|row|hill|square|mews|park|rise|view|green|vale|parade|croft|gate|mount|fields";

static HOUSE_AND_STREET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"\b(?P<flat>(?:flat|apartment)\s+\d{{1,4}}[a-z]?\s+)?(?:number\s+|no\s+)?(?P<house>\d{{1,4}}[a-z]?)\s+(?:on\s+|in\s+|at\s+|of\s+)?(?P<street>(?:[a-z]+\s+){{1,3}}?(?:{STREET_SUFFIXES}))\b"
    ))
    .unwrap_or_else(unreachable_regex)
});

static STREET_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"\b(?:[a-z]+\s+){{1,2}}?(?:{STREET_SUFFIXES})\b"))
        .unwrap_or_else(unreachable_regex)
});

static POSTCODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([a-z]{1,2}\d{1,2}[a-z]?)\s*(\d[a-z]{2})\b").unwrap_or_else(unreachable_regex)
});

static CORRECTION_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:number\s+|no\s+)?(\d{1,4}[a-z]?)\s+not\s+(?:number\s+)?(\d{1,4}[a-z]?)\b")
        .unwrap_or_else(unreachable_regex)
});

static CORRECTION_NUMBER_REVERSED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bnot\s+(?:number\s+)?(\d{1,4}[a-z]?)\s+(?:its\s+|it\s+is\s+|but\s+)?(?:number\s+)?(\d{1,4}[a-z]?)\b")
        .unwrap_or_else(unreachable_regex)
});

/// The patterns above are constants checked by the unit tests; a failure here
/// is a programming error, never caller input.
fn unreachable_regex(e: regex::Error) -> Regex {
    panic!("built-in slot pattern does not compile: {e}")
}

/// Tries to read a value of `kind` from normalised text. `asked` says the
/// caller is answering a question about this slot, so free wording is accepted.
pub fn extract(kind: SlotKind, normalised: &str, asked: bool) -> Option<String> {
    match kind {
        SlotKind::Address => extract_address(normalised, asked),
        SlotKind::Location => extract_location(normalised, asked),
        SlotKind::BinType => extract_bin_type(normalised),
        SlotKind::AccountReference => extract_account_reference(normalised),
        SlotKind::Items => extract_items(normalised, asked),
        SlotKind::HighwayProblem => extract_highway_problem(normalised, asked),
    }
}

fn extract_address(normalised: &str, asked: bool) -> Option<String> {
    let text = words_to_digits(normalised);
    if let Some(postcode) = POSTCODE.captures(&text) {
        let outward = postcode.get(1).map_or("", |m| m.as_str());
        let inward = postcode.get(2).map_or("", |m| m.as_str());
        let house = house_and_street(&text)
            .map(|h| format!("{h}, "))
            .unwrap_or_default();
        return Some(format!(
            "{house}{} {}",
            outward.to_uppercase(),
            inward.to_uppercase()
        ));
    }
    if let Some(found) = house_and_street(&text) {
        return Some(found);
    }
    if asked {
        return free_answer(&text);
    }
    None
}

/// "number 12 on ashbourne road" → "12 Ashbourne Road".
fn house_and_street(text: &str) -> Option<String> {
    let captures = HOUSE_AND_STREET.captures(text)?;
    let flat = captures
        .name("flat")
        .map(|m| format!("{}, ", title_case(m.as_str().trim())))
        .unwrap_or_default();
    let house = captures.name("house")?.as_str().to_uppercase();
    let street = title_case(captures.name("street")?.as_str());
    Some(format!("{flat}{house} {street}"))
}

fn extract_location(normalised: &str, asked: bool) -> Option<String> {
    let text = words_to_digits(normalised);
    if let Some(found) = house_and_street(&text) {
        return Some(found);
    }
    let mut unnamed = text.clone();
    for found in STREET_ONLY.find_iter(&text) {
        if let Some(place) = named_street(&text, found.as_str()) {
            return Some(place);
        }
        unnamed = unnamed.replace(found.as_str(), " ");
    }
    // "it's just down my road" answers the question without naming a place:
    // ask again.
    let names_a_place = tokens(&unnamed).any(|word| !NOT_A_PLACE.contains(&word));
    if asked && names_a_place {
        return free_answer(&text);
    }
    None
}

/// Words that can come before a street name without being part of it
/// ("a pothole on ashbourne road", "the light outside ashbourne road").
const BEFORE_A_STREET: &[&str] = &[
    "on", "in", "at", "of", "along", "down", "up", "off", "by", "near", "outside", "opposite",
];

/// Words around "my road" that still name no place ("it's just down my road").
const NOT_A_PLACE: &[&str] = &[
    "its", "it", "is", "just", "right", "over", "there", "here", "round", "around", "up", "down",
    "along", "on", "in", "at", "by", "near", "outside", "the", "my", "our", "a", "bit", "little",
    "yeah", "yes", "well", "so", "um", "er", "erm", "uh", "street", "road", "from", "me", "mine",
];

/// "my road", "the road" or "our street" name no place: the caller is asked.
const NOT_A_STREET_NAME: &[&str] = &[
    "my", "the", "our", "a", "this", "that", "main", "their", "his", "her", "your", "same",
];

/// A street named in `matched` (a [`STREET_ONLY`] match inside `text`), in
/// title case, with "near " when the caller placed it near or outside.
fn named_street(text: &str, matched: &str) -> Option<String> {
    let mut words: Vec<&str> = matched.split(' ').collect();
    let mut near = false;
    while words.len() > 1 && BEFORE_A_STREET.contains(&words[0]) {
        near |= matches!(words[0], "near" | "outside" | "opposite" | "by");
        words.remove(0);
    }
    if words.len() < 2 || NOT_A_STREET_NAME.contains(&words[0]) {
        return None;
    }
    let street = words.join(" ");
    near |= ["outside", "near", "opposite"]
        .iter()
        .any(|word| text.contains(&format!("{word} {street}")));
    let prefix = if near { "near " } else { "" };
    Some(format!("{prefix}{}", title_case(&street)))
}

fn extract_bin_type(normalised: &str) -> Option<String> {
    let mut found = None;
    for token in tokens(normalised) {
        let kind = match token {
            "black" | "general" | "rubbish" | "household" | "grey" | "landfill" => "general waste",
            "blue" | "recycling" | "recycle" | "recyclable" => "recycling",
            "brown" | "garden" | "green" => "garden waste",
            "food" | "caddy" => "food waste",
            _ => continue,
        };
        // The first colour said wins: "the blue one not the black" → blue.
        if found.is_none() {
            found = Some(kind.to_string());
        }
    }
    found
}

fn extract_account_reference(normalised: &str) -> Option<String> {
    let text = words_to_digits(normalised);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    (6..=10).contains(&digits.len()).then_some(digits)
}

const BULKY_ITEMS: &[&str] = &[
    "fridge freezer",
    "sofa",
    "settee",
    "couch",
    "armchair",
    "chair",
    "chairs",
    "fridge",
    "freezer",
    "mattress",
    "mattresses",
    "wardrobe",
    "wardrobes",
    "bed",
    "beds",
    "table",
    "tables",
    "desk",
    "drawers",
    "cooker",
    "oven",
    "washing machine",
    "dishwasher",
    "tumble dryer",
    "microwave",
    "tv",
    "television",
    "carpet",
    "bike",
    "bicycle",
    "cabinet",
    "bookcase",
    "dresser",
    "sideboard",
    "bed frame",
    "piano",
    "treadmill",
];

fn extract_items(normalised: &str, asked: bool) -> Option<String> {
    let padded = format!(" {normalised} ");
    let mut items: Vec<&str> = Vec::new();
    for item in BULKY_ITEMS {
        if padded.contains(&format!(" {item} ")) && !items.iter().any(|i| i.contains(item)) {
            items.push(item);
        }
    }
    if !items.is_empty() {
        return Some(join_spoken(&items));
    }
    if asked {
        return free_answer(normalised);
    }
    None
}

fn extract_highway_problem(normalised: &str, asked: bool) -> Option<String> {
    let padded = format!(" {normalised} ");
    let problems = [
        (
            &[" pothole", " pot hole", " hole in the road"][..],
            "pothole",
        ),
        (
            &[
                " street light",
                " streetlight",
                " lamp post",
                " street lamp",
                " lamppost",
            ][..],
            "street light fault",
        ),
        (&[" pavement", " footpath", " kerb"][..], "damaged pavement"),
        (&[" drain", " gully", " flooding"][..], "blocked drain"),
        (&[" traffic light"][..], "traffic light fault"),
        (&[" sign"][..], "damaged road sign"),
    ];
    for (words, problem) in problems {
        if words.iter().any(|w| padded.contains(w)) {
            return Some(problem.to_string());
        }
    }
    if asked {
        return free_answer(normalised);
    }
    None
}

/// A free-text answer, kept only if it is more than a yes/no or a filler.
fn free_answer(text: &str) -> Option<String> {
    let words: Vec<&str> = tokens(text).collect();
    let meaningful = words
        .iter()
        .filter(|w| {
            !matches!(
                **w,
                "yes"
                    | "no"
                    | "yeah"
                    | "ok"
                    | "okay"
                    | "its"
                    | "it"
                    | "is"
                    | "the"
                    | "a"
                    | "i"
                    | "dont"
                    | "know"
            )
        })
        .count();
    if meaningful == 0 || words.len() > 25 {
        return None;
    }
    let cleaned = words
        .iter()
        .skip_while(|w| {
            matches!(
                **w,
                "its" | "it" | "is" | "at" | "on" | "yeah" | "yes" | "er" | "the" | "address"
            )
        })
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    (!cleaned.is_empty()).then(|| title_case(&cleaned))
}

/// Applies "number twelve not twenty" style corrections to an address value.
/// Returns the corrected value when the text carries such a correction.
pub fn correct_number(current: &str, normalised: &str) -> Option<String> {
    let text = words_to_digits(normalised);
    let (new, old) = if let Some(c) = CORRECTION_NUMBER.captures(&text) {
        (
            c.get(1)?.as_str().to_string(),
            c.get(2)?.as_str().to_string(),
        )
    } else {
        let c = CORRECTION_NUMBER_REVERSED.captures(&text)?;
        (
            c.get(2)?.as_str().to_string(),
            c.get(1)?.as_str().to_string(),
        )
    };
    let mut replaced = false;
    let corrected: Vec<String> = current
        .split(' ')
        .map(|word| {
            let bare = word.trim_end_matches(',');
            if !replaced && bare.eq_ignore_ascii_case(&old) {
                replaced = true;
                word.replacen(bare, &new.to_uppercase(), 1)
            } else {
                word.to_string()
            }
        })
        .collect();
    if replaced {
        return Some(corrected.join(" "));
    }
    // The caller corrected a number we never had: replace the leading number.
    let mut parts: Vec<String> = current.split(' ').map(str::to_string).collect();
    if let Some(first_number) = parts
        .iter_mut()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        *first_number = new.to_uppercase();
        return Some(parts.join(" "));
    }
    None
}

fn title_case(text: &str) -> String {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn join_spoken(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {}", rest.join(", "), last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_patterns_compile() {
        LazyLock::force(&HOUSE_AND_STREET);
        LazyLock::force(&STREET_ONLY);
        LazyLock::force(&POSTCODE);
        LazyLock::force(&CORRECTION_NUMBER);
        LazyLock::force(&CORRECTION_NUMBER_REVERSED);
    }

    #[test]
    fn reads_spoken_addresses_and_postcodes() {
        assert_eq!(
            extract(
                SlotKind::Address,
                "the bin men skipped number twelve on ashbourne road",
                false
            )
            .as_deref(),
            Some("12 Ashbourne Road")
        );
        assert_eq!(
            extract(SlotKind::Address, "its twenty two ashbourne road", true).as_deref(),
            Some("22 Ashbourne Road")
        );
        assert_eq!(
            extract(SlotKind::Address, "de1 2ab", true).as_deref(),
            Some("DE1 2AB")
        );
    }

    #[test]
    fn a_location_is_a_named_street_not_my_road() {
        let location = |text, asked| extract(SlotKind::Location, text, asked);
        assert_eq!(
            location("i want to report a pothole on my road", false),
            None
        );
        assert_eq!(location("its on my road", true), None);
        assert_eq!(location("just down the road", true), None);
        assert_eq!(
            location("theres a pothole on london road", false).as_deref(),
            Some("London Road")
        );
        assert_eq!(
            location("a pothole on my road ashbourne road", false).as_deref(),
            Some("Ashbourne Road")
        );
        assert_eq!(
            location("the street light outside ashbourne road", false).as_deref(),
            Some("near Ashbourne Road")
        );
        assert_eq!(
            location("by the school gates on ashbourne road", false).as_deref(),
            Some("Ashbourne Road")
        );
        assert_eq!(
            location("outside the post office on my road", true).as_deref(),
            Some("Outside The Post Office On My Road")
        );
    }

    #[test]
    fn reads_bin_types_and_account_references() {
        assert_eq!(
            extract(SlotKind::BinType, "the blue one", true).as_deref(),
            Some("recycling")
        );
        assert_eq!(
            extract(
                SlotKind::AccountReference,
                "its one two three four five six seven eight",
                true
            )
            .as_deref(),
            Some("12345678")
        );
        assert_eq!(extract(SlotKind::AccountReference, "no idea", true), None);
    }

    #[test]
    fn corrects_house_numbers() {
        assert_eq!(
            correct_number("20 Ashbourne Road", "no number twelve not twenty").as_deref(),
            Some("12 Ashbourne Road")
        );
        assert_eq!(
            correct_number("20 Ashbourne Road", "not twenty its twelve").as_deref(),
            Some("12 Ashbourne Road")
        );
    }

    #[test]
    fn lists_bulky_items() {
        assert_eq!(
            extract(SlotKind::Items, "an old sofa and a fridge freezer", false).as_deref(),
            Some("fridge freezer and sofa")
        );
    }
}
