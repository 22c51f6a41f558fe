//! Engine configuration (`config.toml`).
//!
//! Every field has a default so that an empty file is a valid configuration;
//! operators override the handful of settings they change most on the command
//! line (see `frontdoor serve --help`).

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipSection,
    pub media: MediaSection,
    pub http: HttpSection,
    pub data: DataSection,
    pub dialplans: DialplanSection,
    pub limits: LimitsSection,
    pub shutdown: ShutdownSection,
    pub logging: LoggingSection,
    pub assistant: AssistantSection,
    pub models: ModelsSection,
    /// Agents, their registration credentials and queues (human hand-off).
    pub handoff: crate::handoff::HandoffSection,
    /// Supervisor dashboard: users, sessions, login throttling.
    pub dashboard: DashboardSection,
    /// PII redaction and data retention.
    pub governance: GovernanceSection,
}

/// Dashboard role: supervisors watch and step into calls; admins also see
/// the admin pages (users, configuration, agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

/// One dashboard login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardUser {
    pub name: String,
    pub role: Role,
    /// An argon2 PHC string (`frontdoor dashboard hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Or: an environment variable holding the plain password (hashed in
    /// memory at start-up, never logged).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The hand-off agent id whose phone "take over → to me" rings.
    #[serde(default)]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSection {
    /// Serve the dashboard on the HTTP listener.
    pub enabled: bool,
    /// A session ends after this long without a request.
    pub session_idle_mins: u64,
    /// And at the latest this long after login.
    pub session_max_hours: u64,
    /// Failed logins allowed per user name and per client address in
    /// `login_window_secs` before further attempts get 429.
    pub login_attempts: u32,
    pub login_window_secs: u64,
    /// Mark cookies `Secure` (set when the dashboard is behind TLS).
    pub secure_cookies: bool,
    pub user: Vec<DashboardUser>,
}

impl Default for DashboardSection {
    fn default() -> Self {
        DashboardSection {
            enabled: true,
            session_idle_mins: 30,
            session_max_hours: 12,
            login_attempts: 5,
            login_window_secs: 300,
            secure_cookies: false,
            user: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernanceSection {
    /// What is redacted from transcripts, audit details and logs before
    /// they are stored: any of "card", "sort_code", "account_number",
    /// "ni_number", "phone", "email". Recordings are kept as they are.
    pub redact: Vec<String>,
    /// Transcripts (turns, transfer summaries) older than this many days
    /// are purged; 0 keeps them forever.
    pub transcript_retention_days: u32,
    /// Recordings older than this many days are deleted; 0 keeps them.
    pub recording_retention_days: u32,
    /// How often the engine looks for data past retention.
    pub purge_interval_mins: u64,
}

impl Default for GovernanceSection {
    fn default() -> Self {
        GovernanceSection {
            redact: [
                "card",
                "sort_code",
                "account_number",
                "ni_number",
                "phone",
                "email",
            ]
            .map(String::from)
            .to_vec(),
            transcript_retention_days: 90,
            recording_retention_days: 30,
            purge_interval_mins: 60,
        }
    }
}

/// Where the speech models are. By default everything comes from the cache
/// that `frontdoor models fetch` fills; any path can point at files a
/// council already has.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Cache directory (default: $FRONTDOOR_CACHE or ~/.cache/frontdoor).
    pub cache_dir: Option<PathBuf>,
    /// `tiny.en` (default) or `base` (multilingual).
    pub whisper: Option<String>,
    pub whisper_ggml: Option<PathBuf>,
    pub piper_onnx: Option<PathBuf>,
    pub piper_config: Option<PathBuf>,
    pub onnxruntime_lib: Option<PathBuf>,
    pub silero_vad: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSection {
    /// Address for both UDP and TCP.
    pub listen: SocketAddr,
    /// Host name or IP placed in Contact headers; defaults to the address
    /// the caller's packets arrived on.
    pub advertised_host: Option<String>,
    pub user_agent: String,
    /// RFC 3261 T1 in milliseconds (500 on the public internet; lower on a LAN).
    pub t1_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// RTP port range, `LOW-HIGH`. RTP uses even ports, RTCP the next odd one.
    pub rtp_ports: String,
    /// IP placed in SDP `c=` lines. Defaults to the local address that routes
    /// to the caller (which is right on a single-homed host).
    pub advertised_ip: Option<std::net::IpAddr>,
    /// Codecs offered/accepted, in preference order.
    pub codecs: Vec<String>,
    /// Hang up a call when no RTP has arrived for this long (not while on hold).
    pub inactivity_timeout_secs: u64,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Directory for the call database and recordings.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanSection {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Concurrent calls; further INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    pub retry_after_secs: u32,
    /// Longest a call may last before Frontdoor hangs up (a safety net).
    pub max_call_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// On SIGTERM, calls in progress get this long to finish before they are hung up.
    pub grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSection {
    /// `text` (human-readable) or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `frontdoor=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssistantSection {
    /// Knowledge base directory (`knowledge/*.toml`).
    pub knowledge_dir: PathBuf,
    /// Safeguarding and escalation rules.
    pub governance_file: PathBuf,
    /// Speech-recognition worker threads (one inference thread each).
    /// Default: one per core.
    pub asr_workers: Option<usize>,
    /// Keep Whisper's council-vocabulary prompt on a turn that is decoded
    /// while other callers' turns wait for a worker. Default false: under
    /// load the prompt is shed (each decode ~25 % cheaper, word error rate on
    /// council questions 8.0 → 9.2 %), so a busy switchboard answers sooner.
    pub asr_prompt_when_busy: bool,
    /// Speech-synthesis worker threads. Default: 1.
    pub tts_workers: usize,
    /// Memory for synthesised sentences (MiB). Every answer in the knowledge
    /// base is synthesised ahead of time into it while the machine is idle, so
    /// a known answer starts without waiting for synthesis. 0 turns it off.
    pub tts_cache_mb: usize,
    /// Keep the audio of fixed texts (knowledge-base answers, prompts) on
    /// disk under the models cache (`<cache>/tts/`), so a restarted engine
    /// answers its first callers without synthesising. Only text that is the
    /// same for every caller is written. Default: true.
    pub tts_store: bool,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            listen: "0.0.0.0:5060".parse().expect("valid literal"),
            advertised_host: None,
            user_agent: format!("Frontdoor/{}", env!("CARGO_PKG_VERSION")),
            t1_ms: 500,
        }
    }
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            rtp_ports: "20000-29999".into(),
            advertised_ip: None,
            codecs: vec!["PCMU".into(), "PCMA".into()],
            inactivity_timeout_secs: 30,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dir: PathBuf::from("data"),
        }
    }
}

impl Default for DialplanSection {
    fn default() -> Self {
        DialplanSection {
            dir: PathBuf::from("dialplans"),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_calls: 200,
            retry_after_secs: 30,
            max_call_secs: 3600,
        }
    }
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection { grace_secs: 10 }
    }
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for AssistantSection {
    fn default() -> Self {
        AssistantSection {
            knowledge_dir: PathBuf::from("knowledge"),
            governance_file: PathBuf::from("governance/safeguarding.toml"),
            asr_workers: None,
            asr_prompt_when_busy: false,
            tts_workers: 1,
            tts_cache_mb: 16,
            tts_store: true,
        }
    }
}

impl Config {
    /// Loads `path`. A missing file is an error only when the operator named
    /// it explicitly (`required`); the default `config.toml` may be absent.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        parse_port_range(&self.media.rtp_ports)
            .map_err(|m| invalid(format!("media.rtp_ports: {m}")))?;
        for codec in &self.media.codecs {
            if !matches!(codec.to_ascii_uppercase().as_str(), "PCMU" | "PCMA") {
                return Err(invalid(format!(
                    "media.codecs: unsupported codec {codec:?} (supported: PCMU, PCMA)"
                )));
            }
        }
        if self.media.codecs.is_empty() {
            return Err(invalid("media.codecs: at least one codec is needed".into()));
        }
        if self.media.jitter_min_ms > self.media.jitter_max_ms {
            return Err(invalid(
                "media.jitter_min_ms is larger than media.jitter_max_ms".into(),
            ));
        }
        if self.limits.max_calls == 0 {
            return Err(invalid("limits.max_calls must be at least 1".into()));
        }
        if let Some(w) = &self.models.whisper
            && w.parse::<crate::models::WhisperModel>().is_err()
        {
            return Err(invalid(format!(
                "models.whisper: {w:?} is neither \"tiny.en\" nor \"base\""
            )));
        }
        if self.assistant.tts_workers == 0 || self.assistant.asr_workers == Some(0) {
            return Err(invalid(
                "assistant.asr_workers and tts_workers must be at least 1".into(),
            ));
        }
        self.handoff
            .validate_without_dialplan_queues()
            .map_err(invalid)?;
        if !matches!(self.logging.format.as_str(), "text" | "json") {
            return Err(invalid(format!(
                "logging.format: {:?} is neither \"text\" nor \"json\"",
                self.logging.format
            )));
        }
        Ok(())
    }

    pub fn rtp_port_range(&self) -> RangeInclusive<u16> {
        parse_port_range(&self.media.rtp_ports).unwrap_or(20000..=29999)
    }

    /// The models cache directory (`[models] cache_dir`, else the default).
    pub fn models_cache_dir(&self) -> PathBuf {
        self.models
            .cache_dir
            .clone()
            .unwrap_or_else(crate::models::default_cache_dir)
    }

    /// The model files to use: the cache's, with any path set in `[models]`
    /// taking precedence.
    pub fn model_set(&self) -> crate::models::ModelSet {
        let m = &self.models;
        let cache = self.models_cache_dir();
        let whisper = m
            .whisper
            .as_deref()
            .and_then(|w| w.parse().ok())
            .unwrap_or_default();
        let mut set = crate::models::ModelSet::in_cache(&cache, whisper);
        let pick = |own: &Option<PathBuf>, default: &mut PathBuf| {
            if let Some(p) = own {
                *default = p.clone();
            }
        };
        pick(&m.whisper_ggml, &mut set.whisper_ggml);
        pick(&m.piper_onnx, &mut set.piper_onnx);
        pick(&m.piper_config, &mut set.piper_config);
        pick(&m.onnxruntime_lib, &mut set.onnxruntime_lib);
        pick(&m.silero_vad, &mut set.silero_vad);
        set
    }

    pub fn inactivity_timeout(&self) -> Duration {
        Duration::from_secs(self.media.inactivity_timeout_secs)
    }
}

/// Parses `LOW-HIGH` into an inclusive range holding at least one even/odd
/// (RTP/RTCP) pair.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not LOW-HIGH"))?;
    let low: u16 = low
        .trim()
        .parse()
        .map_err(|_| format!("{low:?} is not a port number"))?;
    let high: u16 = high
        .trim()
        .parse()
        .map_err(|_| format!("{high:?} is not a port number"))?;
    if low < 1024 || high <= low {
        return Err(format!(
            "{text:?}: need 1024 <= LOW < HIGH with room for an RTP/RTCP pair"
        ));
    }
    Ok(low..=high)
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.sip.listen.port(), 5060);
        assert_eq!(config.limits.max_calls, 200);
        config.validate(Path::new("x")).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_point_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[sip]\nlisten = \"0.0.0.0:5060\"\nlisen = 3\n").unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains(":3:"), "{err}");
        assert!(err.contains("lisen"), "{err}");

        std::fs::write(&path, "[media]\nrtp_ports = \"30000\"\n").unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("rtp_ports"), "{err}");

        std::fs::write(&path, "[media]\ncodecs = [\"G729\"]\n").unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("G729"), "{err}");
    }

    #[test]
    fn handoff_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[handoff]\nrealm = \"council\"\n[[handoff.agent]]\nid = \"a1\"\npassword = \"p\"\n\
             [[handoff.queue]]\nname = \"general\"\nmembers = [\"a1\"]\n",
        )
        .unwrap();
        let config = Config::load(&path, true).unwrap();
        assert_eq!(config.handoff.queue[0].members, vec!["a1"]);
        std::fs::write(
            &path,
            "[[handoff.queue]]\nname = \"general\"\nmembers = [\"ghost\"]\n",
        )
        .unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("ghost"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_named_file_is_not() {
        let missing = Path::new("/nonexistent/frontdoor.toml");
        assert!(Config::load(missing, false).is_ok());
        assert!(Config::load(missing, true).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-20010").unwrap(), 20000..=20010);
        assert!(parse_port_range("20010-20000").is_err());
        assert!(parse_port_range("80-90").is_err());
        assert!(parse_port_range("a-b").is_err());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
