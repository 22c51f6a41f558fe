//! Text to speech: a Piper voice run directly on ONNX Runtime.
//!
//! Audio comes out sentence by sentence, so the first sentence can play while
//! the next is synthesised. Inference runs on dedicated OS threads
//! ([`TtsWorkerPool`]), never on the async runtime, and every request can be
//! cancelled (barge-in): the flag is checked between sentences and ONNX
//! Runtime's terminate flag stops a sentence already running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::phonemize::{PhonemeIdMap, PhonemizedSentence, phonemize_text};
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
}

impl Default for TtsPoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_capacity: 32,
            output_rate: TELEPHONY_RATE,
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
    /// For the time-to-first-audio histogram.
    queued_at: std::time::Instant,
    cancel: Arc<Cancellation>,
    /// Unbounded, yet bounded by the request: at most one chunk per sentence
    /// of a text capped at `MAX_TEXT_CHARS`. A bounded channel would let a
    /// slow consumer stall a worker that other calls are waiting for.
    chunks: mpsc::UnboundedSender<Result<TtsChunk, SpeechError>>,
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

/// Dedicated synthesis threads fed by a bounded queue.
pub struct TtsWorkerPool {
    jobs: Option<mpsc::Sender<TtsJob>>,
    workers: Vec<JoinHandle<()>>,
    capacity: usize,
}

impl std::fmt::Debug for TtsWorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsWorkerPool")
            .field("workers", &self.workers.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl TtsWorkerPool {
    pub fn start(voice: Arc<PiperVoice>, config: TtsPoolConfig) -> Result<Self, SpeechError> {
        let capacity = config.queue_capacity.max(1);
        let (sender, receiver) = mpsc::channel::<TtsJob>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        for index in 0..config.workers.max(1) {
            let voice = Arc::clone(&voice);
            let receiver = Arc::clone(&receiver);
            let rate = config.output_rate;
            let handle = std::thread::Builder::new()
                .name(format!("tts-{index}"))
                .spawn(move || worker_loop(&voice, &receiver, rate))
                .map_err(|e| SpeechError::WorkerSpawn(e.to_string()))?;
            workers.push(handle);
        }
        Ok(Self {
            jobs: Some(sender),
            workers,
            capacity,
        })
    }

    /// Queues `text` without waiting; [`SpeechError::QueueFull`] when the
    /// queue is full.
    pub fn try_speak(&self, text: &str) -> Result<TtsStream, SpeechError> {
        let (job, stream) = new_job(text)?;
        let jobs = self.jobs.as_ref().ok_or(SpeechError::WorkersStopped)?;
        let queue_slot = crate::metrics::pipeline().tts.queue_slot();
        jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SpeechError::QueueFull {
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => SpeechError::WorkersStopped,
        })?;
        queue_slot.handed_over();
        Ok(stream)
    }

    /// Queues `text`, waiting for room in the queue.
    pub async fn speak(&self, text: &str) -> Result<TtsStream, SpeechError> {
        let (job, stream) = new_job(text)?;
        let jobs = self.jobs.as_ref().ok_or(SpeechError::WorkersStopped)?;
        // Dropped uncounted if this future is abandoned while waiting.
        let queue_slot = crate::metrics::pipeline().tts.queue_slot();
        jobs.send(job)
            .await
            .map_err(|_| SpeechError::WorkersStopped)?;
        queue_slot.handed_over();
        Ok(stream)
    }

    /// Stops taking requests and waits for the workers to finish the ones
    /// queued. Blocks: call it from a blocking context.
    pub fn shutdown(mut self) {
        self.jobs = None;
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
    }
}

fn new_job(text: &str) -> Result<(TtsJob, TtsStream), SpeechError> {
    let cancel = Arc::new(Cancellation::new()?);
    let (sender, receiver) = mpsc::unbounded_channel();
    Ok((
        TtsJob {
            text: text.to_string(),
            queued_at: std::time::Instant::now(),
            cancel: Arc::clone(&cancel),
            chunks: sender,
        },
        TtsStream {
            chunks: receiver,
            cancel,
        },
    ))
}

fn worker_loop(voice: &PiperVoice, jobs: &Mutex<mpsc::Receiver<TtsJob>>, rate: u32) {
    let exported = crate::metrics::pipeline();
    let _alive = exported.tts.worker_started();
    loop {
        // One idle worker waits on the queue; the others wait for the lock.
        let Some(job) = jobs.lock().blocking_recv() else {
            return;
        };
        exported.tts.queued.dec();
        if job.cancel.is_cancelled() || job.chunks.is_closed() {
            continue;
        }
        let _busy = exported.tts.busy_while();
        let mut sentences = voice.sentences(&job.text, rate, Some(Arc::clone(&job.cancel)));
        let mut sentence_index = 0;
        loop {
            let started = std::time::Instant::now();
            let Some(sentence) = sentences.next() else {
                break;
            };
            let chunk = match sentence {
                Ok(spoken) => {
                    exported
                        .tts_sentence
                        .observe(crate::metrics::seconds(started.elapsed()));
                    if sentence_index == 0 {
                        exported
                            .tts_first_audio
                            .observe(crate::metrics::seconds(job.queued_at.elapsed()));
                    }
                    Ok(TtsChunk {
                        sentence_index,
                        text: spoken.text,
                        samples: Arc::from(spoken.samples),
                        sample_rate: spoken.sample_rate,
                    })
                }
                Err(SpeechError::Cancelled) => break,
                Err(error) => {
                    tracing::warn!(%error, "TTS request failed");
                    Err(error)
                }
            };
            sentence_index += 1;
            if job.chunks.send(chunk).is_err() || job.cancel.is_cancelled() {
                break;
            }
        }
    }
}

/// Prompts that never change ("one moment", the greeting, safety messages),
/// synthesised once at 8 kHz and shared.
pub struct PromptCache {
    voice: Arc<PiperVoice>,
    entries: RwLock<HashMap<String, Arc<[i16]>>>,
    max_entries: usize,
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
        }
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
        let audio: Arc<[i16]> = Arc::from(self.voice.synthesize_all(text, TELEPHONY_RATE)?);
        let mut entries = self.entries.write();
        if let Some(existing) = entries.get(text) {
            return Ok(Arc::clone(existing));
        }
        if entries.len() < self.max_entries {
            entries.insert(text.to_string(), Arc::clone(&audio));
        }
        Ok(audio)
    }

    /// Synthesises every prompt now, so the first call does not wait.
    pub fn warm<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> Result<(), SpeechError> {
        for text in texts {
            self.get_or_synthesize(text)?;
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
}
