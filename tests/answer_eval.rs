//! Scores the engine against labelled utterances and asserts the product
//! targets: escalation recall >= 99 %, false escalation <= 3 %, intent
//! accuracy >= 92 %.

use std::path::{Path, PathBuf};

use frontdoor::answer::{AnswerEngine, cli};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn engine() -> AnswerEngine {
    AnswerEngine::load(
        &root().join("knowledge"),
        &root().join("governance/safeguarding.toml"),
    )
    .expect("the shipped knowledge and governance files load")
}

fn assert_targets(file: &Path) {
    let report = cli::evaluate(&engine(), file).expect("evaluation runs");
    println!("{}\n{report}", file.display());
    assert!(report.total > 0, "no utterances in {}", file.display());
    assert!(
        report.escalation_recall() >= 0.99,
        "escalation recall {:.3} below 0.99\n{report}",
        report.escalation_recall()
    );
    assert!(
        report.false_escalation_rate() <= 0.03,
        "false escalation rate {:.3} above 0.03\n{report}",
        report.false_escalation_rate()
    );
    assert!(
        report.intent_accuracy() >= 0.92,
        "intent accuracy {:.3} below 0.92\n{report}",
        report.intent_accuracy()
    );
}

#[test]
fn shared_sample_meets_targets() {
    let sample = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/eval/utterances.jsonl"
    ));
    if !sample.exists() {
        eprintln!("skipping: {} not present", sample.display());
        return;
    }
    assert_targets(sample);
}

#[test]
fn own_heldout_set_meets_targets() {
    assert_targets(&root().join("tests/data/answer_heldout.jsonl"));
}

#[test]
fn own_fresh_set_meets_targets() {
    assert_targets(&root().join("tests/data/answer_fresh.jsonl"));
}

#[test]
fn every_escalation_category_is_detected_with_a_reason() {
    let engine = engine();
    for (text, expected) in [
        ("honestly i feel like nobody would miss me", "distress"),
        ("he hits me when he's been drinking", "safeguarding"),
        (
            "there's smoke pouring out of the flat upstairs",
            "emergency",
        ),
        ("can i talk to a real person", "human_request"),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate.as_str(), expected, "{text}: {}", c.reason);
        assert!(!c.reason.is_empty());
    }
}

#[test]
fn figurative_wording_is_not_escalated() {
    let engine = engine();
    for text in [
        "this is killing me trying to find the payment page",
        "i'm dying to know when the pool reopens",
        "i'm sick to death of my bins being missed",
        "just killing time while i wait for the bin men",
        "there's no point ringing you lot is there",
        "my smoke alarm keeps beeping",
        "the ceiling collapsed after the leak",
        "my dad died and i need to register the death",
    ] {
        let c = engine.classify(text);
        assert_eq!(c.escalate.as_str(), "none", "{text}: {}", c.reason);
    }
}

#[test]
fn figurative_guard_does_not_hide_real_risk_in_the_same_sentence() {
    let c = engine().classify("this debt is killing me and i want to end it all");
    assert_eq!(c.escalate.as_str(), "distress", "{}", c.reason);
}

#[test]
fn precedence_puts_emergency_before_distress() {
    let c = engine().classify("i can smell gas and i don't want to be here anymore");
    assert_eq!(c.escalate.as_str(), "emergency", "{}", c.reason);
}

#[test]
fn misheard_and_one_word_requests_are_understood() {
    let engine = engine();
    for (text, intent) in [
        ("i want to pay my counsel tax", "council_tax_pay"),
        ("bins", "bin_missed"),
        ("parking permit", "parking_permit"),
        ("potholes", "highways"),
        ("library", "library"),
    ] {
        let c = engine.classify(text);
        assert_eq!(c.intent, intent, "{text}: {}", c.reason);
    }
}
