//! Whisper on dedicated worker threads behind a bounded queue.
//!
//! ggml inference is seconds of pure CPU; on a tokio worker it would stall
//! every call's RTP pacing. Each worker here is an OS thread that owns one
//! [`Transcriber`] and runs whisper.cpp with one thread, and there is one
//! worker per core. The queue is bounded: when it is full, [`AsrPool::submit`]
//! answers [`AsrError::Busy`] at once, so the call pipeline can play a
//! holding phrase instead of letting latency pile up for everyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::audio::resample_8k_to_16k;
use super::whisper::{AsrModel, TranscribeOptions, Transcriber, Transcript};
use super::{AsrError, WindowPolicy};

/// Audio for one utterance, at the rate it was captured.
#[derive(Debug, Clone, PartialEq)]
pub enum Utterance {
    /// 16 kHz mono f32 in [-1, 1] (WebRTC, files).
    Wideband16k(Vec<f32>),
    /// 8 kHz mono f32 in [-1, 1] (G.711 calls); upsampled on the worker, off
    /// the async runtime.
    Telephony8k(Vec<f32>),
}

impl Utterance {
    /// From decoded G.711 samples.
    pub fn from_telephony_i16(samples: &[i16]) -> Utterance {
        Utterance::Telephony8k(samples.iter().map(|&s| f32::from(s) / 32768.0).collect())
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f32 {
        match self {
            Utterance::Wideband16k(s) => s.len() as f32 / 16_000.0,
            Utterance::Telephony8k(s) => s.len() as f32 / 8_000.0,
        }
    }

    fn into_16k(self) -> Vec<f32> {
        match self {
            Utterance::Wideband16k(samples) => samples,
            Utterance::Telephony8k(samples) => resample_8k_to_16k(&samples),
        }
    }
}

/// Called on the worker thread after each job.
pub type JobDoneHook = Arc<dyn Fn(&JobReport) + Send + Sync>;

/// Pool sizing.
#[derive(Clone)]
pub struct AsrPoolConfig {
    /// Worker threads, each with its own decoding state. Default: the number
    /// of cores.
    pub workers: usize,
    /// Utterances waiting beyond those being decoded; one more is `Busy`.
    /// Default: two per worker, i.e. at most ~2 utterances of waiting.
    pub queue_capacity: usize,
    /// Called on the worker thread after each job, for latency histograms.
    pub on_job_done: Option<JobDoneHook>,
}

impl std::fmt::Debug for AsrPoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrPoolConfig")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("on_job_done", &self.on_job_done.is_some())
            .finish()
    }
}

impl Default for AsrPoolConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        AsrPoolConfig {
            workers,
            queue_capacity: 2 * workers,
            on_job_done: None,
        }
    }
}

/// What one job cost, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub audio_seconds: f32,
    /// Time between submit and a worker picking the job up.
    pub queue_wait: Duration,
    /// Time the worker spent on it (resampling and decoding).
    pub processing: Duration,
    pub outcome: JobOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Transcribed { fell_back_to_full_window: bool },
    Cancelled,
    Failed,
}

/// Counters since the pool started; read with [`AsrMetrics::snapshot`].
#[derive(Debug, Default)]
pub struct AsrMetrics {
    queued: AtomicUsize,
    in_progress: AtomicUsize,
    submitted: AtomicU64,
    rejected_busy: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    full_window_fallbacks: AtomicU64,
    audio_micros: AtomicU64,
    queue_wait_micros: AtomicU64,
    processing_micros: AtomicU64,
}

/// A consistent-enough copy of [`AsrMetrics`] for export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsrMetricsSnapshot {
    /// Jobs waiting for a worker now.
    pub queued: usize,
    /// Jobs being decoded now.
    pub in_progress: usize,
    pub submitted: u64,
    pub rejected_busy: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Completed jobs whose fitted window was rejected by a guard.
    pub full_window_fallbacks: u64,
    /// Sums, for rates and means (e.g. processing / audio = real-time factor).
    pub audio_micros: u64,
    pub queue_wait_micros: u64,
    pub processing_micros: u64,
}

impl AsrMetrics {
    pub fn snapshot(&self) -> AsrMetricsSnapshot {
        AsrMetricsSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            in_progress: self.in_progress.load(Ordering::Relaxed),
            submitted: self.submitted.load(Ordering::Relaxed),
            rejected_busy: self.rejected_busy.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            full_window_fallbacks: self.full_window_fallbacks.load(Ordering::Relaxed),
            audio_micros: self.audio_micros.load(Ordering::Relaxed),
            queue_wait_micros: self.queue_wait_micros.load(Ordering::Relaxed),
            processing_micros: self.processing_micros.load(Ordering::Relaxed),
        }
    }
}

struct Job {
    audio: Utterance,
    window: Option<WindowPolicy>,
    cancel: Arc<AtomicBool>,
    submitted_at: Instant,
    reply: oneshot::Sender<Result<Transcript, AsrError>>,
}

/// Sets the job's cancel flag when the submitting future is dropped (the
/// call ended, or the caller's timeout fired), so a queued job is skipped and
/// a running one aborts.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A fixed set of Whisper workers behind a bounded queue.
pub struct AsrPool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    metrics: Arc<AsrMetrics>,
}

impl AsrPool {
    /// Starts `config.workers` threads, each with a transcriber of `model`.
    /// Decoding states are created here so that a failure shows at start-up.
    pub fn start(model: &Arc<AsrModel>, config: AsrPoolConfig) -> Result<AsrPool, AsrError> {
        if config.workers == 0 {
            return Err(AsrError::Config(
                "ASR pool needs at least one worker".into(),
            ));
        }
        let transcribers = (0..config.workers)
            .map(|_| model.transcriber())
            .collect::<Result<Vec<_>, _>>()?;
        // With a capacity of 0 the channel is a rendezvous: a job is taken
        // only when a worker is idle, otherwise the submit is Busy.
        let (sender, receiver) = mpsc::sync_channel::<Job>(config.queue_capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let metrics = Arc::new(AsrMetrics::default());
        let mut workers = Vec::with_capacity(config.workers);
        for (index, transcriber) in transcribers.into_iter().enumerate() {
            let receiver = Arc::clone(&receiver);
            let metrics = Arc::clone(&metrics);
            let on_job_done = config.on_job_done.clone();
            let handle = std::thread::Builder::new()
                .name(format!("asr-worker-{index}"))
                .spawn(move || {
                    worker_loop(transcriber, &receiver, &metrics, on_job_done.as_deref())
                })
                .map_err(|e| AsrError::Config(format!("cannot start ASR worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(AsrPool {
            jobs: Some(sender),
            workers,
            metrics,
        })
    }

    /// Transcribes one utterance on a worker.
    ///
    /// Returns [`AsrError::Busy`] immediately when the queue is full. Dropping
    /// the returned future (hang-up, timeout) cancels the job.
    pub async fn submit(&self, audio: Utterance) -> Result<Transcript, AsrError> {
        self.submit_with(audio, None).await
    }

    /// [`submit`](Self::submit) with a window policy other than the model's.
    pub async fn submit_with(
        &self,
        audio: Utterance,
        window: Option<WindowPolicy>,
    ) -> Result<Transcript, AsrError> {
        let jobs = self.jobs.as_ref().ok_or(AsrError::ShutDown)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let (reply, response) = oneshot::channel();
        let job = Job {
            audio,
            window,
            cancel: Arc::clone(&cancel),
            submitted_at: Instant::now(),
            reply,
        };
        // Counted before the send so a fast worker never decrements first.
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let queue_slot = crate::metrics::pipeline().asr.queue_slot();
        if let Err(refused) = jobs.try_send(job) {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            drop(queue_slot);
            return Err(match refused {
                TrySendError::Full(_) => {
                    self.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    AsrError::Busy
                }
                TrySendError::Disconnected(_) => AsrError::ShutDown,
            });
        }
        queue_slot.handed_over();
        self.metrics.submitted.fetch_add(1, Ordering::Relaxed);
        // No await between the send and here, so a dropped future always
        // leaves this guard behind to cancel the job.
        let _cancel_on_drop = CancelOnDrop(cancel);
        response.await.unwrap_or(Err(AsrError::ShutDown))
    }

    pub fn metrics(&self) -> &Arc<AsrMetrics> {
        &self.metrics
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stops taking jobs, lets queued ones finish, and waits for the workers.
    /// Blocking: call from `spawn_blocking` or at the end of `main`.
    pub fn shutdown(mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("an ASR worker thread panicked");
            }
        }
    }
}

impl Drop for AsrPool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it drains; they are not
        // joined here so that dropping the pool never blocks the runtime.
        self.jobs = None;
    }
}

fn worker_loop(
    mut transcriber: Transcriber,
    receiver: &Mutex<Receiver<Job>>,
    metrics: &AsrMetrics,
    on_job_done: Option<&(dyn Fn(&JobReport) + Send + Sync)>,
) {
    let exported = &crate::metrics::pipeline().asr;
    let _alive = exported.worker_started();
    loop {
        // The lock is held only while waiting for the next job; the other
        // workers wait on the lock instead of the channel, which is the same.
        let job = match receiver.lock().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        metrics.queued.fetch_sub(1, Ordering::Relaxed);
        exported.queued.dec();
        let picked_up = Instant::now();
        let queue_wait = picked_up - job.submitted_at;
        let audio_seconds = job.audio.seconds();

        let result = if job.cancel.load(Ordering::Relaxed) || job.reply.is_closed() {
            Err(AsrError::Cancelled)
        } else {
            metrics.in_progress.fetch_add(1, Ordering::Relaxed);
            let busy = exported.busy_while();
            let audio = job.audio.into_16k();
            let options = TranscribeOptions {
                window: job.window,
                without_prompt: false,
                cancel: Some(Arc::clone(&job.cancel)),
            };
            let result = transcriber.transcribe(&audio, &options);
            metrics.in_progress.fetch_sub(1, Ordering::Relaxed);
            drop(busy);
            result
        };
        let processing = picked_up.elapsed();

        let outcome = match &result {
            Ok(transcript) => {
                metrics.completed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::pipeline()
                    .asr_latency
                    .observe(crate::metrics::seconds(queue_wait + processing));
                let fell_back = transcript.window.fallback.is_some();
                if fell_back {
                    metrics
                        .full_window_fallbacks
                        .fetch_add(1, Ordering::Relaxed);
                }
                JobOutcome::Transcribed {
                    fell_back_to_full_window: fell_back,
                }
            }
            Err(AsrError::Cancelled) => {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                JobOutcome::Cancelled
            }
            Err(error) => {
                tracing::warn!(%error, audio_seconds, "transcription failed");
                metrics.failed.fetch_add(1, Ordering::Relaxed);
                JobOutcome::Failed
            }
        };
        metrics
            .audio_micros
            .fetch_add((audio_seconds * 1e6) as u64, Ordering::Relaxed);
        metrics
            .queue_wait_micros
            .fetch_add(micros(queue_wait), Ordering::Relaxed);
        metrics
            .processing_micros
            .fetch_add(micros(processing), Ordering::Relaxed);
        if let Some(hook) = on_job_done {
            hook(&JobReport {
                audio_seconds,
                queue_wait,
                processing,
                outcome,
            });
        }
        // The caller may have gone; nothing to do then.
        let _ = job.reply.send(result);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
