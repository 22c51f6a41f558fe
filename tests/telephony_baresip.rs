//! baresip, a real softphone, calls the engine: it plays recorded speech as
//! its microphone and records what it hears. Proves audio flows both ways
//! through the real G.711/RTP path: Frontdoor's recording holds the caller's
//! speech, and the caller heard the greeting prompt.
//!
//! Needs `baresip` (Debian baresip-core) and `sox` (scripts/test-deps.sh).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A baresip instance with a private config directory, driven over ctrl_tcp.
struct Baresip {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ctrl_port: u16,
}

impl Baresip {
    /// Starts baresip with `source_wav` (8 kHz mono 16-bit) as its microphone.
    fn start(source_wav: &Path) -> Baresip {
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
        fs::write(
            config_dir.join("accounts"),
            "<sip:07700900456@127.0.0.1>;regint=0;answermode=manual;audio_codecs=PCMU,PCMA\n",
        )
        .expect("write accounts");
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
        };
        baresip.wait_for_control();
        baresip
    }

    fn log(&self) -> String {
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
    fn command(&self, command: &str, params: &str) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("connect ctrl_tcp");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let body =
            format!(r#"{{"command":"{command}","params":"{params}","token":"frontdoor-test"}}"#);
        let frame = format!("{}:{},", body.len(), body);
        stream.write_all(frame.as_bytes()).expect("send command");
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    /// baresip closes the call itself when its aufile source ends; wait for that.
    fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// The sndfile dump of received (decoded) audio.
    fn heard_wav(&self) -> Option<PathBuf> {
        fs::read_dir(self.dir.path().join("heard"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }

    /// SIGINT is what stops baresip cleanly (SIGTERM may leave it running).
    fn stop(&mut self) {
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

#[test]
fn baresip_caller_speech_is_recorded_and_caller_hears_greeting() {
    if !require_binaries(
        "baresip_caller_speech_is_recorded_and_caller_hears_greeting",
        &["baresip"],
    ) {
        return;
    }
    let mut engine = Engine::start_default();

    // The caller talks 1 s after answer and stays on until the 4.5 s greeting
    // is over, then its file ends and baresip hangs up.
    let greeting_ms = wav_duration_ms(&fixture("greeting_16k.wav"));
    let work = tempfile::tempdir().expect("tempdir");
    let source = work.path().join("caller.wav");
    write_padded_speech(&source, 1000, greeting_ms.saturating_sub(2000).max(1000));

    let mut baresip = Baresip::start(&source);
    let reply = baresip.command("dial", &format!("sip:1000@127.0.0.1:{}", engine.sip_port));
    eprintln!("baresip dial reply: {reply}");
    assert!(
        baresip.wait_for_log("Call established", Duration::from_secs(10)),
        "baresip's call was not established:\n{}",
        baresip.log()
    );
    assert!(
        baresip.wait_for_log("terminated", Duration::from_secs(30)),
        "baresip's call did not end:\n{}",
        baresip.log()
    );
    baresip.stop();

    let calls = engine.wait_for_calls("baresip's call ended", Duration::from_secs(20), |c| {
        c.len() == 1 && c[0].is_ended()
    });
    let call = &calls[0];
    assert_eq!(call.hangup_by.as_deref(), Some("caller"), "{call:#?}");
    assert!(
        call.codec
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("PCMU")),
        "{call:#?}"
    );
    assert!(call.rtp_packets_rx.unwrap_or(0) > 200, "{call:#?}");

    // Frontdoor's recording holds what baresip said.
    let recording = resolve_recording(
        &engine,
        call.recording_path.as_deref().expect("recording_path"),
    );
    let (rec_rate, caller_channel) = read_wav_channel(&recording, 0);
    let (speech_rate, speech) = read_wav_channel(&fixture("speech_8k.wav"), 0);
    let (corr, offset) = envelope_match(&speech, speech_rate, &caller_channel, rec_rate);
    eprintln!("engine recording vs baresip's speech: {corr:.3} at {offset} ms");
    assert!(
        corr > 0.7,
        "baresip's speech not in Frontdoor's recording (correlation {corr:.3})"
    );

    // baresip heard the greeting.
    let heard = baresip
        .heard_wav()
        .unwrap_or_else(|| panic!("no -dec.wav dump from baresip:\n{}", baresip.log()));
    let (heard_rate, heard_audio) = read_wav_channel(&heard, 0);
    let heard_rms = rms(&heard_audio);
    assert!(heard_rms > 0.01, "baresip heard silence (rms {heard_rms})");
    let (greeting_rate, greeting) = read_wav_channel(&fixture("greeting_16k.wav"), 0);
    let (corr, offset) = envelope_match(&greeting, greeting_rate, &heard_audio, heard_rate);
    eprintln!("baresip heard vs greeting: {corr:.3} at {offset} ms");
    assert!(
        corr > 0.7,
        "baresip did not hear the greeting (correlation {corr:.3})"
    );

    engine.stop();
}
