//! Turns what speech recognition hands over into one canonical form.
//!
//! Every later stage (escalation rules, the classifier, slot extraction) works
//! on the same canonical text, so a phrase written once in a configuration file
//! matches however the recogniser punctuated or capitalised it.

/// Longest input considered. A caller cannot say more than this in one turn;
/// anything longer is a fault upstream and must not cost unbounded work.
pub const MAX_INPUT_CHARS: usize = 2_000;

/// Most tokens kept after normalisation, for the same reason.
pub const MAX_TOKENS: usize = 200;

/// Hesitation noises recognisers transcribe; they carry no meaning.
const FILLERS: &[&str] = &[
    "um", "umm", "ummm", "erm", "errm", "er", "err", "uh", "uhh", "uhm", "hmm", "hm", "mm", "mmm",
    "ah", "ahh", "eh",
];

/// One spelling for words written several ways: "cannot", dialect
/// spellings, and words with the final g dropped, written the way a
/// caller says them (by a recogniser, or typed in a web chat): each is read
/// as the standard word so that a rule written once matches. Only spellings
/// that are not also other English words are listed ("ken", "ma", "wean"
/// are left alone). Hand-written: no maintained crate maps British dialect
/// spellings, and the list is short and owned by the council's team.
const DIALECT: &[(&str, &str)] = &[
    ("cannot", "cant"),
    // Scots and Northern English
    ("ahve", "ive"),
    ("ahm", "im"),
    ("ahll", "ill"),
    ("ahd", "id"),
    ("nae", "no"),
    ("naebody", "nobody"),
    ("naewhere", "nowhere"),
    ("intae", "into"),
    ("ontae", "onto"),
    ("aboot", "about"),
    ("oot", "out"),
    ("jist", "just"),
    ("hoose", "house"),
    ("cannae", "cant"),
    ("canna", "cant"),
    ("dinnae", "dont"),
    ("didnae", "didnt"),
    ("disnae", "doesnt"),
    ("wisnae", "wasnt"),
    ("isnae", "isnt"),
    ("couldnae", "couldnt"),
    ("wouldnae", "wouldnt"),
    ("widnae", "wouldnt"),
    ("willnae", "wont"),
    ("havenae", "havent"),
    ("hasnae", "hasnt"),
    ("gonnae", "gonna"),
    ("masel", "myself"),
    ("mysel", "myself"),
    ("hersel", "herself"),
    ("himsel", "himself"),
    ("yersel", "yourself"),
    ("heid", "head"),
    ("doon", "down"),
    ("roond", "round"),
    ("frae", "from"),
    ("tellt", "told"),
    ("summat", "something"),
    ("nowt", "nothing"),
    ("owt", "anything"),
    // Dropped g
    ("thinkin", "thinking"),
    ("walkin", "walking"),
    ("goin", "going"),
    ("doin", "doing"),
    ("sayin", "saying"),
    ("comin", "coming"),
    ("tryin", "trying"),
    ("feelin", "feeling"),
    ("gettin", "getting"),
    ("takin", "taking"),
    ("livin", "living"),
    ("sleepin", "sleeping"),
    ("hurtin", "hurting"),
    ("cryin", "crying"),
    ("drinkin", "drinking"),
    ("lookin", "looking"),
    ("nothin", "nothing"),
    ("somethin", "something"),
    ("anythin", "anything"),
    ("everythin", "everything"),
    ("talkin", "talking"),
    ("tellin", "telling"),
    ("killin", "killing"),
    ("dyin", "dying"),
    ("jumpin", "jumping"),
    ("leavin", "leaving"),
    ("keepin", "keeping"),
    ("beatin", "beating"),
    ("hittin", "hitting"),
    ("shoutin", "shouting"),
    ("screamin", "screaming"),
    ("movin", "moving"),
    ("stayin", "staying"),
    ("waitin", "waiting"),
    ("havin", "having"),
    ("makin", "making"),
    ("givin", "giving"),
    ("eatin", "eating"),
    ("payin", "paying"),
    ("workin", "working"),
    ("burnin", "burning"),
    ("smellin", "smelling"),
    ("leakin", "leaking"),
    ("breathin", "breathing"),
    ("bleedin", "bleeding"),
    ("cuttin", "cutting"),
    ("watchin", "watching"),
    ("checkin", "checking"),
    ("followin", "following"),
    ("threatenin", "threatening"),
    ("stealin", "stealing"),
];

/// Canonical form: lower case, letters and digits only, apostrophes removed
/// ("don't" → "dont"), everything else a single space, fillers dropped,
/// "cannot"/"can not" → "cant", dialect spellings read as standard words
/// ([`DIALECT`]). Bounded in time and size.
pub fn normalise(raw: &str) -> String {
    let mut cleaned = String::with_capacity(raw.len().min(MAX_INPUT_CHARS));
    for ch in raw.chars().take(MAX_INPUT_CHARS) {
        match ch {
            // Apostrophes join contractions so "can't", "can’t" and "cant" agree.
            '\'' | '’' | '‘' | '`' | 'ʼ' => {}
            '&' => cleaned.push_str(" and "),
            c if c.is_alphanumeric() => cleaned.extend(c.to_lowercase()),
            _ => cleaned.push(' '),
        }
    }

    let mut out = String::with_capacity(cleaned.len());
    let mut previous_was_can = false;
    for (kept, token) in cleaned
        .split_whitespace()
        .filter(|t| !FILLERS.contains(t))
        .enumerate()
    {
        if kept >= MAX_TOKENS {
            break;
        }
        if previous_was_can && token == "not" {
            // "can not" → "cant": rewrite the "can" already written.
            out.push('t');
            previous_was_can = false;
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(
            DIALECT
                .iter()
                .find(|(spelling, _)| *spelling == token)
                .map_or(token, |(_, standard)| *standard),
        );
        previous_was_can = token == "can";
    }
    out
}

/// Word tokens of already-normalised text.
pub fn tokens(normalised: &str) -> impl Iterator<Item = &str> {
    normalised.split(' ').filter(|t| !t.is_empty())
}

/// Spoken numbers to digits, for reading addresses and account references:
/// "number twelve" → "number 12", "one two three" → "1 2 3",
/// "twenty one" → "21", "double four" → "4 4", "oh" inside a digit run → "0".
pub fn words_to_digits(normalised: &str) -> String {
    let words: Vec<&str> = tokens(normalised).collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        if (word == "double" || word == "treble" || word == "triple")
            && let Some(d) = words.get(i + 1).and_then(|w| unit_value(w))
        {
            let times = if word == "double" { 2 } else { 3 };
            for _ in 0..times {
                out.push(d.to_string());
            }
            i += 2;
            continue;
        }
        if let Some(tens) = tens_value(word) {
            // "twenty one" is 21, "twenty" alone is 20.
            if let Some(unit) = words
                .get(i + 1)
                .and_then(|w| unit_value(w))
                .filter(|u| *u > 0)
            {
                out.push((tens + unit).to_string());
                i += 2;
            } else {
                out.push(tens.to_string());
                i += 1;
            }
            continue;
        }
        if let Some(value) = unit_value(word).or_else(|| teen_value(word)) {
            // "one hundred and five" → 105
            if words.get(i + 1) == Some(&"hundred") {
                let mut total = value * 100;
                let mut next = i + 2;
                if words.get(next) == Some(&"and") {
                    next += 1;
                }
                if let Some(t) = words.get(next).and_then(|w| tens_value(w)) {
                    total += t;
                    next += 1;
                    if let Some(u) = words.get(next).and_then(|w| unit_value(w)) {
                        total += u;
                        next += 1;
                    }
                } else if let Some(u) = words
                    .get(next)
                    .and_then(|w| unit_value(w).or_else(|| teen_value(w)))
                {
                    total += u;
                    next += 1;
                }
                out.push(total.to_string());
                i = next;
                continue;
            }
            out.push(value.to_string());
            i += 1;
            continue;
        }
        // "oh" is read as zero only between digits ("four oh seven").
        if word == "oh" || word == "o" {
            let prev_digit = out
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
            let next_digit = words
                .get(i + 1)
                .is_some_and(|w| unit_value(w).is_some() || w.chars().all(|c| c.is_ascii_digit()));
            if prev_digit && next_digit {
                out.push("0".to_string());
                i += 1;
                continue;
            }
        }
        out.push(word.to_string());
        i += 1;
    }
    out.join(" ")
}

fn unit_value(word: &str) -> Option<u32> {
    Some(match word {
        "zero" | "nought" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        _ => return None,
    })
}

fn teen_value(word: &str) -> Option<u32> {
    Some(match word {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens_value(word: &str) -> Option<u32> {
    Some(match word {
        "twenty" => 20,
        "thirty" => 30,
        "forty" | "fourty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_punctuation_case_fillers_and_contractions() {
        assert_eq!(
            normalise("Um, I CAN'T find the   bin… erm!"),
            "i cant find the bin"
        );
        assert_eq!(normalise("I cannot go on"), "i cant go on");
        assert_eq!(normalise("I can not go on"), "i cant go on");
    }

    #[test]
    fn dialect_spellings_read_as_standard_words() {
        assert_eq!(
            normalise("Ah've took the whole box, cannae dae this nae mair"),
            "ive took the whole box cant dae this no mair"
        );
        assert_eq!(
            normalise("I keep thinkin aboot just walkin intae the river"),
            "i keep thinking about just walking into the river"
        );
        // Words that are also English words are left alone.
        assert_eq!(normalise("Me ma said ken"), "me ma said ken");
    }

    #[test]
    fn control_characters_and_emoji_become_spaces() {
        assert_eq!(normalise("bins\u{0}\u{7}😡 missed\t\r\n"), "bins missed");
        assert_eq!(normalise(""), "");
        assert_eq!(normalise("🙂🙂"), "");
    }

    #[test]
    fn long_input_is_bounded() {
        let long = "word ".repeat(10_000);
        let n = normalise(&long);
        assert!(tokens(&n).count() <= MAX_TOKENS);
    }

    #[test]
    fn spoken_numbers_become_digits() {
        assert_eq!(words_to_digits("number twelve"), "number 12");
        assert_eq!(
            words_to_digits("twenty one ashbourne road"),
            "21 ashbourne road"
        );
        assert_eq!(
            words_to_digits("one two double four oh seven"),
            "1 2 4 4 0 7"
        );
        assert_eq!(words_to_digits("one hundred and five"), "105");
    }
}
