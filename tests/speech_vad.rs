//! Silero VAD on real recorded speech, silence and noise, through the
//! endpoint and barge-in detectors.

#[path = "speech_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use frontdoor::call::listener::{Listener, ListenerEvent};
use frontdoor::speech::{
    BargeInConfig, BargeInDetector, EndpointConfig, EndpointDetector, EndpointEvent, SileroVad,
    SileroVadModel, VadWindow,
};

/// 20 ms at 8 kHz: what the media layer hands over.
const FRAME: usize = 160;

fn model() -> Option<Arc<SileroVadModel>> {
    let paths = support::models()?;
    Some(SileroVadModel::load(&paths.silero_vad).expect("Silero loads"))
}

/// Runs audio through a fresh per-call VAD, frame by frame.
fn windows(model: &Arc<SileroVadModel>, audio: &[i16]) -> Vec<VadWindow> {
    let mut vad = SileroVad::new(Arc::clone(model));
    let mut out = Vec::new();
    for frame in audio.chunks(FRAME) {
        if let Some(window) = vad.push_frame(frame).expect("inference") {
            out.push(window);
        }
    }
    out
}

fn speech_8k() -> Vec<i16> {
    let (samples, rate) = support::read_wav(&support::fixture("speech_8k.wav"));
    assert_eq!(rate, 8_000);
    samples
}

#[test]
fn windows_are_32ms_with_stream_timestamps() {
    let Some(model) = model() else { return };
    let audio = vec![0i16; 8_000];
    let found = windows(&model, &audio);
    assert_eq!(found.len(), 8_000 / 256);
    assert_eq!(found[0].start, Duration::ZERO);
    assert_eq!(found[1].start, Duration::from_millis(32));
    assert_eq!(found[1].end, Duration::from_millis(64));
}

#[test]
fn real_speech_is_found_between_silences() {
    let Some(model) = model() else { return };
    let lead_in = 8_000; // 1 s
    let mut audio = vec![0i16; lead_in];
    let speech = speech_8k();
    audio.extend_from_slice(&speech);
    audio.extend(vec![0i16; 8_000 * 2]);
    let found = windows(&model, &audio);
    let speech_end = Duration::from_millis(((lead_in + speech.len()) / 8) as u64);

    let speechy: Vec<&VadWindow> = found.iter().filter(|w| w.probability > 0.5).collect();
    assert!(
        speechy.len() * 32 > 1_500,
        "only {} ms of speech found in 3 s",
        speechy.len() * 32
    );
    assert!(speechy.iter().all(|w| w.start >= Duration::from_millis(900)
        && w.end <= speech_end + Duration::from_millis(300)));

    let mut detector = EndpointDetector::new(EndpointConfig::default());
    let events: Vec<EndpointEvent> = found.iter().filter_map(|w| detector.observe(*w)).collect();
    let Some(EndpointEvent::SpeechStarted { onset, audio_from }) = events.first().copied() else {
        panic!("no speech start in {events:?}");
    };
    assert!(
        onset >= Duration::from_millis(900) && onset < Duration::from_millis(1_500),
        "onset {onset:?}"
    );
    assert_eq!(audio_from, onset - Duration::from_millis(200));
    let Some(EndpointEvent::EndOfTurn {
        speech_end: end,
        detected_at,
        ..
    }) = events.last().copied()
    else {
        panic!("no end of turn in {events:?}");
    };
    assert!(
        end <= speech_end + Duration::from_millis(200),
        "speech end {end:?}"
    );
    assert!(detected_at >= end + Duration::from_millis(700));
}

#[test]
fn silence_and_white_noise_are_not_speech() {
    let Some(model) = model() else { return };
    let silence = vec![0i16; 8_000 * 3];
    // -20 dBFS of white noise: a hissy line.
    let noise = support::white_noise(8_000 * 3, 3_300.0 * 1.7, 7);
    for (name, audio) in [("silence", silence), ("white noise", noise)] {
        let found = windows(&model, &audio);
        let max = found.iter().map(|w| w.probability).fold(0.0f32, f32::max);
        let mut detector = EndpointDetector::new(EndpointConfig::default());
        let events: Vec<_> = found.iter().filter_map(|w| detector.observe(*w)).collect();
        assert!(events.is_empty(), "{name}: {events:?} (max p {max})");
        let mut barge_in = BargeInDetector::new(BargeInConfig::default());
        barge_in.set_bot_speaking(true);
        assert!(
            found.iter().all(|w| barge_in.observe(*w).is_none()),
            "{name} barged in"
        );
    }
}

#[test]
fn speech_over_the_prompt_barges_in_near_its_onset() {
    let Some(model) = model() else { return };
    let mut audio = vec![0i16; 8_000 * 3 / 2];
    audio.extend_from_slice(&speech_8k());
    let found = windows(&model, &audio);
    let mut detector = BargeInDetector::new(BargeInConfig::default());
    detector.set_bot_speaking(true);
    let events: Vec<_> = found.iter().filter_map(|w| detector.observe(*w)).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let onset = events[0].onset;
    assert!(
        onset >= Duration::from_millis(1_400) && onset < Duration::from_millis(1_900),
        "onset {onset:?}"
    );
    let delay = events[0].detected_at - onset;
    assert!(
        delay < Duration::from_millis(400),
        "barge-in took {delay:?} after onset"
    );
}

#[test]
fn calls_keep_separate_state_on_a_shared_model() {
    let Some(model) = model() else { return };
    let speech = speech_8k();
    let alone = windows(&model, &speech);
    // Interleave a second call's silence between the first call's frames.
    let mut first = SileroVad::new(Arc::clone(&model));
    let mut second = SileroVad::new(Arc::clone(&model));
    let mut interleaved = Vec::new();
    for frame in speech.chunks(FRAME) {
        if let Some(w) = first.push_frame(frame).unwrap() {
            interleaved.push(w);
        }
        second.push_frame(&[0i16; FRAME]).unwrap();
    }
    assert_eq!(alone.len(), interleaved.len());
    for (a, b) in alone.iter().zip(&interleaved) {
        assert!((a.probability - b.probability).abs() < 1e-5);
    }
}

/// Feeds audio to a call's listener at a pace its input queue keeps up with.
fn feed(listener: &mut Listener, audio: &[i16]) {
    for chunk in audio.chunks(FRAME) {
        let mut frame = [0i16; FRAME];
        frame[..chunk.len()].copy_from_slice(chunk);
        listener.hear(&frame, 0);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The next short burst the listener reports, skipping the pause before it.
fn next_short_burst(listener: &mut Listener) -> u32 {
    loop {
        match listener.events.blocking_recv().expect("listener alive") {
            ListenerEvent::ShortBurst { burst, .. } => return burst,
            ListenerEvent::Pause { .. } | ListenerEvent::SpeechStarted { .. } => {}
            ListenerEvent::TurnPausing { .. } | ListenerEvent::TurnInProgress { .. } => {}
            other => panic!("expected a short burst, got {other:?}"),
        }
    }
}

fn next_verdict(listener: &mut Listener) -> (u32, bool) {
    loop {
        match listener.events.blocking_recv().expect("listener alive") {
            ListenerEvent::VerdictTaken { burst, accepted } => return (burst, accepted),
            ListenerEvent::ShortBurst { .. } => panic!("a second burst before the verdict"),
            _ => {}
        }
    }
}

/// A short burst of real speech over Frontdoor (400 ms from the onset of
/// speech in the fixture), and a second of speech to go on with.
fn short_burst(model: &Arc<SileroVadModel>) -> (Vec<i16>, Vec<i16>) {
    let speech = speech_8k();
    let onset = windows(model, &speech)
        .iter()
        .find(|w| w.probability > 0.8)
        .map(|w| w.start)
        .expect("speech in the fixture");
    let from = (onset.as_millis() as usize) * 8;
    let burst = speech[from..from + 3_200].to_vec();
    // The caller going on: the same speech again, longer.
    let more = speech[from..from + 8_000].to_vec();
    (burst, more)
}

/// The pipeline acts on a short burst's verdict only once the listener has
/// taken it. A caller who goes on talking after the burst makes the verdict
/// stale: the listener refuses it, so Frontdoor neither resumes over them
/// (a backchannel verdict) nor answers the first words of their turn.
#[test]
fn a_verdict_on_a_burst_the_caller_talked_past_is_refused() {
    let Some(model) = model() else { return };
    let (burst_audio, rest) = short_burst(&model);
    let spawn = || {
        let mut listener = Listener::spawn(
            Arc::clone(&model),
            EndpointConfig::default(),
            BargeInConfig::default(),
            "verdict-test",
        )
        .expect("listener thread");
        listener.bot_speaking(true);
        feed(&mut listener, &[0i16; 8_000]);
        feed(&mut listener, &burst_audio);
        feed(&mut listener, &[0i16; 3_200]);
        listener
    };

    // Verdict straight after the burst: taken.
    let mut listener = spawn();
    let burst = next_short_burst(&mut listener);
    listener.verdict(burst, true);
    assert_eq!(next_verdict(&mut listener), (burst, true));

    // The caller went on before the verdict came: refused.
    let mut listener = spawn();
    let burst = next_short_burst(&mut listener);
    feed(&mut listener, &rest);
    listener.verdict(burst, true);
    assert_eq!(next_verdict(&mut listener), (burst, false));
}
