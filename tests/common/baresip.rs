//! baresip, a real softphone, as a test peer: a private configuration
//! directory, a WAV file as its microphone, a dump of what it hears, and
//! commands over its ctrl_tcp socket.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_range, free_tcp_port};

/// A baresip softphone with a private configuration, driven over ctrl_tcp.
pub struct Baresip {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ctrl_port: u16,
    pub sip_port: u16,
}

impl Baresip {
    /// `account` is the accounts-file line; `source_wav` (8 kHz mono 16-bit)
    /// is its microphone.
    pub fn start(account: &str, source_wav: &Path) -> Baresip {
        let dir = tempfile::Builder::new()
            .prefix("baresip-")
            .tempdir()
            .expect("tempdir");
        let config_dir = dir.path().join("config");
        let dump_dir = dir.path().join("heard");
        fs::create_dir_all(&config_dir).expect("config dir");
        fs::create_dir_all(&dump_dir).expect("dump dir");
        // sip_listen also takes TCP on the port and TLS on port+1.
        let (sip_port, _) = free_range(2, true);
        let ctrl_port = free_tcp_port();
        let (rtp_low, rtp_high) = free_range(20, false);
        let config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{sip_port}\n\
             sip_trans_def udp\n\
             module_path /usr/lib/baresip/modules\n\
             net_interface 127.0.0.1\n\
             rtp_ports {rtp_low}-{rtp_high}\n\
             audio_source aufile,{source}\n\
             audio_player aubridge,discard\n\
             audio_alert aubridge,discard\n\
             audio_srate 8000\n\
             audio_channels 1\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             snd_path {dump}\n\
             module_app account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
            source = source_wav.display(),
            dump = dump_dir.display(),
        );
        fs::write(config_dir.join("config"), config).expect("write config");
        fs::write(config_dir.join("accounts"), format!("{account}\n")).expect("write accounts");
        let log = fs::File::create(dir.path().join("baresip.log")).expect("log file");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&config_dir)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        let mut baresip = Baresip {
            child: Some(child),
            dir,
            ctrl_port,
            sip_port,
        };
        baresip.wait_for_control();
        baresip
    }

    /// An agent phone that registers with Frontdoor and answers at once.
    pub fn agent(user: &str, password: &str, frontdoor_port: u16, source_wav: &Path) -> Baresip {
        Baresip::start(
            &format!(
                "<sip:{user}@127.0.0.1:{frontdoor_port}>;auth_pass={password};regint=60;answermode=auto;audio_codecs=PCMU"
            ),
            source_wav,
        )
    }

    /// A caller that dials on command and does not register.
    pub fn caller(source_wav: &Path) -> Baresip {
        Baresip::start(
            "<sip:07700900456@127.0.0.1>;regint=0;answermode=manual;audio_codecs=PCMU",
            source_wav,
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    fn wait_for_control(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.ctrl_port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("baresip exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "baresip ctrl_tcp never listened:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one netstring-framed JSON command and returns the first reply frame.
    pub fn command(&self, command: &str, params: &str) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("connect ctrl_tcp");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let body = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
        let frame = format!("{}:{},", body.len(), body);
        stream.write_all(frame.as_bytes()).expect("send command");
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    /// Whether `needle` shows in the log within `timeout`, for async tests.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Whether `needle` shows in the log within `timeout`, blocking the thread.
    pub fn wait_for_log_blocking(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// What this phone heard (sndfile's decoded dump).
    pub fn heard_wav(&self) -> Option<PathBuf> {
        fs::read_dir(self.dir.path().join("heard"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }

    /// SIGINT is what stops baresip cleanly (SIGTERM may leave it running).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "---- baresip log ----\n{}\n---- end baresip log ----",
                self.log()
            );
        }
    }
}
