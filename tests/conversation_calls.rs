//! Conversational calls end to end, with real peers and real models: SIPp
//! calls Frontdoor and speaks a recorded question (made with `frontdoor say`); Frontdoor recognises it with Whisper, answers
//! with the answer engine and speaks with Piper. The test then transcribes
//! what Frontdoor actually sent (the right channel of its call recording) with
//! Whisper and checks it is the right answer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use frontdoor::media::g711;

use common::db::query_rows;
use common::speech::*;
use common::*;

fn peers_and_models(test: &str) -> bool {
    require_binaries(test, &["sipp", "sox"]) && speech_models_present(test)
}

/// Each test runs real models (Whisper, Piper) against real timing: two at
/// once on a 2-core machine starve each other and turn timing into noise, so
/// the calls in this file run one after another.
fn one_call_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How every call test here starts: skipped without the peers and models,
/// then this file's turn to call (held while the guard lives) and a scratch
/// directory.
fn start_call_test(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir)> {
    if !peers_and_models(test) {
        return None;
    }
    let serial = one_call_at_a_time();
    Some((serial, tempfile::tempdir().unwrap()))
}

/// Transcribes part of one channel of a recording with Frontdoor's Whisper.
fn transcribe_channel(recording: &Path, channel: u16, from_s: f32, to_s: f32) -> String {
    let (rate, samples) = read_wav_channel(recording, channel);
    let from = ((from_s * rate as f32) as usize).min(samples.len());
    let to = ((to_s * rate as f32) as usize).clamp(from, samples.len());
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&part, spec).unwrap();
    for s in &samples[from..to] {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let model = frontdoor::config::Config::default()
        .model_set()
        .whisper_ggml;
    frontdoor::asr::transcribe_file(&model, &part)
        .expect("transcribe")
        .to_lowercase()
}

fn turns(engine: &Engine) -> Vec<(String, String, Option<String>)> {
    query_rows(
        &engine.db_path(),
        "SELECT speaker, text, intent FROM turns ORDER BY rowid",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

fn audit_actions(engine: &Engine) -> Vec<String> {
    query_rows(
        &engine.db_path(),
        "SELECT action FROM audit_log ORDER BY seq",
        |r| r.get(0),
    )
}

/// Linear RMS of each 20 ms frame of one channel.
fn frame_rms(recording: &Path, channel: u16) -> Vec<f32> {
    let (rate, samples) = read_wav_channel(recording, channel);
    samples.chunks((rate / 50) as usize).map(rms).collect()
}

#[test]
fn spoken_question_gets_the_right_spoken_answer() {
    let Some((_serial, dir)) = start_call_test("spoken_question_gets_the_right_spoken_answer")
    else {
        return;
    };
    // The greeting takes about 12 s; the caller waits for it, then asks,
    // at some length so that partial transcripts show while they talk.
    let voice = caller_voice_ulaw(
        dir.path(),
        "q",
        "Hello there, could you please tell me which day my bin collection is?",
        15_000,
        30_000,
    );
    let mut engine = full_greeting_engine();
    let run = call_with(&engine, &voice, 32_000);
    assert_sipp_ok(&run, &engine, "conversational call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let turns = turns(&engine);
    let caller: Vec<_> = turns.iter().filter(|t| t.0 == "caller").collect();
    assert!(
        caller.iter().any(|t| {
            let t = t.1.to_lowercase();
            t.contains("bin") || t.contains("collection")
        }),
        "caller's question not recognised: {turns:?}\n{}",
        engine.log()
    );
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("bin_day")),
        "no bin_day answer: {turns:?}"
    );

    // Words showed live before the turn ended: the engine logs how many
    // partial transcripts each caller turn had.
    let log = engine.log();
    let partials: u32 = log
        .lines()
        .filter(|l| l.contains("caller's turn ended"))
        .filter_map(|l| l.split("partial_transcripts=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        .sum();
    eprintln!("partial transcripts while the caller spoke: {partials}");
    assert!(
        partials >= 1,
        "no partial transcript while the caller spoke:\n{log}"
    );

    // What Frontdoor really sent: transcribe its channel after the question.
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let heard = transcribe_channel(&recording, 1, 17.0, 32.0);
    assert!(
        heard.contains("collect") || heard.contains("bin"),
        "Frontdoor's spoken answer does not talk about bin collection: {heard:?}"
    );
    engine.stop();
}

#[test]
fn caller_talking_over_the_greeting_stops_it_and_is_answered() {
    let Some((_serial, dir)) =
        start_call_test("caller_talking_over_the_greeting_stops_it_and_is_answered")
    else {
        return;
    };
    // The caller speaks 3 s in, while the (12 s) greeting is still playing.
    let lead_ms = 3_000;
    let voice = caller_voice_ulaw(
        dir.path(),
        "q",
        "I want to report a pothole on my road.",
        lead_ms,
        25_000,
    );
    let mut engine = full_greeting_engine();
    let run = call_with(&engine, &voice, 20_000);
    assert_sipp_ok(&run, &engine, "barge-in call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let actions = audit_actions(&engine);
    assert!(
        actions.iter().any(|a| a == "barge_in"),
        "no barge-in recorded: {actions:?}"
    );

    // The recording is aligned per 20 ms tick: left = caller, right = Frontdoor.
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let caller = frame_rms(&recording, 0);
    let bot = frame_rms(&recording, 1);
    let onset = caller
        .iter()
        .position(|&e| e > 0.02)
        .expect("caller speech in the recording");
    assert!(
        bot[..onset].iter().any(|&e| e > 0.02),
        "the greeting was not playing before the caller spoke"
    );
    // Frontdoor must fall silent soon after the caller starts: find the first
    // 200 ms of silence on its channel after the onset.
    let silent_at = (onset..bot.len().saturating_sub(10))
        .find(|&i| bot[i..i + 10].iter().all(|&e| e < 0.01))
        .expect("Frontdoor never stopped talking");
    let stop_ms = (silent_at - onset) * 20;
    eprintln!(
        "barge-in: caller onset at {} ms, Frontdoor silent {stop_ms} ms later",
        onset * 20
    );
    // The audio is held at the first speech-like window: Frontdoor must be
    // silent within 150 ms of the caller's onset, queued audio included.
    assert!(
        stop_ms <= 150,
        "Frontdoor kept talking {stop_ms} ms over the caller"
    );

    // The interrupting words were recognised from their onset to their end
    // and answered. Not the word "pothole" itself: on a loaded machine
    // Whisper has heard it as "pahole" and "pot hole" (and the answer engine
    // still answered on highways, which is checked next).
    let turns = turns(&engine);
    assert!(
        turns.iter().any(|t| {
            let words = t.1.to_lowercase();
            t.0 == "caller" && words.contains("want") && words.contains("road")
        }),
        "the caller's words after the barge-in were not recognised: {turns:?}"
    );
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("highways")),
        "no highways answer: {turns:?}"
    );
    engine.stop();
}

// ------------------------------------------------------------------ turn-taking
//
// These calls use a knowledge base whose greeting is short (about 3 s), so
// each call takes seconds rather than the full greeting's 12.

/// A copy of the knowledge base with a short greeting, and the config that uses it.
fn short_greeting_config(dir: &Path) -> String {
    assistant_config_with_greeting(dir, SHORT_GREETING)
}

/// `text` spoken by Frontdoor's voice, as 8 kHz samples.
fn spoken_8k(dir: &Path, text: &str) -> Vec<i16> {
    let wav = dir.join("say.wav");
    say_to_wav(text, &wav);
    let narrow = dir.join("say8k.wav");
    sox_convert(&wav, &narrow, 8000);
    let (_, samples) = read_wav_channel(&narrow, 0);
    samples.iter().map(|s| (s * 32767.0) as i16).collect()
}

/// A caller's side of a call, assembled on an 8 kHz timeline.
struct CallerTrack(Vec<i16>);

impl CallerTrack {
    fn silent_for(ms: u32) -> Self {
        CallerTrack(vec![0; ms as usize * 8])
    }

    fn len_ms(&self) -> u32 {
        (self.0.len() / 8) as u32
    }

    /// Mixes `audio` in at `at_ms`, growing the track as needed.
    fn mix(&mut self, at_ms: u32, audio: &[i16], gain: f32) -> &mut Self {
        let start = at_ms as usize * 8;
        if self.0.len() < start + audio.len() {
            self.0.resize(start + audio.len(), 0);
        }
        for (out, s) in self.0[start..].iter_mut().zip(audio) {
            *out = (f32::from(*out) + f32::from(*s) * gain).clamp(-32768.0, 32767.0) as i16;
        }
        self
    }

    /// Raw µ-law, as SIPp's rtp_stream sends it.
    fn write_ulaw(&self, path: &Path) -> PathBuf {
        let bytes: Vec<u8> = self.0.iter().map(|&s| g711::linear_to_ulaw(s)).collect();
        std::fs::write(path, bytes).unwrap();
        path.to_path_buf()
    }
}

/// A cough: 150 ms of loud noise with a fast decay.
fn cough() -> Vec<i16> {
    let mut seed = 0x2545_f491u32;
    (0..150 * 8)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed % 20_000) as f32 - 10_000.0;
            let decay = (-(i as f32) / 400.0).exp();
            (noise * 1.5 * decay) as i16
        })
        .collect()
}

/// A click: 10 ms at full scale.
fn click() -> Vec<i16> {
    (0..80)
        .map(|i| if i % 2 == 0 { 30_000 } else { -30_000 })
        .collect()
}

/// Loops the caller track once (it must end with silence long enough for the call).
fn call_with(engine: &Engine, track: &Path, talk_ms: u32) -> SippRun {
    Sipp::new("uac_basic.xml", &engine.sip_target())
        .audio(track)
        .args(["-m", "1", "-d", &talk_ms.to_string()])
        .timeout(Duration::from_secs(90))
        .run()
}

/// The assistant with the repository's own knowledge base (12 s greeting).
fn full_greeting_engine() -> Engine {
    Engine::builder()
        .dialplans(&[("council.toml", ASSISTANT_DIALPLAN)])
        .start()
}

fn assistant_engine(config: &str, dialplan: &str) -> Engine {
    Engine::builder()
        .config(config)
        .dialplans(&[("council.toml", dialplan)])
        .start()
}

/// Where the caller's question ends and the answer to it can start: the
/// short greeting has finished by then.
const QUESTION_AT_MS: u32 = 4_500;

#[test]
fn backchannels_a_cough_and_a_click_do_not_stop_the_answer() {
    let Some((_serial, dir)) =
        start_call_test("backchannels_a_cough_and_a_click_do_not_stop_the_answer")
    else {
        return;
    };
    let config = short_greeting_config(dir.path());
    let question = spoken_8k(dir.path(), "When is my bin collection day?");
    let question_end = QUESTION_AT_MS + (question.len() / 8) as u32;
    // Each sound may hold the answer for up to MAX_HOLD (3 s) while its
    // words are recognised; on a busy machine that is the time it takes, so
    // the call lasts long enough for the answer with every sound held.
    let mut track = CallerTrack::silent_for(question_end + 31_000);
    track.mix(QUESTION_AT_MS, &question, 1.0);
    // The answer (about 15 s) starts about a second after the question.
    let mm_hmm = spoken_8k(dir.path(), "Mm hmm.");
    let yeah = spoken_8k(dir.path(), "Yeah.");
    track
        .mix(question_end + 2_500, &mm_hmm, 0.8)
        .mix(question_end + 5_000, &cough(), 1.0)
        .mix(question_end + 7_000, &yeah, 0.8)
        .mix(question_end + 9_000, &click(), 1.0);
    let ulaw = track.write_ulaw(&dir.path().join("caller.ul"));
    let mut engine = assistant_engine(&config, ASSISTANT_DIALPLAN);
    // The answer (~15 s) is paused at each sound over it: 4 sounds, 3 s at most each.
    let talk_ms = question_end + 30_000;
    let run = call_with(&engine, &ulaw, talk_ms);
    assert_sipp_ok(&run, &engine, "backchannel call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let turns = turns(&engine);
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("bin_day")),
        "no bin_day answer: {turns:?}"
    );
    let actions = audit_actions(&engine);
    assert!(
        !actions.iter().any(|a| a == "barge_in"),
        "the answer was cut by a backchannel, cough or click: {actions:?}\n{turns:?}"
    );
    // The sounds were heard (the answer was held) and it carried on after them.
    assert!(
        engine.log().contains("the answer carries on"),
        "no sound over the answer was even noticed: {actions:?}"
    );
    // The end of the answer was really sent: transcribe Frontdoor's channel.
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let to_s = talk_ms as f32 / 1000.0;
    // From 10 s into the answer to the end of the call: the last sentence,
    // wherever the holds put it (the window stays under Whisper's 30 s).
    let heard = transcribe_channel(&recording, 1, to_s - 20.0, to_s);
    assert!(
        heard.contains("checker") || heard.contains("postcode") || heard.contains("website"),
        "the end of the answer was never sent: {heard:?}\n{}",
        engine.log()
    );
    engine.stop();
}

#[test]
fn frontdoors_own_echo_does_not_interrupt_it() {
    let Some((_serial, dir)) = start_call_test("frontdoors_own_echo_does_not_interrupt_it") else {
        return;
    };
    let config = short_greeting_config(dir.path());
    // The caller's phone returns Frontdoor's greeting 120 ms late at -10 dB
    // (sox does the level and the delay), then the caller asks a question.
    let greeting_wav = dir.path().join("greeting.wav");
    say_to_wav(SHORT_GREETING, &greeting_wav);
    let echo_wav = dir.path().join("echo.wav");
    let status = Command::new("sox")
        .arg(&greeting_wav)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&echo_wav)
        .args(["vol", "-10dB", "pad", "0.120", "0"])
        .status()
        .expect("sox");
    assert!(status.success());
    let (_, echo) = read_wav_channel(&echo_wav, 0);
    let echo: Vec<i16> = echo.iter().map(|s| (s * 32767.0) as i16).collect();
    let question = spoken_8k(dir.path(), "When is my bin collection day?");
    let question_at = (echo.len() / 8) as u32 + 1_000;
    let mut track = CallerTrack::silent_for(question_at + 10_000);
    track.mix(0, &echo, 1.0).mix(question_at, &question, 1.0);
    let ulaw = track.write_ulaw(&dir.path().join("caller.ul"));

    let mut engine = assistant_engine(&config, ASSISTANT_DIALPLAN);
    let run = call_with(&engine, &ulaw, track.len_ms());
    assert_sipp_ok(&run, &engine, "echo call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let actions = audit_actions(&engine);
    assert!(
        !actions.iter().any(|a| a == "barge_in"),
        "Frontdoor's own echo interrupted it: {actions:?}\n{}",
        engine.log()
    );
    let recording = resolve_recording(&engine, call.recording_path.as_deref().expect("recorded"));
    let greeting_heard = transcribe_channel(&recording, 1, 0.0, question_at as f32 / 1000.0);
    assert!(
        greeting_heard.contains("how can i help"),
        "the greeting did not play to its end: {greeting_heard:?}"
    );
    // The echo is not the caller, but the caller still is.
    let turns = turns(&engine);
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("bin_day")),
        "the question after the echo was not answered: {turns:?}"
    );
    assert!(
        !turns
            .iter()
            .any(|t| t.0 == "caller" && t.1.to_lowercase().contains("council")),
        "the echo was taken for the caller's words: {turns:?}"
    );
    engine.stop();
}

/// A call that sends an RFC 4733 key press (from SIPp's own capture) once the
/// greeting has started, then stays on the line for `-d`.
const UAC_DTMF_ZERO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_dtmf_zero">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SIPp caller" <sip:07700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:07700900123@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "SIPp caller" <sip:07700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:07700900123@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="1500"/>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_0.pcap"/></action></nop>
  <pause/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "SIPp caller" <sip:07700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:07700900123@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

#[test]
fn pressing_zero_reaches_the_request_for_a_person() {
    let test = "pressing_zero_reaches_the_request_for_a_person";
    let pcap = Path::new("/usr/share/sip-tester/dtmf_2833_0.pcap");
    if !peers_and_models(test) {
        return;
    }
    let _serial = one_call_at_a_time();
    if !pcap.is_file() {
        eprintln!(
            "*** SKIPPED {test}: SIPp's DTMF capture {} missing ***",
            pcap.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = short_greeting_config(dir.path());
    let scenario = dir.path().join("uac_dtmf_zero.xml");
    std::fs::write(&scenario, UAC_DTMF_ZERO).unwrap();
    let mut engine = assistant_engine(&config, ASSISTANT_DIALPLAN);
    let run = Sipp::new(scenario.to_str().unwrap(), &engine.sip_target())
        .args(["-m", "1", "-d", "4000"])
        .timeout(Duration::from_secs(60))
        .run();
    assert_sipp_ok(&run, &engine, "DTMF call");
    engine.wait_call_ended(run.call_ids.first().expect("call id"));
    let actions = audit_actions(&engine);
    let dtmf = actions.iter().position(|a| a == "dtmf");
    let person = actions
        .iter()
        .position(|a| a == "transfer_requested" || a == "escalate");
    assert!(
        dtmf.is_some() && person.is_some() && dtmf < person,
        "pressing 0 did not reach the request for a person: {actions:?}\n{}",
        engine.log()
    );
    engine.stop();
}

#[test]
fn silence_gets_a_reprompt_then_a_polite_goodbye() {
    let Some((_serial, dir)) = start_call_test("silence_gets_a_reprompt_then_a_polite_goodbye")
    else {
        return;
    };
    let config = short_greeting_config(dir.path());
    let dialplan = r#"
[[route]]
name = "council"
match.number = "*"
actions = [{ assistant = { silence_reprompt_secs = 3, max_reprompts = 1 } }]
"#;
    let silence = CallerTrack::silent_for(2_000).write_ulaw(&dir.path().join("silence.ul"));
    let mut engine = assistant_engine(&config, dialplan);
    let started = std::time::Instant::now();
    // The caller says nothing and waits for Frontdoor to hang up.
    let run = Sipp::new("uac_remote_bye.xml", &engine.sip_target())
        .audio(&silence)
        .args(["-m", "1"])
        .timeout(Duration::from_secs(60))
        .run();
    assert_sipp_ok(&run, &engine, "silent call");
    let elapsed = started.elapsed();
    engine.wait_call_ended(run.call_ids.first().expect("call id"));
    let actions = audit_actions(&engine);
    let reprompt = actions.iter().position(|a| a == "reprompt");
    let hangup = actions.iter().position(|a| a == "hangup");
    assert!(
        reprompt.is_some() && hangup.is_some() && reprompt < hangup,
        "expected a re-prompt, then the goodbye: {actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "reprompt").count(),
        1,
        "max_reprompts = 1: {actions:?}"
    );
    // Greeting (3 s) + 3 s + re-prompt (5 s) + 3 s + goodbye (5 s), with slack.
    assert!(
        elapsed < Duration::from_secs(40),
        "the silent call lasted {elapsed:?}"
    );
    engine.stop();
}

#[test]
fn caller_hanging_up_mid_answer_tears_down_cleanly() {
    let Some((_serial, dir)) = start_call_test("caller_hanging_up_mid_answer_tears_down_cleanly")
    else {
        return;
    };
    let config = short_greeting_config(dir.path());
    let question = spoken_8k(dir.path(), "When is my bin collection day?");
    let mut track = CallerTrack::silent_for(QUESTION_AT_MS + 20_000);
    track.mix(QUESTION_AT_MS, &question, 1.0);
    let ulaw = track.write_ulaw(&dir.path().join("caller.ul"));
    let mut engine = assistant_engine(&config, ASSISTANT_DIALPLAN);
    // BYE about three seconds into the 15 s answer.
    let hang_up_at = QUESTION_AT_MS + (question.len() / 8) as u32 + 4_000;
    let run = call_with(&engine, &ulaw, hang_up_at);
    assert_sipp_ok(&run, &engine, "hang-up call");
    let call = engine.wait_call_ended(run.call_ids.first().expect("call id"));
    assert!(call.is_ended());
    let turns = turns(&engine);
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "assistant" && t.2.as_deref() == Some("bin_day")),
        "the call was not mid-answer when it ended: {turns:?}"
    );
    engine.assert_alive("after the caller hung up mid-answer");
    // A second call on the same engine still works: nothing was left stuck.
    let again = call_with(&engine, &ulaw, 2_000);
    assert_sipp_ok(&again, &engine, "call after the hang-up");
    engine.stop();
    let log = engine.log();
    assert!(
        !log.contains("panicked") && !log.contains("ERROR"),
        "teardown was not clean:\n{log}"
    );
}

/// The answer can be worked out (and its synthesis started) while the caller
/// pauses, but it is spoken only if the turn ends with exactly those words: a
/// caller who pauses mid-request and goes on is answered on the whole request.
#[test]
fn a_caller_who_pauses_mid_request_is_answered_on_the_whole_request() {
    let Some((_serial, dir)) =
        start_call_test("a_caller_who_pauses_mid_request_is_answered_on_the_whole_request")
    else {
        return;
    };
    let config = short_greeting_config(dir.path());
    let start = spoken_8k(dir.path(), "Um, I was wondering about");
    let rest = spoken_8k(dir.path(), "my bin collection day, please.");
    // 300 ms between the two, plus the voice's own trailing quiet: longer
    // than the pause after which the turn so far is recognised, shorter than
    // the silence that ends an incomplete turn.
    let rest_at = QUESTION_AT_MS + (start.len() / 8) as u32 + 300;
    let question_end = rest_at + (rest.len() / 8) as u32;
    let mut track = CallerTrack::silent_for(question_end + 9_000);
    track
        .mix(QUESTION_AT_MS, &start, 1.0)
        .mix(rest_at, &rest, 1.0);
    let ulaw = track.write_ulaw(&dir.path().join("caller.ul"));
    let mut engine = assistant_engine(&config, ASSISTANT_DIALPLAN);
    let run = call_with(&engine, &ulaw, question_end + 8_000);
    assert_sipp_ok(&run, &engine, "mid-request pause call");
    engine.wait_call_ended(run.call_ids.first().expect("call id"));

    let turns = turns(&engine);
    let caller: Vec<_> = turns.iter().filter(|t| t.0 == "caller").collect();
    assert_eq!(
        caller.len(),
        1,
        "the pause split the request: {turns:?}\n{}",
        engine.log()
    );
    // Words from both sides of the pause, in one turn. ("bin" itself is
    // not asserted: tiny.en once heard "then" for it in a loaded CI run, and
    // recognition accuracy is measured in asr_wer; the answer below shows
    // the request was understood.)
    let heard = caller[0].1.to_lowercase();
    assert!(
        heard.contains("wondering") && heard.contains("collection"),
        "the whole request was not recognised: {turns:?}"
    );
    assert!(
        heard.matches("collection").count() == 1,
        "the request was written twice: {turns:?}"
    );
    // The greeting, then one answer: the one to the whole request.
    let answers: Vec<_> = turns
        .iter()
        .filter(|t| t.0 == "assistant")
        .skip(1)
        .collect();
    assert!(
        answers.len() == 1 && answers[0].2.as_deref() == Some("bin_day"),
        "an answer to the words before the pause was spoken: {turns:?}\n{}",
        engine.log()
    );
    engine.stop();
}
