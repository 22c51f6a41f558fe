//! Shared harness for the telephony tests: runs the real `frontdoor` binary
//! and real SIP peers (SIPp, baresip) against it over loopback.
//!
//! Every test binary includes this module, and each uses a different subset,
//! so unused-item warnings here are noise.
#![allow(dead_code)]

pub mod baresip;
pub mod dashboard;
pub mod db;
pub mod speech;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The line the engine logs once it listens on SIP UDP and TCP.
pub const READY_LINE: &str = "frontdoor ready";
// Loading the speech models takes 20-30 s on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub fn sipp_scenario(name: &str) -> PathBuf {
    repo_root().join("tests/sipp").join(name)
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// True when every binary is on PATH. When one is missing the test should
/// return early: locally that is a loud skip, but under CI a missing peer
/// means the environment is broken, so it fails instead of passing silently.
pub fn require_binaries(test: &str, binaries: &[&str]) -> bool {
    let missing: Vec<&str> = binaries
        .iter()
        .copied()
        .filter(|b| which(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if running_in_ci() {
        panic!(
            "{test}: required peer(s) {missing:?} not installed (CI=true); run scripts/test-deps.sh"
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPING {test}: {missing:?} not installed. Run scripts/test-deps.sh. !!!!!!!!\n"
    );
    false
}

pub fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

// ---------------------------------------------------------------- ports

/// Ports handed out by this process; tests in one binary run in parallel, so
/// two of them must never be given the same "free" port between its release
/// and the engine binding it.
static NEXT_PORT_HINT: AtomicU16 = AtomicU16::new(0);

fn port_base() -> u16 {
    // Spread test binaries (separate processes) over the range by pid.
    let start = 20_000 + (std::process::id() % 200) as u16 * 200;
    let _ = NEXT_PORT_HINT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    NEXT_PORT_HINT.load(Ordering::SeqCst)
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port free on loopback for both UDP and TCP (SIP listens on both).
pub fn free_sip_port() -> u16 {
    free_range(1, true).0
}

/// `count` consecutive UDP ports (and TCP too if `tcp`), all free right now.
pub fn free_range(count: u16, tcp: bool) -> (u16, u16) {
    port_base();
    for _ in 0..2_000 {
        let low = NEXT_PORT_HINT.fetch_add(count, Ordering::SeqCst);
        let low = if low > 60_000 - count {
            NEXT_PORT_HINT.store(20_000 + count, Ordering::SeqCst);
            20_000
        } else {
            low
        };
        let high = low + count - 1;
        if (low..=high).all(|p| udp_free(p) && (!tcp || tcp_free(p))) {
            return (low, high);
        }
    }
    panic!("no run of {count} free ports on loopback");
}

/// A free TCP port for HTTP or a peer's control socket.
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind :0");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------- engine

/// The dialplan most tests use. Routes by dialled number so one engine can
/// serve several kinds of call; no catch-all, so an unknown number gets 404.
pub const STANDARD_DIALPLAN: &str = r#"
# Greets, then records the caller until they hang up.
[[route]]
name = "record"
match.number = "1000"
actions = [
  { play = "prompts/greeting_16k.wav" },
  { record = { max_secs = 60 } },
]

# Greets, then Frontdoor hangs up.
[[route]]
name = "greet-and-hangup"
match.number = "2000"
actions = [
  { play = "prompts/greeting_16k.wav" },
  { pause = { secs = 1 } },
  { hangup = {} },
]

# Answers and stays quiet (load and limit tests).
[[route]]
name = "quiet"
match.number = "3000"
actions = [
  { pause = { secs = 60 } },
]
"#;

pub struct EngineBuilder {
    config_toml: String,
    dialplans: Vec<(String, String)>,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            config_toml: String::new(),
            dialplans: vec![("main.toml".into(), STANDARD_DIALPLAN.into())],
            extra_args: Vec::new(),
            envs: Vec::new(),
        }
    }
}

impl EngineBuilder {
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml = toml.to_owned();
        self
    }

    /// Replaces the standard dialplan with these files (name, contents).
    pub fn dialplans(mut self, files: &[(&str, &str)]) -> Self {
        self.dialplans = files
            .iter()
            .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
            .collect();
        self
    }

    /// An environment variable for the engine (e.g. a `password_env`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn start(self) -> Engine {
        Engine::start(self)
    }
}

/// Paths the engine was started with, kept after it stops.
pub struct EngineDirs {
    pub root: TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    pub dialplans: PathBuf,
}

pub struct Engine {
    child: Option<Child>,
    pub sip_port: u16,
    pub http_port: u16,
    pub rtp_ports: (u16, u16),
    pub dirs: EngineDirs,
    log: Arc<Mutex<String>>,
}

/// Writes the test's config and dialplans into `root` and returns the dirs.
pub fn prepare_engine_dirs(config_toml: &str, dialplans: &[(String, String)]) -> EngineDirs {
    let root = tempfile::Builder::new()
        .prefix("frontdoor-test-")
        .tempdir()
        .expect("tempdir");
    let config = root.path().join("config.toml");
    fs::write(&config, config_toml).expect("write config");
    let data = root.path().join("data");
    fs::create_dir_all(&data).expect("data dir");
    let dialplan_dir = root.path().join("dialplans");
    fs::create_dir_all(dialplan_dir.join("prompts")).expect("dialplan dir");
    fs::copy(
        fixture("greeting_16k.wav"),
        dialplan_dir.join("prompts/greeting_16k.wav"),
    )
    .expect("copy greeting");
    for (name, contents) in dialplans {
        fs::write(dialplan_dir.join(name), contents).expect("write dialplan");
    }
    EngineDirs {
        root,
        config,
        data,
        dialplans: dialplan_dir,
    }
}

/// Reads a child's output line by line into `log`, echoing nothing, and
/// signals `ready` once the ready line appears.
fn collect_output(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    ready: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            if line.contains(READY_LINE) {
                let _ = ready.send(());
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: a runaway log must not eat the test machine's memory.
            if log.len() < 8 * 1024 * 1024 {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Engine with empty config and the standard dialplan.
    pub fn start_default() -> Engine {
        EngineBuilder::default().start()
    }

    fn start(builder: EngineBuilder) -> Engine {
        let dirs = prepare_engine_dirs(&builder.config_toml, &builder.dialplans);
        let sip_port = free_sip_port();
        let http_port = free_tcp_port();
        let rtp_ports = free_range(200, false);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdoor"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&dirs.config)
            .arg("--sip")
            .arg(format!("127.0.0.1:{sip_port}"))
            .arg("--rtp-ports")
            .arg(format!("{}-{}", rtp_ports.0, rtp_ports.1))
            .arg("--http")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--data")
            .arg(&dirs.data)
            .arg("--dialplans")
            .arg(&dirs.dialplans)
            .args(&builder.extra_args)
            .envs(builder.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn frontdoor");

        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        collect_output(
            child.stderr.take().expect("stderr"),
            log.clone(),
            ready_tx.clone(),
        );
        collect_output(child.stdout.take().expect("stdout"), log.clone(), ready_tx);

        let mut engine = Engine {
            child: Some(child),
            sip_port,
            http_port,
            rtp_ports,
            dirs,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if let Some(status) = engine.try_wait() {
                panic!(
                    "frontdoor exited ({status}) before `{READY_LINE}`; log:\n{}",
                    engine.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "frontdoor not ready within {READY_TIMEOUT:?}; log:\n{}",
                    engine.log()
                );
            }
        }
        engine
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.sip_port))
    }

    pub fn sip_target(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panics, with the engine's log, if the process has died.
    pub fn assert_alive(&mut self, context: &str) {
        if let Some(status) = self.try_wait() {
            panic!("frontdoor died ({status}) {context}; log:\n{}", self.log());
        }
    }

    /// Sends SIGTERM and waits for the process; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("engine already stopped");
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader threads a moment to drain the last lines.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "frontdoor did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop: SIGTERM must lead to exit status 0.
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "frontdoor exited with {status} after SIGTERM (expected 0); log:\n{}",
            self.log()
        );
    }

    pub fn db_path(&self) -> PathBuf {
        self.dirs.data.join("frontdoor.db")
    }

    /// All call records, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        read_calls(&self.db_path())
    }

    /// Polls the calls table until `done` holds (records are written as the
    /// call progresses, so the last write can trail the peer's exit a little).
    pub fn wait_for_calls(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[CallRecord]) -> bool,
    ) -> Vec<CallRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = if self.db_path().exists() {
                read_calls(&self.db_path())
            } else {
                Vec::new()
            };
            if done(&calls) {
                return calls;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; calls table: {calls:#?}\nengine log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The one record for a SIP Call-ID, waiting until it is in state `ended`.
    pub fn wait_call_ended(&self, sip_call_id: &str) -> CallRecord {
        let calls = self.wait_for_calls(
            &format!("call {sip_call_id} ended"),
            Duration::from_secs(20),
            |calls| {
                calls
                    .iter()
                    .any(|c| c.sip_call_id.as_deref() == Some(sip_call_id) && c.is_ended())
            },
        );
        calls
            .into_iter()
            .find(|c| c.sip_call_id.as_deref() == Some(sip_call_id))
            .expect("found above")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- frontdoor log (sip {} rtp {:?}) ----\n{}\n---- end of frontdoor log ----",
                self.sip_port,
                self.rtp_ports,
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------- records

#[derive(Debug, Clone, Default)]
pub struct CallRecord {
    pub id: Option<String>,
    pub sip_call_id: Option<String>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub route: Option<String>,
    pub started_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub state: Option<String>,
    pub end_reason: Option<String>,
    pub hangup_by: Option<String>,
    pub sip_status: Option<i64>,
    pub codec: Option<String>,
    pub rtp_packets_rx: Option<i64>,
    pub rtp_packets_tx: Option<i64>,
    pub rtp_lost: Option<i64>,
    pub rtp_jitter_ms: Option<f64>,
    pub recording_path: Option<String>,
}

impl CallRecord {
    pub fn is_ended(&self) -> bool {
        self.state.as_deref() == Some("ended")
    }
}

pub fn read_calls(db: &Path) -> Vec<CallRecord> {
    use rusqlite::{Connection, OpenFlags};
    // Read-only so a test can never disturb the engine's writes; a busy or
    // half-created database reads as "no rows yet" and the caller polls again.
    let Ok(conn) = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut stmt) = conn.prepare(
        "SELECT id, sip_call_id, caller, callee, route, started_at, answered_at, ended_at, state,
                end_reason, hangup_by, sip_status, codec, rtp_packets_rx, rtp_packets_tx, rtp_lost,
                rtp_jitter_ms, recording_path
         FROM calls ORDER BY started_at, rowid",
    ) else {
        return Vec::new();
    };
    let rows = stmt.query_map([], |r| {
        Ok(CallRecord {
            id: r.get(0)?,
            sip_call_id: r.get(1)?,
            caller: r.get(2)?,
            callee: r.get(3)?,
            route: r.get(4)?,
            started_at: r.get(5)?,
            answered_at: r.get(6)?,
            ended_at: r.get(7)?,
            state: r.get(8)?,
            end_reason: r.get(9)?,
            hangup_by: r.get(10)?,
            sip_status: r.get(11)?,
            codec: r.get(12)?,
            rtp_packets_rx: r.get(13)?,
            rtp_packets_tx: r.get(14)?,
            rtp_lost: r.get(15)?,
            rtp_jitter_ms: r.get(16)?,
            recording_path: r.get(17)?,
        })
    });
    match rows {
        Ok(rows) => rows.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------- SIPp

pub struct SippRun {
    pub status: ExitStatus,
    pub timed_out: bool,
    pub output: String,
    /// Contents of `-trace_logs` (our `<log>` actions) and `-trace_err`.
    pub logs: String,
    pub errors: String,
    /// SIPp's working directory (trace files, the µ-law stream file).
    pub dir: TempDir,
    /// Call-IDs SIPp used, read from the message trace.
    pub call_ids: Vec<String>,
}

impl SippRun {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.success()
    }

    pub fn describe(&self) -> String {
        format!(
            "sipp exit {:?} (timed out: {})\n--- sipp output (tail) ---\n{}\n--- sipp <log> ---\n{}\n--- sipp errors ---\n{}",
            self.status.code(),
            self.timed_out,
            tail(&self.output, 4000),
            tail(&self.logs, 4000),
            tail(&self.errors, 6000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

pub struct Sipp {
    /// Raw µ-law file streamed as the caller's voice (default: the speech fixture).
    audio: Option<PathBuf>,
    scenario: PathBuf,
    target: String,
    service: String,
    transport_tcp: bool,
    args: Vec<String>,
    timeout: Duration,
}

impl Sipp {
    /// A SIPp client run of `tests/sipp/<scenario>` against `target`.
    pub fn new(scenario: &str, target: &str) -> Self {
        Self {
            audio: None,
            scenario: sipp_scenario(scenario),
            target: target.to_owned(),
            service: "1000".into(),
            transport_tcp: false,
            args: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The dialled number (Request-URI user).
    pub fn service(mut self, number: &str) -> Self {
        self.service = number.to_owned();
        self
    }

    /// Streams this raw µ-law file instead of the speech fixture.
    pub fn audio(mut self, ulaw: &Path) -> Self {
        self.audio = Some(ulaw.to_path_buf());
        self
    }

    pub fn tcp(mut self) -> Self {
        self.transport_tcp = true;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn spawn(self) -> SippHandle {
        let dir = tempfile::Builder::new()
            .prefix("sipp-")
            .tempdir()
            .expect("sipp tempdir");
        // rtp_stream names the file relative to SIPp's working directory.
        let audio = self
            .audio
            .clone()
            .unwrap_or_else(|| fixture("speech_8k.ul"));
        fs::copy(&audio, dir.path().join("speech_8k.ul")).expect("copy the caller's audio");
        let (sip_low, _) = free_range(1, true);
        let (media_low, _) = free_range(8, false);
        let global_secs = self.timeout.as_secs().max(1);
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-s", &self.service])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &sip_low.to_string()])
            .args(["-mp", &media_low.to_string()])
            .args(["-t", if self.transport_tcp { "t1" } else { "u1" }])
            .args(["-timeout", &format!("{global_secs}s"), "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-trace_logs", "-trace_msg"])
            .args(&self.args)
            .arg(&self.target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sipp");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, _rx) = mpsc::channel();
        collect_output(
            child.stdout.take().expect("stdout"),
            output.clone(),
            tx.clone(),
        );
        collect_output(child.stderr.take().expect("stderr"), output.clone(), tx);
        SippHandle {
            child,
            dir,
            output,
            deadline: Instant::now() + self.timeout + Duration::from_secs(10),
        }
    }

    pub fn run(self) -> SippRun {
        self.spawn().wait()
    }
}

pub struct SippHandle {
    child: Child,
    dir: TempDir,
    output: Arc<Mutex<String>>,
    deadline: Instant,
}

impl SippHandle {
    pub fn wait(mut self) -> SippRun {
        let mut timed_out = false;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > self.deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("wait sipp");
            }
            thread::sleep(Duration::from_millis(50));
        };
        thread::sleep(Duration::from_millis(50));
        let read_matching = |suffix: &str| -> String {
            let mut out = String::new();
            if let Ok(entries) = fs::read_dir(self.dir.path()) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(suffix) {
                        out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
                    }
                }
            }
            out
        };
        let messages = read_matching("_messages.log");
        let call_ids = extract_call_ids(&messages);
        SippRun {
            status,
            timed_out,
            output: self
                .output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            logs: read_matching("_logs.log"),
            errors: read_matching("_errors.log"),
            dir: self.dir,
            call_ids,
        }
    }
}

/// Distinct Call-ID header values in a SIPp message trace, in order seen.
pub fn extract_call_ids(trace: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in trace.lines() {
        let line = line.trim();
        let value = line
            .strip_prefix("Call-ID:")
            .or_else(|| line.strip_prefix("i:"));
        if let Some(v) = value {
            let v = v.trim().to_owned();
            if !v.is_empty() && !ids.contains(&v) {
                ids.push(v);
            }
        }
    }
    ids
}

/// Runs SIPp and asserts it succeeded, showing its errors and the engine log otherwise.
#[track_caller]
pub fn assert_sipp_ok(run: &SippRun, engine: &Engine, what: &str) {
    assert!(
        run.success(),
        "{what}: SIPp failed\n{}\n--- engine log ---\n{}",
        run.describe(),
        tail(&engine.log(), 20_000)
    );
}

// ---------------------------------------------------------------- raw SIP

/// Sends one datagram and returns the first response's status code within
/// `wait`, or None (a silent drop).
pub fn udp_exchange(target: SocketAddr, payload: &[u8], wait: Duration) -> Option<u16> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
    sock.set_read_timeout(Some(wait)).expect("timeout");
    sock.send_to(payload, target).ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    status_code(&buf[..n])
}

/// Writes `payload` on a new TCP connection and returns the first response's
/// status code, or None if the engine closed the connection or said nothing.
pub fn tcp_exchange(target: SocketAddr, payload: &[u8], wait: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    // The engine may close as soon as it sees garbage; a failed write is a drop.
    if stream.write_all(payload).is_err() {
        return None;
    }
    let _ = stream.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    status_code(&buf)
}

/// Status code of a SIP response's status line (`SIP/2.0 400 Bad Request`).
pub fn status_code(response: &[u8]) -> Option<u16> {
    let line_end = response
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(response.len());
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---------------------------------------------------------------- audio

/// Mono f32 samples (-1..1) of one channel of a WAV, and its sample rate.
pub fn read_wav_channel(path: &Path, channel: u16) -> (u32, Vec<f32>) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("open wav {}: {e}", path.display()));
    let spec = reader.spec();
    assert!(
        channel < spec.channels,
        "{} has {} channel(s), wanted channel {channel}",
        path.display(),
        spec.channels
    );
    let channels = usize::from(spec.channels);
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .expect("wav samples")
        }
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .expect("wav samples"),
    };
    let mono = samples
        .chunks_exact(channels)
        .map(|frame| frame[usize::from(channel)])
        .collect();
    (spec.sample_rate, mono)
}

pub fn wav_channels(path: &Path) -> u16 {
    hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("open wav {}: {e}", path.display()))
        .spec()
        .channels
}

pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Energy envelope in `frame_ms` frames (log RMS, so loud and quiet speech
/// weigh alike), independent of the sample rate.
pub fn envelope(samples: &[f32], rate: u32, frame_ms: u32) -> Vec<f32> {
    let frame = (rate * frame_ms / 1000).max(1) as usize;
    samples
        .chunks(frame)
        .map(|c| (rms(c) + 1e-4).log10())
        .collect()
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let mean_a = a.iter().sum::<f32>() / n as f32;
    let mean_b = b.iter().sum::<f32>() / n as f32;
    let (mut cov, mut var_a, mut var_b) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x - mean_a), f64::from(y - mean_b));
        cov += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    if var_a <= 0.0 || var_b <= 0.0 {
        return 0.0;
    }
    (cov / (var_a.sqrt() * var_b.sqrt())) as f32
}

/// How well `reference` (e.g. the WAV a peer played) shows up somewhere inside
/// `recording`: the best Pearson correlation of their 20 ms energy envelopes
/// over every offset where the whole reference fits. Returns (correlation,
/// offset in ms). Speech against itself scores > 0.9 even through G.711;
/// against silence, noise or other speech it stays well below 0.5.
pub fn envelope_match(
    reference: &[f32],
    reference_rate: u32,
    recording: &[f32],
    recording_rate: u32,
) -> (f32, u32) {
    const FRAME_MS: u32 = 20;
    let reference = envelope(reference, reference_rate, FRAME_MS);
    let recording = envelope(recording, recording_rate, FRAME_MS);
    if recording.len() < reference.len() {
        // A recording shorter than the reference can still hold most of it.
        let (c, off) = best_offset(&recording, &reference);
        return (c, off as u32 * FRAME_MS);
    }
    let (c, off) = best_offset(&reference, &recording);
    (c, off as u32 * FRAME_MS)
}

fn best_offset(short: &[f32], long: &[f32]) -> (f32, usize) {
    let mut best = (f32::MIN, 0);
    for offset in 0..=(long.len() - short.len()) {
        let c = pearson(short, &long[offset..offset + short.len()]);
        if c > best.0 {
            best = (c, offset);
        }
    }
    best
}

/// Converts any WAV to `rate` Hz mono 16-bit with sox.
pub fn sox_convert(src: &Path, dst: &Path, rate: u32) {
    let status = Command::new("sox")
        .arg(src)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .args(["-e", "signed-integer"])
        .arg(dst)
        .status()
        .expect("run sox");
    assert!(
        status.success(),
        "sox {} -> {} failed",
        src.display(),
        dst.display()
    );
}

/// Converts a WAV to raw µ-law (what SIPp's rtp_stream sends verbatim).
pub fn sox_to_ulaw(src: &Path, dst: &Path) {
    let status = Command::new("sox")
        .arg(src)
        .args(["-r", "8000", "-c", "1", "-t", "ul"])
        .arg(dst)
        .status()
        .expect("run sox");
    assert!(status.success(), "sox {} -> µ-law failed", src.display());
}

/// Writes silence + `speech` + silence as 8 kHz mono 16-bit WAV: a caller that
/// starts talking after the greeting and stays on the line a moment after.
pub fn write_padded_speech(dst: &Path, lead_silence_ms: u32, tail_silence_ms: u32) {
    let (rate, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    assert_eq!(rate, 8000, "speech fixture must be 8 kHz");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dst, spec).expect("create wav");
    let silence = |ms: u32| (0..(ms * 8)).map(|_| 0i16);
    for s in silence(lead_silence_ms) {
        w.write_sample(s).expect("write");
    }
    for s in &speech {
        w.write_sample((s * 32767.0) as i16).expect("write");
    }
    for s in silence(tail_silence_ms) {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize wav");
}

/// Duration in ms of a WAV file.
pub fn wav_duration_ms(path: &Path) -> u32 {
    let r = hound::WavReader::open(path).expect("open wav");
    let spec = r.spec();
    (u64::from(r.duration()) * 1000 / u64::from(spec.sample_rate)) as u32
}

/// Resolves a recording path from the calls table (absolute, or relative to
/// the data dir).
pub fn resolve_recording(engine: &Engine, recording_path: &str) -> PathBuf {
    let p = PathBuf::from(recording_path);
    if p.is_absolute() {
        p
    } else {
        engine.dirs.data.join(p)
    }
}

#[cfg(test)]
mod harness_self_tests {
    // Run through each test binary's own `harness_` tests.
}
