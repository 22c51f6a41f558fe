//! Try the answer engine before it is wired into the main CLI:
//!
//! ```text
//! cargo run --example answer_cli -- classify < utterances.jsonl
//! cargo run --example answer_cli -- chat
//! cargo run --example answer_cli -- eval ../shared/eval/utterances.jsonl
//! ```
//! Options: `--knowledge DIR` (default `knowledge`), `--governance FILE`
//! (default `governance/safeguarding.toml`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use frontdoor::answer::{AnswerEngine, cli};

fn main() -> anyhow::Result<()> {
    let mut knowledge = PathBuf::from("knowledge");
    let mut governance = PathBuf::from("governance/safeguarding.toml");
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--knowledge" => {
                knowledge = args.next().context("--knowledge needs a directory")?.into()
            }
            "--governance" => governance = args.next().context("--governance needs a file")?.into(),
            _ => positional.push(arg),
        }
    }
    let engine = AnswerEngine::load(&knowledge, &governance)?;
    match positional.first().map(String::as_str) {
        Some("classify") => cli::classify_stdin(&engine),
        Some("chat") => cli::chat(&engine),
        Some("eval") => {
            let file = positional.get(1).context("eval needs a FILE.jsonl")?;
            cli::eval(&engine, file.as_ref()).map(|_| ())
        }
        _ => bail!(
            "usage: answer_cli classify | chat | eval FILE.jsonl [--knowledge DIR] [--governance FILE]"
        ),
    }
}
