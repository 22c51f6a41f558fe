//! Sizing Whisper's encoder window to the utterance, and the guards that
//! decide when a fitted window's answer cannot be trusted.
//!
//! Whisper's encoder sees 1500 positions of 20 ms (30 s). whisper.cpp's
//! `audio_ctx` shortens that: the encoder then costs roughly in proportion to
//! the window, so a 2 s question encodes ~8× faster. But the model was trained
//! on 30 s windows that end in padding, and a window that hugs the speech
//! makes it loop ("of clubs of clubs of clubs"), invent words past the end, or
//! garble numbers. Three things keep that in check:
//!
//! 1. a margin of padding after the speech and a minimum window, so the
//!    decoder still sees the speech end and some silence ([`WindowPolicy`]);
//! 2. a token budget proportional to the audio, so a loop is cut short
//!    instead of running to Whisper's 224-token limit;
//! 3. checks on the text ([`check_transcript`]); when one trips, the
//!    utterance is decoded again with the full 30 s window.

/// Encoder positions per second of audio (each covers 20 ms).
pub const POSITIONS_PER_SECOND: f32 = 50.0;

/// Whisper's full encoder window, in positions.
pub const FULL_WINDOW: u32 = 1500;

/// Audio samples (16 kHz) per encoder position.
const SAMPLES_PER_POSITION: usize = 320;

/// How the encoder window is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowPolicy {
    /// Always the full 30 s window: slowest, Whisper's trained behaviour.
    Full,
    /// A window fitted to the utterance, with guards and a full-window retry.
    Fitted {
        /// Positions (20 ms each) of padding after the last sample.
        margin: u32,
        /// The window never shrinks below this many positions.
        minimum: u32,
        /// The window is rounded up to a multiple of this, so that whisper.cpp
        /// builds few distinct graph shapes.
        granularity: u32,
    },
}

impl Default for WindowPolicy {
    fn default() -> Self {
        // Chosen by `asr_wer_window_policy_sweep` (tests/asr_wer.rs) on 8 kHz
        // µ-law speech with tiny.en: without guards, windows under ~7.7 s
        // (384 positions) made 1–3 s card phrases loop ("5 5 5 5 ...", WER
        // 60–290 %); at 384 with a 1.3 s margin the guards sent only 1–3 of 10
        // clips back to the full window and WER matched it within one word.
        //
        // The minimum is now 256 (5.1 s), with a retry at the old 384 before
        // the full window ([`WindowPolicy::retry_audio_ctx`]): a 1–3 s
        // question encodes a third faster, the same sweep gave the same WER
        // (6.5 %), and the one clip whose 256 window tripped a guard that 384
        // did not is caught by the 384 retry instead of a 30 s pass.
        WindowPolicy::Fitted {
            margin: 64,
            minimum: 256,
            granularity: 64,
        }
    }
}

/// The minimum window of the retry after a fitted window's text is rejected,
/// before the full window: the smallest window that passed the guards on
/// every clip where a smaller one tripped them but the full one was not
/// needed (`asr_wer_window_policy_sweep`).
pub const RETRY_MINIMUM: u32 = 384;

impl WindowPolicy {
    /// The `audio_ctx` to pass to whisper.cpp for `samples` of 16 kHz audio;
    /// `None` means the full window.
    pub fn audio_ctx(&self, samples: usize) -> Option<u32> {
        match *self {
            WindowPolicy::Full => None,
            WindowPolicy::Fitted {
                margin,
                minimum,
                granularity,
            } => {
                let speech =
                    u32::try_from(samples.div_ceil(SAMPLES_PER_POSITION)).unwrap_or(u32::MAX);
                let wanted = speech.saturating_add(margin).max(minimum);
                let granularity = granularity.max(1);
                let rounded = wanted.div_ceil(granularity).saturating_mul(granularity);
                if rounded >= FULL_WINDOW {
                    None
                } else {
                    Some(rounded)
                }
            }
        }
    }

    /// The window to try after the guards rejected the text of a
    /// `tried`-position window: a fitted one of at least [`RETRY_MINIMUM`]
    /// when that is larger (a third of the full window's cost on a short
    /// question), `None` for the full window.
    pub fn retry_audio_ctx(&self, samples: usize, tried: u32) -> Option<u32> {
        match *self {
            WindowPolicy::Full => None,
            WindowPolicy::Fitted {
                margin,
                minimum,
                granularity,
            } => {
                let retry = WindowPolicy::Fitted {
                    margin,
                    minimum: minimum.max(RETRY_MINIMUM),
                    granularity,
                }
                .audio_ctx(samples)?;
                (retry > tried).then_some(retry)
            }
        }
    }
}

/// Which encoder window produced a transcript, and why it fell back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowUsed {
    /// Encoder positions used (1500 = full window).
    pub audio_ctx: u32,
    /// Set when a fitted window was tried first and its text was rejected.
    pub fallback: Option<GuardTrip>,
}

/// Why a fitted window's transcript was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardTrip {
    /// The same word or phrase repeated back to back: the decoder is looping.
    Repetition,
    /// More words per second than anyone speaks, or the token budget ran out.
    TooManyWords,
    /// Nothing (or only a non-speech annotation) although the audio is loud
    /// enough to be speech.
    NoSpeechInVoicedAudio,
    /// The decoder was unsure of most of what it wrote.
    LowConfidence,
    /// The text stops mid-sentence (on a comma): tiny.en does this when a
    /// fitted window cut its attention short, and the words before it were
    /// garbled in every case measured.
    Unfinished,
}

impl GuardTrip {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardTrip::Repetition => "repetition",
            GuardTrip::TooManyWords => "too_many_words",
            GuardTrip::NoSpeechInVoicedAudio => "no_speech_in_voiced_audio",
            GuardTrip::LowConfidence => "low_confidence",
            GuardTrip::Unfinished => "unfinished",
        }
    }
}

/// Limits the guards apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardLimits {
    /// Fast speech is ~4 words/s; allow headroom before calling it garbled.
    pub max_words_per_second: f32,
    /// Allowance on top of the rate, so a 0.5 s "yes please" is not flagged.
    pub extra_words: f32,
    /// A word repeated this many times in a row is a loop ("one one one" is
    /// a real digit string, so 3 must pass).
    pub max_word_repeats: usize,
    /// A two-word phrase repeated this many times in a row is a loop
    /// ("thank you thank you" must pass).
    pub max_pair_repeats: usize,
    /// A phrase of 3–6 words repeated this many times in a row is a loop:
    /// people do not say "seven of clubs seven of clubs", looping decoders do.
    pub max_phrase_repeats: usize,
    /// Audio whose active level is above this (dBFS) is expected to contain
    /// words.
    pub voiced_level_dbfs: f32,
    /// Mean log-probability of the text tokens below which the text is
    /// treated as a guess.
    pub min_mean_logprob: f32,
    /// Reject text that ends on a comma.
    pub reject_unfinished: bool,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_words_per_second: 5.0,
            extra_words: 3.0,
            max_word_repeats: 4,
            max_pair_repeats: 3,
            max_phrase_repeats: 2,
            voiced_level_dbfs: -40.0,
            min_mean_logprob: -1.2,
            reject_unfinished: true,
        }
    }
}

impl GuardLimits {
    /// Accepts every fitted-window transcript (for measuring what the guards
    /// buy).
    pub fn disabled() -> GuardLimits {
        GuardLimits {
            max_words_per_second: f32::INFINITY,
            extra_words: f32::INFINITY,
            max_word_repeats: usize::MAX,
            max_pair_repeats: usize::MAX,
            max_phrase_repeats: usize::MAX,
            voiced_level_dbfs: f32::INFINITY,
            min_mean_logprob: f32::NEG_INFINITY,
            reject_unfinished: false,
        }
    }
}

/// What the decoder produced, as the guards see it.
#[derive(Debug, Clone, Copy)]
pub struct DecodeSummary<'a> {
    pub text: &'a str,
    pub audio_seconds: f32,
    pub text_tokens: usize,
    pub token_budget: usize,
    pub mean_logprob: f32,
    pub active_level_dbfs: f32,
}

/// The first guard that rejects `decoded`, if any.
pub fn check_transcript(decoded: &DecodeSummary<'_>, limits: &GuardLimits) -> Option<GuardTrip> {
    let words = words_of(decoded.text);
    if words.is_empty() || is_non_speech_annotation(decoded.text) {
        return (decoded.active_level_dbfs > limits.voiced_level_dbfs)
            .then_some(GuardTrip::NoSpeechInVoicedAudio);
    }
    if longest_repeat_run(&words, 1) >= limits.max_word_repeats
        || longest_repeat_run(&words, 2) >= limits.max_pair_repeats
        || (3..=6).any(|n| longest_repeat_run(&words, n) >= limits.max_phrase_repeats)
        // A longer sentence said again whole ("I was wondering about my bin
        // collection day, please. I was wondering about my bin collection
        // day, please."): tiny.en wrote it twice for a fitted window padded
        // with ~100 ms more silence, and no phrase of 3-6 words repeats.
        || (limits.max_phrase_repeats != usize::MAX && restarted_sentence(decoded.text).is_some())
    {
        return Some(GuardTrip::Repetition);
    }
    let plausible_words = limits.max_words_per_second * decoded.audio_seconds + limits.extra_words;
    if words.len() as f32 > plausible_words
        || (decoded.text_tokens >= decoded.token_budget && limits.max_words_per_second.is_finite())
    {
        return Some(GuardTrip::TooManyWords);
    }
    if decoded.mean_logprob < limits.min_mean_logprob {
        return Some(GuardTrip::LowConfidence);
    }
    if limits.reject_unfinished && decoded.text.trim_end().ends_with(',') {
        return Some(GuardTrip::Unfinished);
    }
    None
}

/// The complete first sentence of a decode that, having written it, started
/// the same sentence again ("I want to report a pothole on my road. I want
/// to report a po"): tiny.en does this in the silence that pads a fitted
/// window, and runs on until the token budget stops it. The first sentence
/// is the caller's words and the rest is the loop, so keeping the sentence
/// saves a second, larger decode. `None` unless everything after the first
/// sentence restates it from its start, at least [`MIN_RESTART_WORDS`] words
/// (the last may be cut mid-word); anything else is left to the guards.
pub fn restarted_sentence(text: &str) -> Option<&str> {
    // The first boundary whose remainder is a pure restatement wins. A
    // comma counts too ("How do I pay my council tax, how do I pay my
    // council tax, how do"): the decoder wrote the whole question and began
    // it again, so the question is complete and is kept without its comma.
    text.match_indices(['.', '?', '!', ','])
        .map(|(at, mark)| (at + mark.len(), mark == ","))
        .find_map(|(end, comma)| {
            let (head, rest) = text.split_at(end);
            restates(head, rest).then(|| {
                let head = head.trim();
                if comma {
                    head.trim_end_matches(',').trim_end()
                } else {
                    head
                }
            })
        })
}

/// Whether `rest` is `head` said again from its start, over and over, at
/// least [`MIN_RESTART_WORDS`] words of each (the last word may be cut).
fn restates(head: &str, rest: &str) -> bool {
    let head_words = words_of(head);
    let rest_words = words_of(rest);
    if head_words.len() < MIN_RESTART_WORDS || rest_words.len() < MIN_RESTART_WORDS {
        return false;
    }
    // A head that itself repeats a shorter unit ("5, 5, 5" before "5, 5")
    // is a loop of that unit, not a sentence said again: the guards judge it.
    let repeats_itself = (1..head_words.len()).any(|period| {
        (period..head_words.len())
            .all(|i| head_words[i].eq_ignore_ascii_case(head_words[i - period]))
    });
    if repeats_itself {
        return false;
    }
    let last = rest_words.len() - 1;
    rest_words.iter().enumerate().all(|(i, word)| {
        let expected = head_words[i % head_words.len()];
        let compared = if i == last {
            // The token budget may stop the loop mid-word.
            expected.get(..word.len()).unwrap_or(expected)
        } else {
            expected
        };
        compared.eq_ignore_ascii_case(word)
    })
}

/// Whether an unprompted decode of the same window shows that a prompted
/// one which stopped on a comma had in fact heard the whole utterance: it
/// ends a sentence on as many words. Fewer words (it stopped sooner), more
/// (the comma hid the rest) or a comma of its own say nothing of the kind.
pub fn unprompted_ends_it_there(prompted: &str, unprompted: &str) -> bool {
    unprompted.trim_end().ends_with(['.', '?', '!'])
        && words_of(unprompted).len() == words_of(prompted).len()
}

/// The words of `text` without surrounding punctuation, as the guards count
/// and compare them.
fn words_of(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Fewest words a restart must repeat before it is taken for a loop: "Yes.
/// Yes, please." is a person, "I want to report. I want to" is a decoder.
pub const MIN_RESTART_WORDS: usize = 3;

/// Whisper writes sounds it does not take for words as `[BLANK_AUDIO]`,
/// `(music)`, `*coughs*` or `♪`.
pub fn is_non_speech_annotation(text: &str) -> bool {
    let mut bracket_depth = 0u32;
    let mut between_stars = false;
    for c in text.chars() {
        match c {
            '[' | '(' => bracket_depth += 1,
            ']' | ')' => bracket_depth = bracket_depth.saturating_sub(1),
            '*' => between_stars = !between_stars,
            c if c.is_alphanumeric() && bracket_depth == 0 && !between_stars => return false,
            _ => {}
        }
    }
    true
}

/// Longest run of back-to-back repeats of any `n`-word phrase (compared
/// case-insensitively); 1 when nothing repeats.
pub fn longest_repeat_run(words: &[&str], n: usize) -> usize {
    if n == 0 || words.len() < n {
        return usize::from(!words.is_empty());
    }
    let same = |a: usize, b: usize| (0..n).all(|k| words[a + k].eq_ignore_ascii_case(words[b + k]));
    let mut longest = 1;
    for start in 0..words.len() - n + 1 {
        let mut run = 1;
        let mut next = start + n;
        while next + n <= words.len() && same(start, next) {
            run += 1;
            next += n;
        }
        longest = longest.max(run);
    }
    longest
}

/// Decoder token budget for `audio_seconds` of speech: generous for real
/// speech (~3 tokens/s), tight enough that a loop stops early.
pub fn token_budget(audio_seconds: f32, tokens_per_second: f32, minimum: usize) -> usize {
    let scaled = (audio_seconds.max(0.0) * tokens_per_second).ceil() as usize;
    // Whisper's decoder cannot emit more than half its 448-token context.
    scaled.max(minimum).min(220)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(margin: u32, minimum: u32, granularity: u32) -> WindowPolicy {
        WindowPolicy::Fitted {
            margin,
            minimum,
            granularity,
        }
    }

    #[test]
    fn fitted_window_covers_the_audio_plus_margin_rounded_up() {
        let policy = fitted(64, 0, 64);
        // 2.5 s = 125 positions + 64 = 189 → 192.
        assert_eq!(policy.audio_ctx(40_000), Some(192));
        // Exactly one position of audio still gets the margin.
        assert_eq!(policy.audio_ctx(1), Some(128));
    }

    #[test]
    fn fitted_window_respects_its_minimum() {
        assert_eq!(fitted(64, 384, 64).audio_ctx(16_000), Some(384));
    }

    #[test]
    fn a_rejected_small_window_is_retried_at_the_retry_minimum_then_full() {
        let policy = WindowPolicy::default();
        // A 2 s question: the shipped policy encodes 256 positions first.
        assert_eq!(policy.audio_ctx(32_000), Some(256));
        assert_eq!(
            policy.retry_audio_ctx(32_000, 256),
            Some(RETRY_MINIMUM),
            "a rejected 256 window is retried at 384, not 1500"
        );
        // The retry itself rejected: nothing fitted is left but the full window.
        assert_eq!(policy.retry_audio_ctx(32_000, RETRY_MINIMUM), None);
        // Speech long enough that the first window was already past the retry
        // minimum goes straight to the full window.
        let tried = policy.audio_ctx(8 * 16_000).expect("fitted");
        assert!(tried > RETRY_MINIMUM);
        assert_eq!(policy.retry_audio_ctx(8 * 16_000, tried), None);
        assert_eq!(WindowPolicy::Full.retry_audio_ctx(32_000, 256), None);
    }

    #[test]
    fn long_audio_uses_the_full_window() {
        assert_eq!(fitted(64, 256, 64).audio_ctx(29 * 16_000), None);
        assert_eq!(fitted(64, 256, 64).audio_ctx(usize::MAX), None);
        assert_eq!(WindowPolicy::Full.audio_ctx(16_000), None);
    }

    #[test]
    fn zero_granularity_does_not_divide_by_zero() {
        assert_eq!(fitted(10, 0, 0).audio_ctx(3200), Some(20));
    }

    fn summary(text: &str, seconds: f32) -> DecodeSummary<'_> {
        DecodeSummary {
            text,
            audio_seconds: seconds,
            text_tokens: text.split_whitespace().count(),
            token_budget: 100,
            mean_logprob: -0.2,
            active_level_dbfs: -20.0,
        }
    }

    #[test]
    fn ordinary_speech_passes_every_guard() {
        let limits = GuardLimits::default();
        for (text, seconds) in [
            ("I need to pay my council tax.", 2.0),
            ("One one one.", 1.5),
            ("Five five.", 1.0),
            ("Thank you, thank you.", 1.0),
            ("Yes.", 0.4),
            ("Eight of spades, four of clubs, seven of hearts.", 3.5),
        ] {
            assert_eq!(
                check_transcript(&summary(text, seconds), &limits),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn looping_output_is_caught() {
        let limits = GuardLimits::default();
        let looped = summary("Ten of clubs of clubs of clubs of clubs.", 6.0);
        assert_eq!(
            check_transcript(&looped, &limits),
            Some(GuardTrip::Repetition)
        );
        let sentence_twice = summary(
            "I was wondering about my bin collection day, please. \
             I was wondering about my bin collection day, please.",
            4.3,
        );
        assert_eq!(
            check_transcript(&sentence_twice, &limits),
            Some(GuardTrip::Repetition)
        );
        assert_eq!(
            restarted_sentence(sentence_twice.text),
            Some("I was wondering about my bin collection day, please.")
        );
        let twice = summary("Seven of clubs. Seven of clubs.", 6.0);
        assert_eq!(
            check_transcript(&twice, &limits),
            Some(GuardTrip::Repetition)
        );
        let stutter = summary("the the the the bin", 6.0);
        assert_eq!(
            check_transcript(&stutter, &limits),
            Some(GuardTrip::Repetition)
        );
    }

    #[test]
    fn too_many_words_for_the_audio_is_caught() {
        let text = "please can you tell me when my bin collection day is this week";
        assert_eq!(
            check_transcript(&summary(text, 1.0), &GuardLimits::default()),
            Some(GuardTrip::TooManyWords)
        );
        let mut exhausted = summary("bin collection", 1.0);
        exhausted.text_tokens = exhausted.token_budget;
        assert_eq!(
            check_transcript(&exhausted, &GuardLimits::default()),
            Some(GuardTrip::TooManyWords)
        );
    }

    #[test]
    fn silence_text_is_only_suspicious_when_the_audio_is_loud() {
        let limits = GuardLimits::default();
        let mut blank = summary("[BLANK_AUDIO]", 2.0);
        assert_eq!(
            check_transcript(&blank, &limits),
            Some(GuardTrip::NoSpeechInVoicedAudio)
        );
        blank.active_level_dbfs = -70.0;
        assert_eq!(check_transcript(&blank, &limits), None);
        assert_eq!(
            check_transcript(&summary("", 2.0), &limits),
            Some(GuardTrip::NoSpeechInVoicedAudio)
        );
    }

    #[test]
    fn text_stopping_on_a_comma_is_caught() {
        let cut = summary(
            "Unless to be rather cold-hearted and rather selfish, is to be able to suppose,",
            5.3,
        );
        assert_eq!(
            check_transcript(&cut, &GuardLimits::default()),
            Some(GuardTrip::Unfinished)
        );
    }

    #[test]
    fn low_confidence_is_caught() {
        let mut unsure = summary("council tax", 1.0);
        unsure.mean_logprob = -3.0;
        assert_eq!(
            check_transcript(&unsure, &GuardLimits::default()),
            Some(GuardTrip::LowConfidence)
        );
    }

    #[test]
    fn non_speech_annotations_are_recognised() {
        for text in [
            "[BLANK_AUDIO]",
            "(music)",
            "♪",
            "*coughs*",
            " [ Silence ] ",
            "",
        ] {
            assert!(is_non_speech_annotation(text), "{text:?}");
        }
        for text in ["Council tax (band D).", "Hello", "[noise] my bin"] {
            assert!(!is_non_speech_annotation(text), "{text:?}");
        }
    }

    #[test]
    fn repeat_runs_are_counted() {
        let words: Vec<&str> = "a b a b a b c".split(' ').collect();
        assert_eq!(longest_repeat_run(&words, 2), 3);
        assert_eq!(longest_repeat_run(&words, 1), 1);
        assert_eq!(longest_repeat_run(&[], 1), 0);
        assert_eq!(longest_repeat_run(&["x"], 3), 1);
    }

    #[test]
    fn an_unprompted_decode_confirms_a_comma_only_when_it_ends_there() {
        assert!(unprompted_ends_it_there(
            "How do I pay my council tax,",
            "How do I pay my council tax."
        ));
        assert!(unprompted_ends_it_there(
            "When is my bin day,",
            "When is my been day?"
        ));
        // It stopped sooner: no evidence.
        assert!(!unprompted_ends_it_there(
            "Unless to be rather cold-hearted and rather selfish, is to be old as opposed,",
            "Unless to be rather cold-hearted and rather selfish, is"
        ));
        // It heard more: the comma hid words.
        assert!(!unprompted_ends_it_there(
            "I want to report a pothole,",
            "I want to report a pothole on Elm Road."
        ));
        // It stopped on a comma too, or on nothing.
        assert!(!unprompted_ends_it_there(
            "I want to report a pothole,",
            "I want to report a pothole,"
        ));
        assert!(!unprompted_ends_it_there("I want to report a pothole,", ""));
    }

    #[test]
    fn token_budget_scales_and_is_capped() {
        assert_eq!(token_budget(2.0, 8.0, 16), 16);
        assert_eq!(token_budget(10.0, 8.0, 16), 80);
        assert_eq!(token_budget(1000.0, 8.0, 16), 220);
        assert_eq!(token_budget(f32::NAN, 8.0, 16), 16);
    }

    #[test]
    fn a_decode_that_restarts_its_sentence_keeps_the_sentence() {
        assert_eq!(
            restarted_sentence("I want to report a pahol on my road. I want to report a pah"),
            Some("I want to report a pahol on my road.")
        );
        assert_eq!(
            restarted_sentence(" When is my bin day? When is my bin day? When is"),
            Some("When is my bin day?")
        );
        // Looping after a comma: the question is complete; the comma goes.
        assert_eq!(
            restarted_sentence("How do I pay my council tax, how do I pay my council tax, how do"),
            Some("How do I pay my council tax")
        );
    }

    #[test]
    fn different_or_short_second_sentences_are_not_loops() {
        // Two real sentences.
        assert_eq!(
            restarted_sentence("My bin was missed. It was the blue one."),
            None
        );
        // A person repeating a short answer.
        assert_eq!(restarted_sentence("Yes. Yes please."), None);
        assert_eq!(restarted_sentence("No. No."), None);
        // A restart that then says something else is not a pure loop.
        assert_eq!(
            restarted_sentence("I want to report a pothole. I want to report a street light too."),
            None
        );
        assert_eq!(restarted_sentence("no sentence end at all"), None);
        // A caller correcting themselves after a comma is not a loop.
        assert_eq!(
            restarted_sentence("Can I pay my, can I pay my council tax by card?"),
            None
        );
        assert_eq!(restarted_sentence("Yes, yes, yes"), None);
        // A word looping is not a sentence restarting, at any boundary.
        assert_eq!(restarted_sentence("5, 5, 5, 5, 5, 5, 5"), None);
        assert_eq!(
            restarted_sentence("Help me, help me, help me, help me"),
            None
        );
        assert_eq!(restarted_sentence(""), None);
    }
}
