//! Caller speech for calls with real models: Frontdoor's own neural voice
//! (`frontdoor say`, Piper) as the caller, and the checks that skip such
//! tests where the models are not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{fixture, read_wav_channel, repo_root, sox_convert};

/// A greeting of about 3 s, so that a call with the assistant takes seconds
/// instead of the full greeting's 12.
pub const SHORT_GREETING: &str = "Hello, you're through to the city council. How can I help?";

/// Every call goes to the assistant, which waits 30 s before a re-prompt.
pub const ASSISTANT_DIALPLAN: &str = r#"
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 30 } }]
"#;

/// The recorded caller's speech fixture, as 8 kHz samples.
pub fn speech_fixture_8k() -> Vec<f32> {
    read_wav_channel(&fixture("speech_8k.wav"), 0).1
}

/// The recorded greeting fixture (16 kHz), resampled to 8 kHz samples.
pub fn greeting_fixture_8k() -> Vec<f32> {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("greeting_8k.wav");
    sox_convert(&fixture("greeting_16k.wav"), &path, 8000);
    read_wav_channel(&path, 0).1
}

/// Whether the speech models are installed. Missing models fail the test
/// under CI (where `frontdoor models fetch` must have run) and skip it
/// elsewhere.
pub fn speech_models_present(test: &str) -> bool {
    let missing: Vec<PathBuf> = frontdoor::config::Config::default()
        .model_set()
        .missing_files()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: models missing under CI: {missing:?} (run `frontdoor models fetch`)"
    );
    eprintln!("*** SKIPPED {test}: models missing {missing:?}; run `frontdoor models fetch` ***");
    false
}

/// Speaks `text` into `wav` with `frontdoor say` (8 kHz mono by default).
pub fn say_to_wav(text: &str, wav: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("say")
        .arg(text)
        .arg("-o")
        .arg(wav)
        .status()
        .expect("run frontdoor say");
    assert!(status.success(), "frontdoor say {text:?} failed");
}

/// `text` in Frontdoor's voice as 8 kHz samples; `name` keeps the files of
/// several sentences in one directory apart.
pub fn spoken_8k_samples(dir: &Path, name: &str, text: &str) -> Vec<f32> {
    let wav = dir.join(format!("{name}-said.wav"));
    say_to_wav(text, &wav);
    let (rate, samples) = read_wav_channel(&wav, 0);
    assert_eq!(rate, 8000, "frontdoor say writes 8 kHz by default");
    samples
}

/// `text` in Frontdoor's voice as raw 8 kHz µ-law (what SIPp's rtp_stream
/// sends), with `lead_ms` of silence before it and `tail_ms` after: a
/// caller's recorded question. Writes `{name}.wav` and `{name}.ul` in `dir`.
pub fn caller_voice_ulaw(
    dir: &Path,
    name: &str,
    text: &str,
    lead_ms: u32,
    tail_ms: u32,
) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    say_to_wav(text, &wav);
    let ulaw = dir.join(format!("{name}.ul"));
    let status = Command::new("sox")
        .arg(&wav)
        .args(["-r", "8000", "-c", "1", "-t", "ul"])
        .arg(&ulaw)
        .args([
            "pad",
            &format!("{:.3}", f64::from(lead_ms) / 1000.0),
            &format!("{:.3}", f64::from(tail_ms) / 1000.0),
        ])
        .status()
        .expect("sox");
    assert!(status.success(), "sox failed");
    ulaw
}

/// A copy of the repository's knowledge base under `dir` whose greeting is
/// `greeting`, and the `[assistant]` config section that uses it (with the
/// repository's safeguarding rules).
pub fn assistant_config_with_greeting(dir: &Path, greeting: &str) -> String {
    let knowledge = dir.join("knowledge");
    std::fs::create_dir_all(&knowledge).unwrap();
    for entry in std::fs::read_dir(repo_root().join("knowledge")).unwrap() {
        let entry = entry.unwrap();
        let mut text = std::fs::read_to_string(entry.path()).unwrap();
        if entry.file_name() == "assistant.toml" {
            let start = text.find("greeting = ").expect("greeting line");
            let end = start + text[start..].find('\n').expect("end of line");
            text.replace_range(start..end, &format!("greeting = {greeting:?}"));
        }
        std::fs::write(knowledge.join(entry.file_name()), text).unwrap();
    }
    format!(
        "[assistant]\nknowledge_dir = {:?}\ngovernance_file = {:?}\n",
        knowledge.display().to_string(),
        repo_root()
            .join("governance/safeguarding.toml")
            .display()
            .to_string()
    )
}
