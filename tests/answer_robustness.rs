//! Bad input never panics and always gets a sensible result; configuration
//! errors name the file and the reason; the classify CLI keeps going after a
//! malformed line.

use std::path::PathBuf;

use frontdoor::answer::{AnswerEngine, AnswerError, Escalation, INTENT_NAMES, cli};

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

#[test]
fn hostile_input_is_classified_without_panicking() {
    let engine = engine();
    let long = "council tax ".repeat(1_000);
    let control: String = (0u8..32).map(char::from).collect();
    for text in [
        "",
        "   ",
        long.as_str(),
        control.as_str(),
        "😀😡🗑️🚮",
        "¿Dónde está el ayuntamiento?",
        "Wo ist das Rathaus",
        "市政府在哪里",
        "\u{202e}reversed\u{200b}zero width",
        "a",
        "\"; DROP TABLE calls; --",
    ] {
        let c = engine.classify(text);
        assert!(
            INTENT_NAMES.contains(&c.intent.as_str()),
            "{text:?} -> {}",
            c.intent
        );
        assert!((0.0..=1.0).contains(&c.confidence));
        assert!(!c.reason.is_empty());
    }
    assert_eq!(engine.classify("").intent, "out_of_scope");
    assert_eq!(engine.classify("市政府在哪里").escalate, Escalation::None);
}

#[test]
fn hostile_input_gets_a_spoken_reply() {
    let engine = engine();
    let mut call = engine.new_conversation();
    let long = "x".repeat(10_000);
    for text in ["", long.as_str(), "🙂", "\u{0}\u{7}\u{1b}[2J"] {
        let turn = call.respond(&engine, text);
        assert!(!turn.reply.is_empty());
    }
}

#[test]
fn classify_cli_reports_bad_lines_and_continues() {
    let engine = engine();
    let input = concat!(
        "{\"id\":\"a\",\"text\":\"my bin wasnt collected\"}\n",
        "this is not json\n",
        "\n",
        "{\"id\":\"c\",\"text\":\"i want to kill myself\"}\n",
        "{\"text\":\"missing id\"}\n",
    );
    let mut output = Vec::new();
    cli::classify_lines(&engine, input.as_bytes(), &mut output).expect("classify runs");
    let lines: Vec<serde_json::Value> = String::from_utf8(output)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["intent"], "bin_missed");
    assert_eq!(lines[0]["escalate"], "none");
    assert_eq!(lines[1]["line"], 2);
    assert!(lines[1]["error"].as_str().is_some());
    assert_eq!(lines[2]["escalate"], "distress");
    assert_eq!(lines[3]["line"], 5);
}

#[test]
fn chat_works_with_piped_input() {
    let engine = engine();
    let mut output = Vec::new();
    cli::chat_with(
        &engine,
        "what day are my bins collected\nno thanks\n".as_bytes(),
        &mut output,
    )
    .expect("chat runs");
    let text = String::from_utf8(output).expect("utf-8");
    assert!(text.contains("Goodbye"), "{text}");
}

fn governance_error(content: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("safeguarding.toml");
    std::fs::write(&path, content).expect("write");
    match AnswerEngine::load(&root().join("knowledge"), &path) {
        Err(e @ AnswerError::Invalid { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("safeguarding.toml"),
                "error names the file: {message}"
            );
            message
        }
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("invalid governance file was accepted"),
    }
}

#[test]
fn governance_validation_names_file_and_reason() {
    let shipped =
        std::fs::read_to_string(root().join("governance/safeguarding.toml")).expect("read");

    let bad_regex = shipped.replacen(
        "patterns = ['\\bcollapsed\\b'",
        "patterns = ['(unclosed'",
        1,
    );
    assert!(governance_error(&bad_regex).contains("not a valid regular expression"));

    let bad_category = shipped.replacen("category = \"emergency\"", "category = \"panic\"", 1);
    assert!(governance_error(&bad_category).contains("unknown category"));

    let missing_precedence = shipped.replacen(
        "precedence = [\"emergency\", \"distress\",",
        "precedence = [\"distress\",",
        1,
    );
    assert!(governance_error(&missing_precedence).contains("emergency"));

    let empty_match = shipped.replacen("patterns = ['\\bcollapsed\\b'", "patterns = ['.*'", 1);
    assert!(governance_error(&empty_match).contains("matches empty text"));

    assert!(governance_error("precedence = [").contains("not valid governance TOML"));
}

#[test]
fn knowledge_validation_names_file_and_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(root().join("knowledge")).expect("list") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let library = dir.path().join("environmental_health.toml");
    let text = std::fs::read_to_string(&library).expect("read");
    std::fs::write(
        &library,
        text.replacen(
            "The central library",
            "See https://example.org, the central library",
            1,
        ),
    )
    .expect("write");
    let error = AnswerEngine::load(dir.path(), &root().join("governance/safeguarding.toml"))
        .expect_err("web address in a spoken answer is rejected")
        .to_string();
    assert!(
        error.contains("environmental_health.toml") && error.contains("web addresses"),
        "{error}"
    );
}
