//! baresip, a real softphone, calls the engine: it plays recorded speech as
//! its microphone and records what it hears. Proves audio flows both ways
//! through the real G.711/RTP path: Frontdoor's recording holds the caller's
//! speech, and the caller heard the greeting prompt.
//!
//! Needs `baresip` (Debian baresip-core) and `sox` (scripts/test-deps.sh).

mod common;

use std::time::Duration;

use common::baresip::Baresip;
use common::*;

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

    let mut baresip = Baresip::start(
        "<sip:07700900456@127.0.0.1>;regint=0;answermode=manual;audio_codecs=PCMU,PCMA",
        &source,
    );
    let reply = baresip.command("dial", &format!("sip:1000@127.0.0.1:{}", engine.sip_port));
    eprintln!("baresip dial reply: {reply}");
    assert!(
        baresip.wait_for_log_blocking("Call established", Duration::from_secs(10)),
        "baresip's call was not established:\n{}",
        baresip.log()
    );
    assert!(
        baresip.wait_for_log_blocking("terminated", Duration::from_secs(30)),
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
