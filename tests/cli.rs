//! The command line as an admin meets it: help, dialplan checks, and start-up
//! refusing a broken configuration with a clear message.

use std::path::Path;
use std::process::{Command, Output};

fn frontdoor(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running frontdoor")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_describes_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let o = frontdoor(&["--help"], dir.path());
    assert!(o.status.success());
    let help = text(&o);
    for cmd in ["serve", "dialplan", "classify", "chat", "eval"] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    let serve = text(&frontdoor(&["serve", "--help"], dir.path()));
    for flag in [
        "--sip",
        "--rtp-ports",
        "--http",
        "--data",
        "--dialplans",
        "--config",
        "--log-json",
    ] {
        assert!(
            serve.contains(flag),
            "{flag} missing from serve --help:\n{serve}"
        );
    }
}

#[test]
fn shipped_dialplans_check_ok() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = frontdoor(&["dialplan", "check", "dialplans"], root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ok"), "{}", text(&o));
}

#[test]
fn broken_dialplan_is_reported_with_file_and_line_and_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir(&plans).unwrap();
    std::fs::write(
        plans.join("main.toml"),
        "[[route]]\nname = \"main\"\nmatch.number = \"*\"\nactions = [\n  { play = \"nowhere.wav\" },\n]\n",
    )
    .unwrap();

    let o = frontdoor(&["dialplan", "check", "plans"], dir.path());
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("main.toml:5"), "{out}");
    assert!(out.contains("nowhere.wav"), "{out}");

    // `serve` refuses to start on the same file, before binding anything.
    let o = frontdoor(
        &[
            "serve",
            "--dialplans",
            "plans",
            "--sip",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data",
            "data",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("main.toml:5"), "{out}");
}

#[test]
fn broken_config_is_reported_with_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[limits]\nmax_calls = \"lots\"\n",
    )
    .unwrap();
    let o = frontdoor(&["--config", "bad.toml", "dialplan", "check"], dir.path());
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("bad.toml:2"), "{out}");

    let o = frontdoor(
        &["--config", "missing.toml", "dialplan", "check"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.toml"), "{}", text(&o));
}

#[test]
fn bad_flag_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = frontdoor(&["serve", "--rtp-ports", "9000"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("rtp-ports"), "{}", text(&o));
}
