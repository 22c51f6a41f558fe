//! Transcripts of a bridged call: what the caller and the agent say to each
//! other, for the live view and the record.
//!
//! While a caller talks with an agent the assistant is gone, but the
//! conversation still belongs in the call's transcript. Each direction gets
//! an ear of its own (a [`Listener`]: Silero VAD and end-of-turn detection on
//! its own thread, with the echo gate fed by what the bridge sends that way),
//! and each utterance is recognised at [`JobClass::Background`] priority:
//! after every assistant turn on every call, from a bounded backlog that
//! drops its oldest audio under load. Nobody waits for these transcripts, so
//! they must never slow down a caller who is waiting for an answer.
//!
//! The bridge only hands frames over (no allocation, no await); a task of
//! its own collects utterances, recognises them and writes the turns, so the
//! last words are kept even when the bridge future is dropped on a hang-up.
//!
//! [`JobClass::Background`]: crate::asr::JobClass::Background

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::assistant::CallLog;
use super::listener::{Listener, ListenerEvent};
use crate::asr::{AsrError, AsrPool, Transcript, Utterance};
use crate::events::EventBus;
use crate::governance::Redactor;
use crate::media::Frame;
use crate::speech::{BargeInConfig, EndpointConfig, SileroVadModel};
use crate::store::StoreHandle;

/// Who is speaking on a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Caller,
    Agent,
}

impl Speaker {
    /// The speaker as transcripts name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Agent => "agent",
        }
    }
}

/// Longest single utterance: a monologue is cut into pieces Whisper takes
/// whole (it accepts 30 s, and pre-roll and tail are added to this).
const MAX_UTTERANCE: Duration = Duration::from_secs(20);
/// After the bridge ends, how long the last utterances may take to be
/// recognised before they are given up.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// What a bridged call needs to be transcribed; cheap to clone.
#[derive(Clone)]
pub struct BridgeTranscriber {
    asr: Arc<AsrPool>,
    vad: Arc<SileroVadModel>,
}

impl BridgeTranscriber {
    pub fn new(asr: Arc<AsrPool>, vad: Arc<SileroVadModel>) -> BridgeTranscriber {
        BridgeTranscriber { asr, vad }
    }

    /// Starts transcribing a bridge; its turns go to `log`'s call. `None`
    /// (logged) when a listener thread cannot start: the bridge goes on
    /// without a transcript.
    pub fn start(&self, log: &CallLog<'_>) -> Option<BridgeEars> {
        let endpoint = EndpointConfig {
            max_turn: MAX_UTTERANCE,
            ..EndpointConfig::default()
        };
        let ear = |speaker: Speaker| {
            Listener::spawn(
                self.vad.clone(),
                endpoint.clone(),
                BargeInConfig::default(),
                &format!("{}-{}", speaker.as_str(), log.call_id),
            )
        };
        let (mut caller, mut agent) = match (ear(Speaker::Caller), ear(Speaker::Agent)) {
            (Ok(caller), Ok(agent)) => (caller, agent),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot start listening to the bridge; it is not transcribed");
                return None;
            }
        };
        let sink = TurnSink {
            store: log.store.clone(),
            events: log.events.clone(),
            call_id: log.call_id.to_string(),
            redactor: *log.redactor,
        };
        tokio::spawn(transcribe_bridge(
            self.asr.clone(),
            caller.take_events(),
            agent.take_events(),
            sink,
        ));
        Some(BridgeEars { caller, agent })
    }
}

/// The bridge's side of the transcription: frames in. Dropping it ends the
/// turns in progress, which are still recognised and recorded.
pub struct BridgeEars {
    caller: Listener,
    agent: Listener,
}

impl BridgeEars {
    /// A frame `speaker` said, with the loudest sample the bridge sent
    /// towards them over the echo tail (their phone may echo it back).
    pub fn hear(&mut self, speaker: Speaker, frame: &Frame, echo_reference_peak: u16) {
        match speaker {
            Speaker::Caller => self.caller.hear(frame, echo_reference_peak),
            Speaker::Agent => self.agent.hear(frame, echo_reference_peak),
        }
    }
}

impl Drop for BridgeEars {
    fn drop(&mut self) {
        // Queued before the listeners' inputs close, so each thread reports
        // its last utterance before it ends.
        self.caller.finish_turn();
        self.agent.finish_turn();
    }
}

/// Where a bridge's turns are written; owned, so the transcription task
/// outlives the bridge future.
struct TurnSink {
    store: StoreHandle,
    events: EventBus,
    call_id: String,
    redactor: Redactor,
}

impl TurnSink {
    async fn record(&self, speaker: Speaker, text: &str) {
        let log = CallLog {
            store: &self.store,
            events: &self.events,
            call_id: &self.call_id,
            redactor: &self.redactor,
            recent: Default::default(),
        };
        log.turn(speaker.as_str(), text, None).await;
    }
}

type Recognised = (Speaker, Result<Transcript, AsrError>);

/// Collects both sides' utterances, recognises them in the background and
/// records each transcript, until both ears have closed and the last
/// utterances are recognised (or [`DRAIN_LIMIT`] passes).
async fn transcribe_bridge(
    asr: Arc<AsrPool>,
    mut caller: mpsc::Receiver<ListenerEvent>,
    mut agent: mpsc::Receiver<ListenerEvent>,
    sink: TurnSink,
) {
    let mut pending: JoinSet<Recognised> = JoinSet::new();
    let (mut caller_open, mut agent_open) = (true, true);
    while caller_open || agent_open {
        tokio::select! {
            event = caller.recv(), if caller_open => match event {
                Some(event) => submit(&asr, &mut pending, Speaker::Caller, event),
                None => caller_open = false,
            },
            event = agent.recv(), if agent_open => match event {
                Some(event) => submit(&asr, &mut pending, Speaker::Agent, event),
                None => agent_open = false,
            },
            Some(done) = pending.join_next(), if !pending.is_empty() => {
                record(&sink, done).await;
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(done) = pending.join_next().await {
            record(&sink, done).await;
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            call_id = %sink.call_id,
            left = pending.len(),
            "bridge transcripts still unrecognised after the call; given up"
        );
    }
}

/// Sends an utterance to the recognisers; other listener events are about
/// the assistant's turn-taking and mean nothing on a bridge.
fn submit(
    asr: &Arc<AsrPool>,
    pending: &mut JoinSet<Recognised>,
    speaker: Speaker,
    event: ListenerEvent,
) {
    let ListenerEvent::EndOfTurn { audio, .. } = event else {
        return;
    };
    if audio.is_empty() {
        return;
    }
    let asr = asr.clone();
    let utterance = Utterance::from_telephony_i16(&audio);
    pending.spawn(async move { (speaker, asr.submit_background(utterance).await) });
}

async fn record(sink: &TurnSink, done: Result<Recognised, tokio::task::JoinError>) {
    match done {
        Ok((speaker, Ok(transcript))) => {
            let text = transcript.text.trim();
            if is_words(text) {
                sink.record(speaker, text).await;
            }
        }
        // Load shedding (counted by the pool) or a clip too short for
        // Whisper: a gap in the record, not an error on the call.
        Ok((speaker, Err(error))) => {
            debug!(speaker = speaker.as_str(), %error, "bridge utterance not transcribed")
        }
        Err(error) => warn!(%error, "bridge transcription task failed"),
    }
}

/// Whether a transcript has words in it: Whisper renders noise as
/// punctuation or bracketed tags ("[BLANK_AUDIO]", "(music)").
pub fn is_words(text: &str) -> bool {
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            c if depth <= 0 && c.is_alphanumeric() => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_are_named_as_the_dashboard_expects() {
        assert_eq!(Speaker::Caller.as_str(), "caller");
        assert_eq!(Speaker::Agent.as_str(), "agent");
    }

    /// 8 kHz 16-bit samples of a fixture of any rate.
    fn fixture_8k(name: &str) -> Vec<i16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let wide = crate::asr::audio::read_wav_16k_mono(&path).expect("fixture");
        crate::asr::audio::resample(&wide, 16_000, 8_000)
            .expect("resample")
            .iter()
            .map(|&s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// A caller and an agent take turns on a bridge: each is transcribed,
    /// named as the right speaker, with models from the default cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bridged_conversation_is_transcribed_for_both_speakers() {
        let models = crate::config::Config::default().model_set();
        if !models.missing_files().is_empty() {
            assert!(std::env::var_os("CI").is_none(), "models missing under CI");
            eprintln!("*** SKIPPED: run `frontdoor models fetch` ***");
            return;
        }
        crate::speech::init_onnxruntime(&models.onnxruntime_lib).expect("ONNX Runtime");
        let vad = SileroVadModel::load(&models.silero_vad).expect("Silero");
        let whisper =
            crate::asr::AsrModel::load(&models.whisper_ggml, Default::default()).expect("Whisper");
        let asr = Arc::new(
            AsrPool::start(
                &whisper,
                crate::asr::AsrPoolConfig {
                    workers: 1,
                    queue_capacity: 2,
                    on_job_done: None,
                    threads_when_alone: 1,
                    shed_prompt_when_busy: true,
                },
            )
            .expect("pool"),
        );
        let data = tempfile::tempdir().expect("tempdir");
        let store =
            StoreHandle::spawn(crate::store::SqliteStore::open(data.path()).expect("store"));
        let events = EventBus::new();
        let mut heard = events.subscribe();
        let redactor = Redactor::none();
        let log = CallLog {
            store: &store,
            events: &events,
            call_id: "bridge-test",
            redactor: &redactor,
            recent: Default::default(),
        };

        let caller_says = fixture_8k("speech_8k.wav");
        let agent_says = fixture_8k("greeting_16k.wav");
        // Caller from 0.5 s, agent from 1 s after the caller stops, then a
        // moment of silence on both sides.
        let caller_from = 4_000;
        let agent_from = caller_from + caller_says.len() + 8_000;
        let total = agent_from + agent_says.len() + 12_000;
        let sample = |audio: &[i16], from: usize, at: usize| {
            at.checked_sub(from)
                .and_then(|i| audio.get(i))
                .copied()
                .unwrap_or(0)
        };
        let mut ears = BridgeTranscriber::new(asr.clone(), vad)
            .start(&log)
            .expect("listeners start");
        let frame_samples = crate::media::FRAME_SAMPLES;
        for start in (0..total).step_by(frame_samples) {
            let mut caller: Frame = [0; crate::media::FRAME_SAMPLES];
            let mut agent: Frame = [0; crate::media::FRAME_SAMPLES];
            for i in 0..frame_samples {
                caller[i] = sample(&caller_says, caller_from, start + i);
                agent[i] = sample(&agent_says, agent_from, start + i);
            }
            ears.hear(Speaker::Caller, &caller, 0);
            ears.hear(Speaker::Agent, &agent, 0);
            // Faster than real time, slow enough for the listeners' queues.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(ears);

        let mut finals = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while finals.len() < 2 {
            let event = tokio::time::timeout_at(deadline, heard.recv())
                .await
                .expect("both transcripts within a minute")
                .expect("bus open");
            if let crate::events::CallEvent::Transcript {
                call_id,
                speaker,
                text,
                is_final,
                ..
            } = &*event
            {
                assert_eq!(call_id, "bridge-test");
                assert!(is_final, "bridge transcripts are final");
                finals.push((speaker.clone(), text.to_lowercase()));
            }
        }
        assert!(
            finals.iter().any(|(who, text)| who == "caller"
                && (text.contains("young") || text.contains("disposed"))),
            "{finals:?}"
        );
        assert!(
            finals
                .iter()
                .any(|(who, text)| who == "agent" && text.contains("council")),
            "{finals:?}"
        );
        let metrics = asr.metrics().snapshot();
        assert_eq!(metrics.background_dropped, 0);
        assert!(metrics.completed >= 2);
    }

    #[test]
    fn noise_tags_and_punctuation_are_not_words() {
        for noise in [
            "",
            " ",
            "...",
            "[BLANK_AUDIO]",
            "(music)",
            "[ Silence ]",
            "-",
        ] {
            assert!(!is_words(noise), "{noise:?}");
        }
        for words in ["Hello.", "(sighs) yes", "Council tax, please", "42"] {
            assert!(is_words(words), "{words:?}");
        }
    }
}
