//! Text to speech: a Piper voice run directly on ONNX Runtime.
//!
//! Audio comes out sentence by sentence, so the first sentence can play while
//! the next is synthesised. Inference runs on dedicated OS threads
//! ([`TtsWorkerPool`]), never on the async runtime, and every request can be
//! cancelled (barge-in): the flag is checked between sentences and ONNX
//! Runtime's terminate flag stops a sentence already running.

pub mod cache;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

pub use cache::{SentenceCache, SentenceCacheStats};
pub use store::{SentenceStore, StoreStats};

use super::normalize::normalize_for_speech;
use super::phonemize::{
    MAX_TEXT_CHARS, PhonemeIdMap, PhonemizedSentence, phonemize_text, split_sentences,
};
use super::resample::{resample, to_i16};
use super::{SpeechError, TELEPHONY_RATE, runtime};

/// Peak level each sentence is normalised to (about -1 dBFS), as Piper does,
/// so sentences sound equally loud.
const TARGET_PEAK: f32 = 0.9;
/// Piper normalises to full scale whatever the peak; near-silent output
/// (a lone "Hmm.") must not be boosted into noise.
const MAX_GAIN: f32 = 4.0;
/// A Piper `.onnx.json` is a few kB; anything huge is not a voice config.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// How a voice is run.
#[derive(Debug, Clone)]
pub struct PiperVoiceOptions {
    /// ONNX Runtime intra-op threads per session. One: the machine has few
    /// cores and several workers; two threads on a busy core run slower.
    pub intra_threads: usize,
    /// Sessions that can run at once (one per TTS worker). Each costs the
    /// model's weights in memory again (about 65 MB for a medium voice),
    /// less the pre-packed matrix weights, which the sessions share.
    pub sessions: usize,
    /// Speaker for multi-speaker voices (ignored by single-speaker ones).
    pub speaker_id: i64,
    /// Speaking rate: > 1 slower, < 1 faster. `None`: the voice's own.
    pub length_scale: Option<f32>,
    /// Variability of the voice (VITS noise). `None`: the voice's own; zero
    /// for both makes synthesis deterministic (tests, cached prompts).
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    /// Silence between sentences, in milliseconds.
    pub sentence_silence_ms: u32,
}

impl Default for PiperVoiceOptions {
    fn default() -> Self {
        Self {
            intra_threads: 1,
            sessions: 1,
            speaker_id: 0,
            length_scale: None,
            noise_scale: None,
            noise_w: None,
            sentence_silence_ms: 150,
        }
    }
}

/// What a Piper `.onnx.json` says about its model.
#[derive(Debug, Clone)]
struct VoiceConfig {
    sample_rate: u32,
    espeak_voice: String,
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
    num_speakers: u32,
    phoneme_ids: PhonemeIdMap,
}

impl VoiceConfig {
    fn load(path: &Path) -> Result<Self, SpeechError> {
        let invalid = |reason: String| SpeechError::VoiceConfig {
            path: path.to_path_buf(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| invalid(e.to_string()))?
            .len();
        if size > MAX_CONFIG_BYTES {
            return Err(invalid(format!(
                "{size} bytes is too large for a voice config"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let number = |pointer: &str, default: f64| {
            json.pointer(pointer)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(default)
        };
        let sample_rate = json
            .pointer("/audio/sample_rate")
            .and_then(serde_json::Value::as_u64)
            .filter(|rate| (8_000..=48_000).contains(rate))
            .ok_or_else(|| invalid("audio.sample_rate missing or out of range".into()))?;
        let phoneme_type = json
            .get("phoneme_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("espeak");
        if phoneme_type != "espeak" {
            return Err(invalid(format!(
                "phoneme_type {phoneme_type:?} is not supported (only espeak voices)"
            )));
        }
        let map = json
            .get("phoneme_id_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| invalid("phoneme_id_map missing".into()))?;
        Ok(Self {
            sample_rate: sample_rate as u32,
            espeak_voice: json
                .pointer("/espeak/voice")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("en-us")
                .to_string(),
            noise_scale: number("/inference/noise_scale", 0.667) as f32,
            length_scale: number("/inference/length_scale", 1.0) as f32,
            noise_w: number("/inference/noise_w", 0.8) as f32,
            num_speakers: json
                .get("num_speakers")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1)
                .min(u64::from(u32::MAX)) as u32,
            phoneme_ids: PhonemeIdMap::from_json(map).map_err(invalid)?,
        })
    }
}

/// A loaded Piper voice. Cheap to share (`Arc`); runs up to
/// [`PiperVoiceOptions::sessions`] syntheses at once.
pub struct PiperVoice {
    config: VoiceConfig,
    options: PiperVoiceOptions,
    sessions: runtime::SessionPool,
    /// For runs without a [`Cancellation`]: they release the arena too.
    run_options: RunOptions,
    model_path: PathBuf,
}

impl std::fmt::Debug for PiperVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoice")
            .field("model", &self.model_path)
            .field("sample_rate", &self.config.sample_rate)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// One synthesised sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct SpokenSentence {
    /// The words spoken (after normalisation), for transcripts and records.
    pub text: String,
    pub samples: Vec<i16>,
    pub sample_rate: u32,
}

/// Stops a synthesis: checked between sentences, and terminates the ONNX
/// Runtime run in progress.
pub struct Cancellation {
    cancelled: AtomicBool,
    run_options: RunOptions,
}

impl std::fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellation")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancellation {
    pub fn new() -> Result<Self, SpeechError> {
        runtime::ensure_initialised()?;
        Ok(Self {
            cancelled: AtomicBool::new(false),
            run_options: releasing_run_options()?,
        })
    }

    pub fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel)
            && let Err(error) = self.run_options.terminate()
        {
            tracing::warn!(%error, "could not terminate a TTS run; it stops after this sentence");
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

impl PiperVoice {
    /// What the sound of this voice at `rate` depends on, for a
    /// [`SentenceStore`]: the model file, its settings and the options that
    /// change the audio (not the number of sessions or threads).
    pub fn store_identity(&self, rate: u32) -> String {
        let (c, o) = (&self.config, &self.options);
        store::voice_identity(
            &self.model_path,
            // Not the phoneme map: a HashMap prints in a different order in
            // every process (it comes with the model file anyway).
            &format!(
                "{} Hz, espeak {}, scales {} {} {}, {} speakers; speaker {} length {:?} noise {:?} {:?}",
                c.sample_rate,
                c.espeak_voice,
                c.noise_scale,
                c.length_scale,
                c.noise_w,
                c.num_speakers,
                o.speaker_id,
                o.length_scale,
                o.noise_scale,
                o.noise_w
            ),
            rate,
        )
    }

    /// Loads a voice with default options (one session, one thread).
    pub fn load(onnx: &Path, config_json: &Path) -> Result<Self, SpeechError> {
        Self::load_with(onnx, config_json, PiperVoiceOptions::default())
    }

    pub fn load_with(
        onnx: &Path,
        config_json: &Path,
        options: PiperVoiceOptions,
    ) -> Result<Self, SpeechError> {
        if !onnx.is_file() {
            return Err(SpeechError::ModelNotFound {
                path: onnx.to_path_buf(),
            });
        }
        let config = VoiceConfig::load(config_json)?;
        runtime::ensure_initialised()?;
        let sessions = runtime::SessionPool::new(new_sessions(onnx, &options)?);
        Ok(Self {
            config,
            options,
            sessions,
            run_options: releasing_run_options()?,
            model_path: onnx.to_path_buf(),
        })
    }

    /// The rate the model speaks at (22 050 Hz for medium voices).
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Sentence by sentence at the voice's own rate.
    pub fn synthesize<'v>(
        &'v self,
        text: &str,
    ) -> impl Iterator<Item = Result<Vec<i16>, SpeechError>> + 'v {
        self.sentences(text, self.sample_rate(), None)
            .map(|sentence| sentence.map(|s| s.samples))
    }

    /// Sentence by sentence at 8 kHz, ready for G.711.
    pub fn synthesize_8k<'v>(
        &'v self,
        text: &str,
    ) -> impl Iterator<Item = Result<Vec<i16>, SpeechError>> + 'v {
        self.sentences(text, TELEPHONY_RATE, None)
            .map(|sentence| sentence.map(|s| s.samples))
    }

    /// Sentence by sentence at `rate`, with the words of each sentence; stops
    /// with [`SpeechError::Cancelled`] once `cancel` fires.
    pub fn sentences<'v>(
        &'v self,
        text: &str,
        rate: u32,
        cancel: Option<Arc<Cancellation>>,
    ) -> Sentences<'v> {
        let (pending, error) = match phonemize_text(text, &self.config.espeak_voice) {
            Ok(sentences) => (sentences.into_iter(), None),
            Err(error) => (Vec::new().into_iter(), Some(error)),
        };
        Sentences {
            voice: self,
            pending,
            error,
            rate,
            cancel,
        }
    }

    /// Everything at once at `rate`, sentences joined with the configured
    /// pause: for cached prompts and files.
    pub fn synthesize_all(&self, text: &str, rate: u32) -> Result<Vec<i16>, SpeechError> {
        let mut audio = Vec::new();
        for sentence in self.sentences(text, rate, None) {
            audio.extend_from_slice(&sentence?.samples);
        }
        Ok(audio)
    }

    fn synthesize_sentence(
        &self,
        sentence: &PhonemizedSentence,
        rate: u32,
        silence_after: bool,
        cancel: Option<&Cancellation>,
    ) -> Result<SpokenSentence, SpeechError> {
        let ids = self.config.phoneme_ids.ids_for(&sentence.phonemes);
        let mut audio = self.infer(ids, cancel)?;
        normalise_peak(&mut audio);
        let mut audio = resample(&audio, self.config.sample_rate, rate)?;
        trim_leading_silence(&mut audio, rate);
        if silence_after {
            let silence = rate as usize * self.options.sentence_silence_ms as usize / 1000;
            audio.resize(audio.len() + silence, 0.0);
        }
        Ok(SpokenSentence {
            text: sentence.text.clone(),
            samples: to_i16(&audio),
            sample_rate: rate,
        })
    }

    /// Runs the model on phoneme ids; f32 audio at the voice's rate.
    fn infer(&self, ids: Vec<i64>, cancel: Option<&Cancellation>) -> Result<Vec<f32>, SpeechError> {
        let length = ids.len();
        let scales = vec![
            self.options.noise_scale.unwrap_or(self.config.noise_scale),
            self.options
                .length_scale
                .unwrap_or(self.config.length_scale),
            self.options.noise_w.unwrap_or(self.config.noise_w),
        ];
        let input = Tensor::from_array(([1usize, length], ids))?;
        let lengths = Tensor::from_array(([1usize], vec![length as i64]))?;
        let scales = Tensor::from_array(([3usize], scales))?;
        let mut session = self.lock_session();
        let mut inputs = ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
        ];
        if self.config.num_speakers > 1 {
            let speaker = Tensor::from_array(([1usize], vec![self.options.speaker_id]))?;
            inputs.push(("sid".into(), speaker.into()));
        }
        let outputs = match cancel {
            Some(cancel) => {
                if cancel.is_cancelled() {
                    return Err(SpeechError::Cancelled);
                }
                session
                    .run_with_options(inputs, &cancel.run_options)
                    .map_err(|error| {
                        if cancel.is_cancelled() {
                            SpeechError::Cancelled
                        } else {
                            error.into()
                        }
                    })?
            }
            None => session.run_with_options(inputs, &self.run_options)?,
        };
        let (_, audio) = outputs[0].try_extract_tensor::<f32>()?;
        Ok(audio.to_vec())
    }

    /// A free session if there is one, else wait for the next in turn.
    fn lock_session(&self) -> parking_lot::MutexGuard<'_, Session> {
        self.sessions.lock()
    }
}

/// A sentence's working buffers grow with its length (170 MB for the
/// greeting's longest), so every run gives them back when it ends.
fn new_sessions(onnx: &Path, options: &PiperVoiceOptions) -> Result<Vec<Session>, SpeechError> {
    runtime::open_sessions(
        onnx,
        options.sessions,
        options.intra_threads,
        runtime::RunMemory::VariableShapesReleasedAfterRun,
    )
    .map_err(|reason| SpeechError::ModelLoad {
        path: onnx.to_path_buf(),
        reason,
    })
}

fn releasing_run_options() -> Result<RunOptions, SpeechError> {
    let mut options = RunOptions::new()?;
    runtime::release_arena_after_run(&mut options)?;
    Ok(options)
}

fn normalise_peak(audio: &mut [f32]) {
    let peak = audio.iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
    if peak > 0.0 && peak.is_finite() {
        let gain = (TARGET_PEAK / peak).min(MAX_GAIN);
        audio.iter_mut().for_each(|s| *s *= gain);
    }
}

/// Iterator over a text's sentences; each is synthesised when asked for.
pub struct Sentences<'v> {
    voice: &'v PiperVoice,
    pending: std::vec::IntoIter<PhonemizedSentence>,
    error: Option<SpeechError>,
    rate: u32,
    cancel: Option<Arc<Cancellation>>,
}

impl Iterator for Sentences<'_> {
    type Item = Result<SpokenSentence, SpeechError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.error.take() {
            self.pending = Vec::new().into_iter();
            return Some(Err(error));
        }
        let sentence = self.pending.next()?;
        let silence_after = self.pending.len() > 0;
        let result = self.voice.synthesize_sentence(
            &sentence,
            self.rate,
            silence_after,
            self.cancel.as_deref(),
        );
        if result.is_err() {
            // After a failure (or cancellation) nothing more is spoken.
            self.pending = Vec::new().into_iter();
        }
        Some(result)
    }
}

/// Writes `text` spoken by `voice` to a mono 16-bit WAV at `rate`
/// (`frontdoor say "text" -o out.wav`).
pub fn say_to_wav(
    voice: &PiperVoice,
    text: &str,
    out: &Path,
    rate: u32,
) -> Result<(), SpeechError> {
    let audio = voice.synthesize_all(text, rate)?;
    let failed = |reason: String| SpeechError::WavWrite {
        path: out.to_path_buf(),
        reason,
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(out, spec).map_err(|e| failed(e.to_string()))?;
    for sample in audio {
        writer
            .write_sample(sample)
            .map_err(|e| failed(e.to_string()))?;
    }
    writer.finalize().map_err(|e| failed(e.to_string()))
}

/// Sizing of the [`TtsWorkerPool`].
#[derive(Debug, Clone)]
pub struct TtsPoolConfig {
    /// Worker threads; give the voice as many sessions.
    pub workers: usize,
    /// Requests waiting for a worker before [`TtsWorkerPool::try_speak`]
    /// reports [`SpeechError::QueueFull`] (back-pressure: the caller plays a
    /// holding phrase from the [`PromptCache`] instead).
    pub queue_capacity: usize,
    /// Rate of the audio streamed back.
    pub output_rate: u32,
    /// Bytes of synthesised sentences kept for reuse ([`SentenceCache`]);
    /// 0 turns the cache off. 16 MiB is about 17 minutes of 8 kHz speech:
    /// every fixed sentence of the shipped knowledge base several times over.
    pub sentence_cache_bytes: usize,
    /// Where sentences synthesised ahead of time are also kept on disk
    /// ([`SentenceStore`]), so a restarted engine has them at once. `None`:
    /// memory only.
    pub sentence_store: Option<Arc<SentenceStore>>,
}

impl Default for TtsPoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_capacity: 32,
            output_rate: TELEPHONY_RATE,
            sentence_cache_bytes: 16 * 1024 * 1024,
            sentence_store: None,
        }
    }
}

/// One sentence of a streamed answer.
#[derive(Debug, Clone)]
pub struct TtsChunk {
    pub sentence_index: usize,
    pub text: String,
    pub samples: Arc<[i16]>,
    pub sample_rate: u32,
}

struct TtsJob {
    text: String,
    /// Leading sentences already sent from the cache when the job was
    /// queued, by their words: the worker skips them.
    already_sent: Vec<String>,
    /// For the time-to-first-audio histogram.
    queued_at: std::time::Instant,
    cancel: Arc<Cancellation>,
    /// Unbounded, yet bounded by the request: at most one chunk per sentence
    /// of a text capped at `MAX_TEXT_CHARS`. A bounded channel would let a
    /// slow consumer stall a worker that other calls are waiting for.
    chunks: mpsc::UnboundedSender<Result<TtsChunk, SpeechError>>,
}

/// What the workers' queue carries.
enum Work {
    Speak(TtsJob),
    /// Sentences are waiting to be synthesised ahead of time.
    Wake,
}

/// The audio of one request, arriving sentence by sentence. Dropping it
/// cancels the request.
#[derive(Debug)]
pub struct TtsStream {
    chunks: mpsc::UnboundedReceiver<Result<TtsChunk, SpeechError>>,
    cancel: Arc<Cancellation>,
}

impl TtsStream {
    /// The next sentence; `None` when the answer is complete (or cancelled).
    pub async fn next(&mut self) -> Option<Result<TtsChunk, SpeechError>> {
        self.chunks.recv().await
    }

    /// For threads outside the async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<TtsChunk, SpeechError>> {
        self.chunks.blocking_recv()
    }

    /// Stops synthesis promptly (barge-in) and discards what was not yet read.
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        self.chunks.close();
        while self.chunks.try_recv().is_ok() {}
    }

    /// A handle that cancels this request from elsewhere.
    pub fn canceller(&self) -> Arc<Cancellation> {
        Arc::clone(&self.cancel)
    }
}

impl Drop for TtsStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// [`SentenceStore`] kind of one sentence synthesised on its own.
const SENTENCE: &str = "sentence";
/// [`SentenceStore`] kind of a whole prompt ([`PromptCache`]).
const PROMPT: &str = "prompt";

/// Texts waiting to be synthesised ahead of time: bounds what
/// [`TtsWorkerPool::presynthesize`] accepts.
const MAX_BACKGROUND_TEXTS: usize = 1_024;
/// How often a worker that has background work but is told the machine is
/// busy looks again (a live request wakes it at once).
const BACKGROUND_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Ahead-of-time synthesis: one text, and whether only its first sentence
/// is wanted now (first sentences are what a caller waits for).
struct BackgroundText {
    text: String,
    first_only: bool,
}

/// Whether background synthesis may use a core now.
pub type IdleCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the workers and the submitting side share.
struct PoolShared {
    cache: SentenceCache,
    store: Option<Arc<SentenceStore>>,
    background: Mutex<VecDeque<BackgroundText>>,
    background_idle: Mutex<Option<IdleCheck>>,
    /// The background sentence being synthesised: a live request cancels it
    /// (it is put back and done later) so a caller never waits behind it.
    background_run: Mutex<Option<Arc<Cancellation>>>,
    presynthesis_started: AtomicBool,
    /// Worker threads, to wake one parked while background work waits.
    threads: Mutex<Vec<std::thread::Thread>>,
    output_rate: u32,
    /// The voice's pause between sentences at the output rate.
    pause_samples: usize,
}

impl PoolShared {
    /// A live request arrived: background synthesis gives way.
    fn make_way(&self) {
        if let Some(run) = self.background_run.lock().take() {
            run.cancel();
        }
        for thread in self.threads.lock().iter() {
            thread.unpark();
        }
    }

    /// A sentence's audio from the disk store, if there is one and it has it.
    fn stored(&self, sentence: &str) -> Option<Vec<i16>> {
        self.store.as_ref()?.load(SENTENCE, sentence)
    }

    /// Keeps ahead-of-time audio in memory if it fits without pushing out
    /// audio callers used; whether it was kept.
    fn keep_ahead_of_time(&self, sentence: &str, audio: Arc<[i16]>) -> bool {
        if self.cache.stats().bytes + std::mem::size_of_val(&*audio) > self.cache.max_bytes() {
            return false;
        }
        self.cache.insert(sentence, audio);
        true
    }

    fn background_allowed(&self) -> bool {
        self.background_idle
            .lock()
            .as_ref()
            .is_none_or(|idle| idle())
    }
}

/// Dedicated synthesis threads fed by a bounded queue, with a cache of
/// synthesised sentences in front of them.
pub struct TtsWorkerPool {
    jobs: Option<mpsc::Sender<Work>>,
    workers: Vec<JoinHandle<()>>,
    capacity: usize,
    shared: Arc<PoolShared>,
}

impl std::fmt::Debug for TtsWorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsWorkerPool")
            .field("workers", &self.workers.len())
            .field("capacity", &self.capacity)
            .field("cache", &self.shared.cache)
            .finish()
    }
}

impl TtsWorkerPool {
    pub fn start(voice: Arc<PiperVoice>, config: TtsPoolConfig) -> Result<Self, SpeechError> {
        let capacity = config.queue_capacity.max(1);
        let (sender, receiver) = mpsc::channel::<Work>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(PoolShared {
            cache: SentenceCache::new(config.sentence_cache_bytes),
            store: config.sentence_store.clone(),
            background: Mutex::new(VecDeque::new()),
            background_idle: Mutex::new(None),
            background_run: Mutex::new(None),
            presynthesis_started: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            output_rate: config.output_rate,
            pause_samples: config.output_rate as usize * voice.options.sentence_silence_ms as usize
                / 1000,
        });
        let mut workers = Vec::new();
        for index in 0..config.workers.max(1) {
            let voice = Arc::clone(&voice);
            let receiver = Arc::clone(&receiver);
            let shared_for_worker = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("tts-{index}"))
                .spawn(move || worker_loop(&voice, &receiver, &shared_for_worker))
                .map_err(|e| SpeechError::WorkerSpawn(e.to_string()))?;
            shared.threads.lock().push(handle.thread().clone());
            workers.push(handle);
        }
        Ok(Self {
            jobs: Some(sender),
            workers,
            capacity,
            shared,
        })
    }

    /// Queues `text` without waiting; [`SpeechError::QueueFull`] when the
    /// queue is full. Leading sentences already in the cache are in the
    /// stream before this returns.
    pub fn try_speak(&self, text: &str) -> Result<TtsStream, SpeechError> {
        let (job, stream) = self.new_job(text)?;
        let Some(job) = job else {
            return Ok(stream);
        };
        let jobs = self.jobs.as_ref().ok_or(SpeechError::WorkersStopped)?;
        let queue_slot = crate::metrics::pipeline().tts.queue_slot();
        jobs.try_send(Work::Speak(job))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SpeechError::QueueFull {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => SpeechError::WorkersStopped,
            })?;
        queue_slot.handed_over();
        self.shared.make_way();
        Ok(stream)
    }

    /// Queues `text`, waiting for room in the queue.
    pub async fn speak(&self, text: &str) -> Result<TtsStream, SpeechError> {
        let (job, stream) = self.new_job(text)?;
        let Some(job) = job else {
            return Ok(stream);
        };
        let jobs = self.jobs.as_ref().ok_or(SpeechError::WorkersStopped)?;
        // Dropped uncounted if this future is abandoned while waiting.
        let queue_slot = crate::metrics::pipeline().tts.queue_slot();
        jobs.send(Work::Speak(job))
            .await
            .map_err(|_| SpeechError::WorkersStopped)?;
        queue_slot.handed_over();
        self.shared.make_way();
        Ok(stream)
    }

    /// Synthesises `texts` ahead of time, at the lowest priority, into the
    /// sentence cache: first the first sentence of each text (what a caller
    /// waits for), then the rest as long as they fit without pushing anything
    /// out. A worker does this only when no live request waits, gives way to
    /// one mid-sentence, and only while `idle` (if given) says the machine has
    /// a core to spare. Returns how many texts were queued.
    pub fn presynthesize(&self, texts: Vec<String>, idle: Option<IdleCheck>) -> usize {
        if self.shared.cache.max_bytes() == 0 {
            return 0;
        }
        *self.shared.background_idle.lock() = idle;
        let queued = {
            let mut background = self.shared.background.lock();
            let room = MAX_BACKGROUND_TEXTS.saturating_sub(background.len()) / 2;
            let texts: Vec<String> = texts.into_iter().take(room).collect();
            for text in &texts {
                background.push_back(BackgroundText {
                    text: text.clone(),
                    first_only: true,
                });
            }
            let count = texts.len();
            background.extend(texts.into_iter().map(|text| BackgroundText {
                text,
                first_only: false,
            }));
            count
        };
        if let Some(jobs) = &self.jobs {
            for _ in 0..self.workers.len() {
                // A full queue means busy workers, who look at the
                // background work when they run out of live requests.
                let _ = jobs.try_send(Work::Wake);
            }
        }
        queued
    }

    /// [`Self::presynthesize`] once per pool, however often it is called:
    /// `texts` is only evaluated the first time.
    pub fn presynthesize_once(
        &self,
        texts: impl FnOnce() -> Vec<String>,
        idle: Option<IdleCheck>,
    ) -> usize {
        if self
            .shared
            .presynthesis_started
            .swap(true, Ordering::AcqRel)
        {
            return 0;
        }
        self.presynthesize(texts(), idle)
    }

    /// Something more urgent than ahead-of-time synthesis needs the CPU (a
    /// caller's turn is being recognised): the background sentence in
    /// progress stops and is done again later.
    pub fn give_way(&self) {
        self.shared.make_way();
    }

    /// Texts waiting for ahead-of-time synthesis.
    pub fn presynthesis_pending(&self) -> usize {
        self.shared.background.lock().len()
    }

    /// The cache of synthesised sentences.
    pub fn sentence_cache(&self) -> &SentenceCache {
        &self.shared.cache
    }

    /// A job for `text`, after sending the leading sentences the cache
    /// already holds; `None` for the job when the cache held them all.
    fn new_job(&self, text: &str) -> Result<(Option<TtsJob>, TtsStream), SpeechError> {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(SpeechError::TextTooLong {
                chars,
                limit: MAX_TEXT_CHARS,
            });
        }
        let cancel = Arc::new(Cancellation::new()?);
        let (sender, receiver) = mpsc::unbounded_channel();
        let stream = TtsStream {
            chunks: receiver,
            cancel: Arc::clone(&cancel),
        };
        let queued_at = std::time::Instant::now();
        let keys = sentence_keys(text);
        let mut already_sent = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let Some(audio) = self.shared.cache.get(key) else {
                break;
            };
            if index == 0 {
                crate::metrics::pipeline()
                    .tts_first_audio
                    .observe(crate::metrics::seconds(queued_at.elapsed()));
            }
            let silence_after = index + 1 < keys.len();
            let chunk = TtsChunk {
                sentence_index: index,
                text: key.clone(),
                samples: with_pause(audio, silence_after, self.shared.pause_samples),
                sample_rate: self.shared.output_rate,
            };
            // The receiver is in hand: sending cannot fail.
            let _ = sender.send(Ok(chunk));
            already_sent.push(key.clone());
        }
        if !keys.is_empty() && already_sent.len() == keys.len() {
            return Ok((None, stream));
        }
        Ok((
            Some(TtsJob {
                text: text.to_string(),
                already_sent,
                queued_at,
                cancel,
                chunks: sender,
            }),
            stream,
        ))
    }

    /// Stops taking requests and waits for the workers to finish the ones
    /// queued. Blocks: call it from a blocking context.
    pub fn shutdown(mut self) {
        self.jobs = None;
        self.shared.background.lock().clear();
        self.shared.make_way();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a TTS worker panicked");
            }
        }
    }
}

impl Drop for TtsWorkerPool {
    fn drop(&mut self) {
        // Closing the queue lets the threads exit after their current job;
        // not joined here, so dropping the pool never blocks the runtime.
        self.jobs = None;
        self.shared.background.lock().clear();
        self.shared.make_way();
    }
}

/// The words of each sentence of `text` exactly as the synthesis reports
/// them ([`SpokenSentence::text`]): the sentence cache's keys, computed
/// without espeak-ng so a request can be answered from the cache on the
/// async runtime. A sentence espeak-ng would drop (no phonemes) simply
/// never matches a cached one.
pub fn sentence_keys(text: &str) -> Vec<String> {
    split_sentences(&normalize_for_speech(text))
        .into_iter()
        .map(|clauses| {
            let mut words = String::new();
            for clause in clauses {
                if !words.is_empty() {
                    words.push(' ');
                }
                words.push_str(&clause.text);
                if let Some(mark) = clause.punctuation {
                    words.push(mark);
                }
            }
            words
        })
        .collect()
}

/// Cached sentence audio, with the pause that follows a sentence when
/// another comes after it.
fn with_pause(audio: Arc<[i16]>, pause: bool, silence: usize) -> Arc<[i16]> {
    if !pause || silence == 0 {
        return audio;
    }
    let mut samples = Vec::with_capacity(audio.len() + silence);
    samples.extend_from_slice(&audio);
    samples.resize(audio.len() + silence, 0);
    Arc::from(samples)
}

fn worker_loop(voice: &PiperVoice, jobs: &Mutex<mpsc::Receiver<Work>>, shared: &PoolShared) {
    let exported = crate::metrics::pipeline();
    let _alive = exported.tts.worker_started();
    loop {
        // Live requests first; background work only when none waits.
        let work = match jobs.lock().try_recv() {
            Ok(work) => Some(work),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        };
        let work = match work {
            Some(work) => work,
            None if !shared.background.lock().is_empty() => {
                if shared.background_allowed() {
                    background_step(voice, shared);
                } else {
                    std::thread::park_timeout(BACKGROUND_RECHECK);
                }
                continue;
            }
            None => {
                // One idle worker waits on the queue; the others wait for the lock.
                let Some(work) = jobs.lock().blocking_recv() else {
                    return;
                };
                work
            }
        };
        let Work::Speak(job) = work else {
            continue;
        };
        exported.tts.queued.dec();
        if job.cancel.is_cancelled() || job.chunks.is_closed() {
            continue;
        }
        let _busy = exported.tts.busy_while();
        speak_job(voice, shared, job);
    }
}

fn speak_job(voice: &PiperVoice, shared: &PoolShared, job: TtsJob) {
    let exported = crate::metrics::pipeline();
    let rate = shared.output_rate;
    let sentences = match phonemize_text(&job.text, &voice.config.espeak_voice) {
        Ok(sentences) => sentences,
        Err(error) => {
            tracing::warn!(%error, "TTS request failed");
            let _ = job.chunks.send(Err(error));
            return;
        }
    };
    let mut skip = job.already_sent.iter().peekable();
    let total = sentences.len();
    for (sentence_index, sentence) in sentences.into_iter().enumerate() {
        if skip.peek().is_some_and(|sent| **sent == sentence.text) {
            skip.next();
            continue;
        }
        let started = std::time::Instant::now();
        let silence_after = sentence_index + 1 < total;
        let audio = match shared.cache.get(&sentence.text).or_else(|| {
            // A fixed sentence the background has not reached yet.
            let stored: Arc<[i16]> = Arc::from(shared.stored(&sentence.text)?);
            shared.cache.insert(&sentence.text, Arc::clone(&stored));
            Some(stored)
        }) {
            Some(audio) => Ok(audio),
            None => voice
                .synthesize_sentence(&sentence, rate, false, Some(&job.cancel))
                .map(|spoken| {
                    exported
                        .tts_sentence
                        .observe(crate::metrics::seconds(started.elapsed()));
                    let audio: Arc<[i16]> = Arc::from(spoken.samples);
                    shared.cache.insert(&sentence.text, Arc::clone(&audio));
                    audio
                }),
        };
        let chunk = match audio {
            Ok(audio) => {
                if sentence_index == 0 {
                    exported
                        .tts_first_audio
                        .observe(crate::metrics::seconds(job.queued_at.elapsed()));
                }
                Ok(TtsChunk {
                    sentence_index,
                    text: sentence.text,
                    samples: with_pause(audio, silence_after, shared.pause_samples),
                    sample_rate: rate,
                })
            }
            Err(SpeechError::Cancelled) => return,
            Err(error) => {
                tracing::warn!(%error, "TTS request failed");
                let _ = job.chunks.send(Err(error));
                return;
            }
        };
        if job.chunks.send(chunk).is_err() || job.cancel.is_cancelled() {
            return;
        }
    }
}

/// Synthesises one background sentence (the next one of the first text
/// waiting that is not cached yet), unless a live request cancels it.
fn background_step(voice: &PiperVoice, shared: &PoolShared) {
    let Some(item) = shared.background.lock().pop_front() else {
        return;
    };
    let sentences = match phonemize_text(&item.text, &voice.config.espeak_voice) {
        Ok(sentences) => sentences,
        Err(error) => {
            tracing::debug!(%error, "a text could not be synthesised ahead of time");
            return;
        }
    };
    let wanted = if item.first_only { 1 } else { sentences.len() };
    let mut missing = sentences.iter().take(wanted).filter(|s| {
        let cached = shared.cache.contains(&s.text);
        if cached && let Some(store) = &shared.store {
            store.keep(SENTENCE, &s.text);
        }
        !cached
    });
    let Some(sentence) = missing.next() else {
        background_item_done(shared, item, false);
        return;
    };
    let more_after = missing.next().is_some();
    // Stored by an earlier run: no synthesis needed (and no core taken).
    if let Some(stored) = shared.stored(&sentence.text) {
        shared.keep_ahead_of_time(&sentence.text, Arc::from(stored));
        background_item_done(shared, item, more_after);
        return;
    }
    let Ok(cancel) = Cancellation::new().map(Arc::new) else {
        return;
    };
    *shared.background_run.lock() = Some(Arc::clone(&cancel));
    // Recognition may have started since the worker looked: it comes first.
    if !shared.background_allowed() {
        shared.background_run.lock().take();
        shared.background.lock().push_front(item);
        return;
    }
    let result = voice.synthesize_sentence(sentence, shared.output_rate, false, Some(&cancel));
    shared.background_run.lock().take();
    match result {
        Ok(spoken) => {
            let audio: Arc<[i16]> = Arc::from(spoken.samples);
            // Ahead-of-time audio must never push out audio callers used.
            if shared.keep_ahead_of_time(&sentence.text, Arc::clone(&audio))
                && let Some(store) = &shared.store
            {
                store.save(SENTENCE, &sentence.text, &audio);
            }
            background_item_done(shared, item, more_after);
        }
        // A live request took the worker: this sentence is done later.
        Err(SpeechError::Cancelled) => shared.background.lock().push_front(item),
        Err(error) => tracing::debug!(%error, "a sentence could not be synthesised ahead of time"),
    }
}

/// After a background step on `item`: put it back if it has `more` sentences
/// to do, and when the last item is done, say so and tidy the disk store.
fn background_item_done(shared: &PoolShared, item: BackgroundText, more: bool) {
    let finished = {
        let mut background = shared.background.lock();
        if more {
            background.push_front(item);
            false
        } else {
            background.is_empty()
        }
    };
    if finished {
        let stats = shared.cache.stats();
        let stored = shared.store.as_ref().map(|store| store.stats());
        let pruned = shared
            .store
            .as_ref()
            .map_or(0, |store| store.prune(store::STALE_AFTER));
        tracing::info!(
            sentences = stats.entries,
            kib = stats.bytes / 1024,
            from_disk = stored.map_or(0, |s| s.loads),
            written_to_disk = stored.map_or(0, |s| s.saves),
            pruned,
            "ahead-of-time synthesis finished"
        );
    }
}

/// Prompts that never change ("one moment", the greeting, safety messages),
/// synthesised once at 8 kHz and shared.
pub struct PromptCache {
    voice: Arc<PiperVoice>,
    entries: RwLock<HashMap<String, Arc<[i16]>>>,
    max_entries: usize,
    store: Option<Arc<SentenceStore>>,
}

impl std::fmt::Debug for PromptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptCache")
            .field("entries", &self.entries.read().len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl PromptCache {
    /// `max_entries` bounds memory: past it, prompts are synthesised but not kept.
    pub fn new(voice: Arc<PiperVoice>, max_entries: usize) -> Self {
        Self {
            voice,
            entries: RwLock::new(HashMap::new()),
            max_entries,
            store: None,
        }
    }

    /// Also keeps the prompts [`Self::warm`] synthesises on disk, and reads
    /// them back from there on the next start.
    pub fn with_store(mut self, store: Option<Arc<SentenceStore>>) -> Self {
        self.store = store;
        self
    }

    /// The cached audio, if `text` was synthesised before.
    pub fn get(&self, text: &str) -> Option<Arc<[i16]>> {
        self.entries.read().get(text).cloned()
    }

    /// The cached audio, synthesising it first if needed. Blocks for the
    /// synthesis: call it at start-up ([`PromptCache::warm`]) or off the runtime.
    pub fn get_or_synthesize(&self, text: &str) -> Result<Arc<[i16]>, SpeechError> {
        if let Some(audio) = self.get(text) {
            return Ok(audio);
        }
        let audio = self.voice.synthesize_all(text, TELEPHONY_RATE)?;
        Ok(self.keep(text, Arc::from(audio)))
    }

    /// Keeps `audio` for `text` while there is room; returns the audio kept
    /// (another thread's, if it got there first).
    fn keep(&self, text: &str, audio: Arc<[i16]>) -> Arc<[i16]> {
        let mut entries = self.entries.write();
        if let Some(existing) = entries.get(text) {
            return Arc::clone(existing);
        }
        if entries.len() < self.max_entries {
            entries.insert(text.to_string(), Arc::clone(&audio));
        }
        audio
    }

    /// Synthesises every prompt now, so the first call does not wait.
    /// Prompts stored on disk by an earlier start are read, not synthesised.
    pub fn warm<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> Result<(), SpeechError> {
        for text in texts {
            if self.get(text).is_some() {
                continue;
            }
            let stored = self
                .store
                .as_ref()
                .and_then(|store| store.load(PROMPT, text));
            if let Some(audio) = stored {
                self.keep(text, Arc::from(audio));
                continue;
            }
            let audio = self.get_or_synthesize(text)?;
            if let Some(store) = &self.store {
                store.save(PROMPT, text, &audio);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }
}

/// Below this (after peak normalisation, about -50 dBFS) a sample is silence.
const LEADING_SILENCE_LEVEL: f32 = 0.003_2;
/// Quiet lead kept before a sentence's first sound, so its onset is not clipped.
const LEADING_SILENCE_KEEP_MS: usize = 5;

/// Piper starts every sentence with ~40 ms of near-silence (measured on the
/// shipped voice): at the start of an answer that is 40 ms more the caller
/// waits for a voice, and between sentences the pause is set by
/// `sentence_silence_ms` anyway, so the lead is cut to a few milliseconds.
fn trim_leading_silence(audio: &mut Vec<f32>, rate: u32) {
    let keep = rate as usize * LEADING_SILENCE_KEEP_MS / 1000;
    if let Some(first) = audio.iter().position(|x| x.abs() > LEADING_SILENCE_LEVEL) {
        audio.drain(..first.saturating_sub(keep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_normalisation_is_capped() {
        let mut loud = vec![0.0, 0.45, -0.3];
        normalise_peak(&mut loud);
        assert!((loud[1] - TARGET_PEAK).abs() < 1e-6);
        let mut quiet = vec![0.0, 0.01];
        normalise_peak(&mut quiet);
        assert!((quiet[1] - 0.04).abs() < 1e-6);
        let mut silent = vec![0.0; 4];
        normalise_peak(&mut silent);
        assert_eq!(silent, vec![0.0; 4]);
    }

    #[test]
    fn sentence_keys_match_the_words_synthesis_reports() {
        let keys = sentence_keys(
            "Bins are collected weekly: black, then blue. Is there anything else I can help with?",
        );
        assert_eq!(
            keys,
            vec![
                "Bins are collected weekly: black, then blue.".to_string(),
                "Is there anything else I can help with?".to_string(),
            ]
        );
    }

    /// The shipped voice from the model cache, or `None` (test skipped).
    fn cached_voice() -> Option<PiperVoice> {
        let paths = crate::speech::SpeechModelPaths::from_env_or_cache();
        if !paths.missing_files().is_empty() {
            assert!(std::env::var_os("CI").is_none(), "models missing under CI");
            eprintln!("*** SKIPPED: run `frontdoor models fetch` ***");
            return None;
        }
        crate::speech::init_onnxruntime(&paths.onnxruntime_lib).expect("ONNX Runtime");
        Some(PiperVoice::load(&paths.piper_onnx, &paths.piper_config).expect("voice"))
    }

    fn all_chunks(mut stream: TtsStream) -> Vec<TtsChunk> {
        std::iter::from_fn(|| stream.blocking_next())
            .map(|chunk| chunk.expect("synthesised"))
            .collect()
    }

    #[test]
    fn a_sentence_spoken_before_comes_from_the_cache_at_once() {
        let Some(voice) = cached_voice() else { return };
        let pool = TtsWorkerPool::start(Arc::new(voice), TtsPoolConfig::default()).unwrap();
        let text = "Bins are collected weekly. Is there anything else I can help with?";
        let first = all_chunks(pool.try_speak(text).unwrap());
        assert_eq!(first.len(), 2);
        assert_eq!(pool.sentence_cache().stats().entries, 2);
        // Both sentences are in the stream before `try_speak` returns: no
        // worker is involved.
        let mut again = pool.try_speak(text).unwrap();
        let mut ready = Vec::new();
        while let Ok(chunk) = again.chunks.try_recv() {
            ready.push(chunk.unwrap());
        }
        assert_eq!(ready.len(), 2);
        for (cached, live) in ready.iter().zip(&first) {
            assert_eq!(cached.text, live.text);
            assert_eq!(cached.samples, live.samples, "same audio, same pause");
        }
        // A new reply that shares its last sentence: the first is
        // synthesised live, the second still comes from the cache.
        let mixed = all_chunks(
            pool.try_speak("Your street is Mill Lane. Is there anything else I can help with?")
                .unwrap(),
        );
        assert_eq!(mixed.len(), 2);
        assert_eq!(mixed[1].samples.len(), first[1].samples.len());
        pool.shutdown();
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn a_restarted_pool_reads_fixed_sentences_from_disk_instead_of_synthesising() {
        let Some(voice) = cached_voice() else { return };
        let voice = Arc::new(voice);
        let root = tempfile::tempdir().unwrap();
        let open_store = || {
            let identity = voice.store_identity(TELEPHONY_RATE);
            Arc::new(SentenceStore::open(root.path(), &identity).unwrap())
        };
        let start = |store: &Arc<SentenceStore>| {
            let config = TtsPoolConfig {
                sentence_store: Some(Arc::clone(store)),
                ..Default::default()
            };
            TtsWorkerPool::start(Arc::clone(&voice), config).unwrap()
        };
        let texts = vec!["Recycling goes out on Tuesdays. Glass goes in the box.".to_string()];
        let sentences = ["Recycling goes out on Tuesdays.", "Glass goes in the box."];
        // The same voice loaded again (as by another process) is the same store.
        let reloaded = cached_voice().unwrap();
        assert_eq!(
            reloaded.store_identity(TELEPHONY_RATE),
            voice.store_identity(TELEPHONY_RATE)
        );

        // First start: synthesised ahead of time and written to disk.
        let first_store = open_store();
        let first = start(&first_store);
        first.presynthesize(texts.clone(), None);
        wait_until("first run stores both sentences", || {
            first_store.stats().saves == 2
        });
        let synthesised: Vec<Arc<[i16]>> = sentences
            .iter()
            .map(|s| first.sentence_cache().get(s).expect("cached"))
            .collect();
        first.shutdown();

        // Restart: the same audio comes from disk, nothing is synthesised.
        let second_store = open_store();
        let second = start(&second_store);
        second.presynthesize(texts.clone(), None);
        wait_until("second run loads both sentences", || {
            sentences
                .iter()
                .all(|s| second.sentence_cache().contains(s))
        });
        assert_eq!(second_store.stats(), StoreStats { loads: 2, saves: 0 });
        for (sentence, audio) in sentences.iter().zip(&synthesised) {
            assert_eq!(&second.sentence_cache().get(sentence).unwrap(), audio);
        }
        second.shutdown();

        // A caller asking before the background reaches it gets it from disk
        // too; a sentence said live (caller-specific) is never written.
        let third_store = open_store();
        let third = start(&third_store);
        let chunks = all_chunks(third.try_speak("Glass goes in the box.").unwrap());
        assert_eq!(chunks[0].samples[..], synthesised[1][..]);
        let _ = all_chunks(third.try_speak("Your reference is 4 4 1 9.").unwrap());
        assert_eq!(third_store.stats(), StoreStats { loads: 1, saves: 0 });
        third.shutdown();
    }

    #[test]
    fn stored_prompts_are_read_back_on_the_next_start() {
        let Some(voice) = cached_voice() else { return };
        let voice = Arc::new(voice);
        let root = tempfile::tempdir().unwrap();
        let identity = voice.store_identity(TELEPHONY_RATE);
        let store = Arc::new(SentenceStore::open(root.path(), &identity).unwrap());
        let prompts = PromptCache::new(Arc::clone(&voice), 8).with_store(Some(Arc::clone(&store)));
        prompts.warm(["One moment, please."]).unwrap();
        assert_eq!(store.stats(), StoreStats { loads: 0, saves: 1 });
        let again_store = Arc::new(SentenceStore::open(root.path(), &identity).unwrap());
        let again = PromptCache::new(voice, 8).with_store(Some(Arc::clone(&again_store)));
        again.warm(["One moment, please."]).unwrap();
        assert_eq!(again_store.stats(), StoreStats { loads: 1, saves: 0 });
        assert_eq!(
            again.get("One moment, please."),
            prompts.get("One moment, please.")
        );
    }

    #[test]
    fn first_sentences_are_synthesised_ahead_of_time() {
        let Some(voice) = cached_voice() else { return };
        let pool = TtsWorkerPool::start(Arc::new(voice), TtsPoolConfig::default()).unwrap();
        let texts = vec![
            "Recycling goes out on Tuesdays. Glass goes in the box.".to_string(),
            "Parking permits cost forty pounds.".to_string(),
        ];
        assert_eq!(pool.presynthesize_once(|| texts.clone(), None), 2);
        assert_eq!(pool.presynthesize_once(|| texts.clone(), None), 0, "once");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while pool.presynthesis_pending() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(pool.presynthesis_pending(), 0);
        let cache = pool.sentence_cache();
        for sentence in [
            "Recycling goes out on Tuesdays.",
            "Glass goes in the box.",
            "Parking permits cost forty pounds.",
        ] {
            assert!(cache.contains(sentence), "{sentence:?} not cached");
        }
        pool.shutdown();
    }

    #[test]
    fn voice_config_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voice.onnx.json");
        std::fs::write(
            &path,
            r#"{"audio": {"sample_rate": 22050}, "phoneme_type": "text"}"#,
        )
        .unwrap();
        let error = VoiceConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("not supported"), "{error}");
        std::fs::write(&path, r#"{"audio": {"sample_rate": 22050}}"#).unwrap();
        let error = VoiceConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("phoneme_id_map"), "{error}");
        std::fs::write(
            &path,
            r#"{"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-gb"},
                "inference": {"noise_scale": 0.5, "length_scale": 1.1, "noise_w": 0.7},
                "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}}"#,
        )
        .unwrap();
        let config = VoiceConfig::load(&path).unwrap();
        assert_eq!(config.sample_rate, 22_050);
        assert_eq!(config.espeak_voice, "en-gb");
        assert!((config.length_scale - 1.1).abs() < 1e-6);
    }

    #[test]
    fn leading_silence_is_cut_to_a_short_lead() {
        let rate = 8_000;
        let mut audio = vec![0.0005f32; 320];
        audio.extend([0.2, -0.3, 0.1]);
        trim_leading_silence(&mut audio, rate);
        assert_eq!(
            audio.len(),
            40 + 3,
            "5 ms of lead kept before the first sound"
        );
        assert_eq!(audio[40], 0.2);
        let mut silent = vec![0.0f32; 100];
        trim_leading_silence(&mut silent, rate);
        assert_eq!(silent.len(), 100, "all-silent audio is left alone");
        let mut empty: Vec<f32> = Vec::new();
        trim_leading_silence(&mut empty, rate);
        assert!(empty.is_empty());
    }
}
