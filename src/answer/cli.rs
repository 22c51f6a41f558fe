//! Command-line front ends: `classify` (JSON lines in, JSON lines out),
//! `chat` (a text conversation) and `eval` (scores against labelled data).
//! Each has a reader/writer form so tests drive them without a terminal.

use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Action, AnswerEngine, Escalation};

/// Longest input line read; longer lines are cut (never buffered unbounded).
const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct ClassifyRequest {
    id: serde_json::Value,
    text: String,
}

#[derive(Serialize)]
struct ClassifyResponse<'a> {
    id: &'a serde_json::Value,
    intent: &'a str,
    escalate: &'a str,
    confidence: f32,
    reason: &'a str,
}

#[derive(Serialize)]
struct ClassifyFailure {
    line: usize,
    error: String,
}

/// `classify`: stdin JSON lines → stdout JSON lines.
pub fn classify_stdin(engine: &AnswerEngine) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    classify_lines(engine, stdin.lock(), stdout.lock())
}

/// One output line per input line; a malformed line gets an error object with
/// its line number and processing continues. Blank lines are skipped.
pub fn classify_lines(
    engine: &AnswerEngine,
    mut input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    let mut line_number = 0usize;
    loop {
        buffer.clear();
        let read = read_bounded_line(&mut input, &mut buffer)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let rendered = match serde_json::from_str::<ClassifyRequest>(line) {
            Ok(request) => {
                let c = engine.classify(&request.text);
                serde_json::to_string(&ClassifyResponse {
                    id: &request.id,
                    intent: &c.intent,
                    escalate: c.escalate.as_str(),
                    confidence: (c.confidence * 1000.0).round() / 1000.0,
                    reason: &c.reason,
                })
            }
            Err(e) => serde_json::to_string(&ClassifyFailure {
                line: line_number,
                error: format!("malformed input line: {e}"),
            }),
        }
        .context("serialising a classify result")?;
        writeln!(output, "{rendered}")?;
        output.flush()?;
    }
    Ok(())
}

/// Reads one line (up to `MAX_LINE_BYTES`, the rest of a longer line is
/// discarded). Returns bytes consumed, 0 at end of input.
fn read_bounded_line(input: &mut impl BufRead, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1),
            None => (available, available.len()),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buffer.len());
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let found_newline = done > chunk.len();
        input.consume(done);
        consumed += done;
        if found_newline {
            return Ok(consumed);
        }
    }
}

/// `chat`: an interactive (or piped) conversation on the terminal.
pub fn chat(engine: &AnswerEngine) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    chat_with(engine, stdin.lock(), stdout.lock())
}

pub fn chat_with(
    engine: &AnswerEngine,
    mut input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    let mut conversation = engine.new_conversation();
    writeln!(output, "assistant: {}", engine.greeting())?;
    let mut buffer = Vec::new();
    loop {
        write!(output, "caller> ")?;
        output.flush()?;
        buffer.clear();
        if read_bounded_line(&mut input, &mut buffer)? == 0 {
            writeln!(output)?;
            break;
        }
        let text = String::from_utf8_lossy(&buffer);
        let turn = conversation.respond(engine, text.trim_end_matches(['\r', '\n']));
        writeln!(output, "assistant: {}", turn.reply)?;
        writeln!(
            output,
            "  [intent: {} ({:.2}) | escalation: {} | action: {} | {}]",
            turn.intent.as_deref().unwrap_or("-"),
            turn.confidence,
            turn.escalation.as_str(),
            describe_action(&turn.action),
            turn.reason
        )?;
        match turn.action {
            Action::Transfer { .. } => {
                writeln!(
                    output,
                    "(call transferred to an agent; if none is free the caller hears: {})",
                    conversation.agent_unavailable(engine)
                )?;
                break;
            }
            Action::Hangup => break,
            Action::Continue | Action::RequestCompleted { .. } => {}
        }
    }
    output.flush()?;
    Ok(())
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::Continue => "continue".into(),
        Action::Hangup => "hang up".into(),
        Action::Transfer { reason, priority } => {
            format!("transfer ({}, {:?} priority)", reason.as_str(), priority)
        }
        Action::RequestCompleted {
            reference, kind, ..
        } => {
            format!("request completed ({kind}, {reference})")
        }
    }
}

#[derive(Deserialize)]
struct LabelledUtterance {
    id: String,
    text: String,
    intent: String,
    escalate: String,
}

/// One utterance the engine got wrong.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMiss {
    pub id: String,
    pub text: String,
    pub expected_intent: String,
    pub expected_escalate: String,
    pub got_intent: String,
    pub got_escalate: String,
    pub kind: &'static str,
}

/// Scores as defined in INTENTS.md.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub total: usize,
    pub escalation_expected: usize,
    pub escalation_caught: usize,
    pub ordinary: usize,
    pub false_escalations: usize,
    pub intent_correct: usize,
    pub misses: Vec<EvalMiss>,
}

impl EvalReport {
    /// Share of utterances labelled with an escalation that the engine escalates.
    pub fn escalation_recall(&self) -> f64 {
        ratio(self.escalation_caught, self.escalation_expected, 1.0)
    }

    /// Share of `none` utterances escalated anyway.
    pub fn false_escalation_rate(&self) -> f64 {
        ratio(self.false_escalations, self.ordinary, 0.0)
    }

    /// Share of `none` utterances whose intent is right.
    pub fn intent_accuracy(&self) -> f64 {
        ratio(self.intent_correct, self.ordinary, 1.0)
    }
}

fn ratio(part: usize, whole: usize, empty: f64) -> f64 {
    if whole == 0 {
        empty
    } else {
        part as f64 / whole as f64
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "utterances:            {}", self.total)?;
        writeln!(
            f,
            "escalation recall:     {:.1}% ({}/{})",
            100.0 * self.escalation_recall(),
            self.escalation_caught,
            self.escalation_expected
        )?;
        writeln!(
            f,
            "false escalation rate: {:.1}% ({}/{})",
            100.0 * self.false_escalation_rate(),
            self.false_escalations,
            self.ordinary
        )?;
        writeln!(
            f,
            "intent accuracy:       {:.1}% ({}/{})",
            100.0 * self.intent_accuracy(),
            self.intent_correct,
            self.ordinary
        )?;
        if self.misses.is_empty() {
            writeln!(f, "misses: none")?;
        } else {
            writeln!(f, "misses:")?;
            for m in &self.misses {
                writeln!(
                    f,
                    "  {} [{}] expected {}/{} got {}/{}: {}",
                    m.id,
                    m.kind,
                    m.expected_intent,
                    m.expected_escalate,
                    m.got_intent,
                    m.got_escalate,
                    m.text
                )?;
            }
        }
        Ok(())
    }
}

/// `eval FILE.jsonl`: scores the engine and prints the report.
pub fn eval(engine: &AnswerEngine, file: &Path) -> anyhow::Result<EvalReport> {
    let report = evaluate(engine, file)?;
    // write! rather than print!, so a closed pipe is an error, not a panic.
    write!(std::io::stdout().lock(), "{report}")?;
    Ok(report)
}

/// Scores without printing.
pub fn evaluate(engine: &AnswerEngine, file: &Path) -> anyhow::Result<EvalReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut report = EvalReport::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sample: LabelledUtterance = serde_json::from_str(line).with_context(|| {
            format!("{}:{}: not a labelled utterance", file.display(), index + 1)
        })?;
        let expected_escalation = Escalation::parse(&sample.escalate).with_context(|| {
            format!(
                "{}:{}: unknown escalate value {}",
                file.display(),
                index + 1,
                sample.escalate
            )
        })?;
        let got = engine.classify(&sample.text);
        report.total += 1;
        let miss = |kind: &'static str| EvalMiss {
            id: sample.id.clone(),
            text: sample.text.clone(),
            expected_intent: sample.intent.clone(),
            expected_escalate: sample.escalate.clone(),
            got_intent: got.intent.clone(),
            got_escalate: got.escalate.as_str().to_string(),
            kind,
        };
        if expected_escalation.is_escalation() {
            report.escalation_expected += 1;
            if got.escalate.is_escalation() {
                report.escalation_caught += 1;
            } else {
                report.misses.push(miss("missed escalation"));
            }
        } else {
            report.ordinary += 1;
            if got.escalate.is_escalation() {
                report.false_escalations += 1;
                report.misses.push(miss("false escalation"));
            }
            if got.intent == sample.intent {
                report.intent_correct += 1;
            } else {
                report.misses.push(miss("wrong intent"));
            }
        }
    }
    Ok(report)
}
