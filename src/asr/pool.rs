//! Whisper on dedicated worker threads behind bounded, prioritised queues.
//!
//! ggml inference is seconds of pure CPU; on a tokio worker it would stall
//! every call's RTP pacing. Each worker here is an OS thread that owns one
//! [`Transcriber`] and runs whisper.cpp with one thread, and there is one
//! worker per core. The turn queue is bounded: when it is full,
//! [`AsrPool::submit`] answers [`AsrError::Busy`] at once, so the call
//! pipeline can play a holding phrase instead of letting latency pile up for
//! everyone.
//!
//! Not every transcript has someone waiting on it. A caller's turn with the
//! assistant does; the record of a bridged call does not, and a live partial
//! transcript is worth having only if it costs nothing. So jobs have a
//! [`JobClass`]: turns first, then record-only jobs from a backlog that drops
//! its oldest rather than grow, and partials only on an idle worker, given
//! up (cancelled mid-decode) the moment other work needs that worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use tracing::warn;

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
    /// Default: eight per worker. A refused turn makes the caller hear a
    /// holding phrase (~1.3 s that its answer then waits behind) and retry
    /// every 100 ms, unordered: with 24 callers on 2 workers the old two per
    /// worker refused 40 of 72 turns, and the answers came 3–6 s late. A
    /// longer first-come queue of 0.3 s passes (at most ~2.4 s of waiting)
    /// is both fairer and sooner.
    pub queue_capacity: usize,
    /// Called on the worker thread after each job, for latency histograms.
    pub on_job_done: Option<JobDoneHook>,
    /// Threads a turn is decoded with when every other worker is idle and
    /// nothing waits: the idle workers' cores are lent to it (a turn on the
    /// tiny model took ~155 ms on two threads instead of ~250 ms on one),
    /// and they take no job until it is done, so two decodes never share a
    /// core (ggml ran 3-5x slower when they did). 1 turns lending off.
    /// Default: 2 when there are at least two workers.
    pub threads_when_alone: u16,
    /// Decode a turn without the vocabulary prompt when other turns are
    /// waiting for a worker. The prompt's ~30 tokens cost whisper.cpp a
    /// vocabulary-wide projection each (it computes logits for every prompt
    /// token and keeps the last), ~25 % of a tiny.en turn; shedding it under
    /// load is the cheapest accuracy to give up (word error rate on council
    /// questions 8.0 → 9.2 %) before a holding phrase. Default: true.
    pub shed_prompt_when_busy: bool,
}

impl std::fmt::Debug for AsrPoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrPoolConfig")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("on_job_done", &self.on_job_done.is_some())
            .field("threads_when_alone", &self.threads_when_alone)
            .field("shed_prompt_when_busy", &self.shed_prompt_when_busy)
            .finish()
    }
}

impl Default for AsrPoolConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        AsrPoolConfig {
            workers,
            queue_capacity: 8 * workers,
            on_job_done: None,
            threads_when_alone: if workers >= 2 { 2 } else { 1 },
            shed_prompt_when_busy: true,
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
    /// Whether it was decoded with the vocabulary prompt (see
    /// [`AsrPoolConfig::shed_prompt_when_busy`]).
    pub prompted: bool,
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
    background_dropped: AtomicU64,
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
    /// Background jobs pushed out of a full backlog by newer ones.
    pub background_dropped: u64,
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
            background_dropped: self.background_dropped.load(Ordering::Relaxed),
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

/// How a job ranks against the others waiting for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobClass {
    /// A caller's turn with the assistant: someone is waiting for the answer.
    /// Served first; refused with [`AsrError::Busy`] when its queue is full.
    Turn,
    /// A record-only transcript (a bridged call between a caller and an
    /// agent): served when no turn waits, from a bounded backlog that drops
    /// its oldest job ([`AsrError::Dropped`]) rather than grow.
    Background,
    /// A live partial transcript: accepted only when a worker is idle with
    /// nothing waiting, and cancelled as soon as other work needs the worker,
    /// so partials never delay a final transcript.
    Partial,
}

struct Job {
    audio: Utterance,
    window: Option<WindowPolicy>,
    class: JobClass,
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

/// Background jobs waiting per worker before the oldest is dropped: a
/// bridged call produces an utterance every few seconds per side, so this
/// rides out a burst of assistant turns without holding stale audio for long.
const BACKGROUND_BACKLOG_PER_WORKER: usize = 4;

/// An idle worker's core is lent to a turn only if fewer than this many
/// turns were picked up within [`LEND_WINDOW`]: one caller's turn, its
/// speculative pass and a barge-in check stay under it; a busy switchboard
/// does not.
const LEND_WHEN_FEWER_THAN: usize = 4;
const LEND_WINDOW: Duration = Duration::from_secs(2);

/// The jobs waiting, by class, and what the workers are doing.
struct Queues {
    turns: VecDeque<Job>,
    background: VecDeque<Job>,
    partials: VecDeque<Job>,
    turn_capacity: usize,
    background_capacity: usize,
    /// Workers blocked waiting for a job.
    idle_workers: usize,
    /// Cancel flags of the partial jobs being decoded, to preempt them.
    /// Bounded by the number of workers.
    running_partials: Vec<Arc<AtomicBool>>,
    /// Workers in the pool.
    workers: usize,
    /// Threads for a turn picked up while every other worker is idle.
    threads_when_alone: u16,
    /// A worker is decoding with the idle workers' cores: the others take
    /// no job until it is done.
    lent: bool,
    /// When the last [`LEND_WHEN_FEWER_THAN`] turns were picked up, oldest
    /// first: lending pays only when turns are sparse.
    recent_turns: VecDeque<Instant>,
    closed: bool,
}

impl Queues {
    /// Queues `job` by its class, or refuses it; a background job can push
    /// the oldest one out, which is returned to be answered.
    fn admit(&mut self, job: Job) -> Result<Option<Job>, AsrError> {
        if self.closed {
            return Err(AsrError::ShutDown);
        }
        let mut pushed_out = None;
        match job.class {
            JobClass::Turn => {
                // Idle workers take a job at once, so they add to the
                // capacity: with a capacity of 0, a turn is accepted only
                // when a worker is free for it.
                if self.turns.len() >= self.turn_capacity + self.idle_workers {
                    return Err(AsrError::Busy);
                }
                self.preempt_a_partial();
                self.turns.push_back(job);
            }
            JobClass::Background => {
                if self.background.len() >= self.background_capacity {
                    pushed_out = self.background.pop_front();
                }
                self.preempt_a_partial();
                self.background.push_back(job);
            }
            JobClass::Partial => {
                if !self.worker_free() {
                    return Err(AsrError::Busy);
                }
                self.partials.push_back(job);
            }
        }
        Ok(pushed_out)
    }

    fn next_job(&mut self) -> Option<Job> {
        self.turns
            .pop_front()
            .or_else(|| self.background.pop_front())
            .or_else(|| self.partials.pop_front())
    }

    /// Whether a job submitted now would be picked up at once.
    fn worker_free(&self) -> bool {
        !self.lent
            && self.idle_workers > self.turns.len() + self.background.len() + self.partials.len()
    }

    /// Threads for `job`, just taken by a worker: more than one only for a
    /// turn while every other worker is idle and nothing else waits, and
    /// then the others are held back until [`Self::give_back`].
    fn threads_for(&mut self, job: &Job) -> Option<u16> {
        self.threads_for_at(job, Instant::now())
    }

    fn threads_for_at(&mut self, job: &Job, now: Instant) -> Option<u16> {
        if job.class != JobClass::Turn {
            return None;
        }
        // Under load a borrowed core costs more than it saves: two threads
        // use ~25 % more CPU per turn, and a turn arriving just after waits
        // for the lent core. Lending is for sparse turns only.
        let busy = self.recent_turns.len() >= LEND_WHEN_FEWER_THAN
            && self
                .recent_turns
                .front()
                .is_some_and(|oldest| now.duration_since(*oldest) < LEND_WINDOW);
        if self.recent_turns.len() >= LEND_WHEN_FEWER_THAN {
            self.recent_turns.pop_front();
        }
        self.recent_turns.push_back(now);
        let alone = !busy
            && self.idle_workers + 1 == self.workers
            && self.turns.is_empty()
            && self.background.is_empty()
            && self.partials.is_empty();
        // Only idle workers' cores are lent: a lone worker has none to borrow.
        let threads = self
            .threads_when_alone
            .min(u16::try_from(self.workers).unwrap_or(u16::MAX));
        if threads > 1 && alone {
            self.lent = true;
            Some(threads)
        } else {
            None
        }
    }

    /// The turn that borrowed the idle workers' cores is done: they may take
    /// jobs again.
    fn give_back(&mut self) {
        self.lent = false;
    }

    /// A turn or background job needs a worker none is free for: the
    /// oldest partial being decoded gives its worker up.
    fn preempt_a_partial(&mut self) {
        if self.idle_workers > self.turns.len() + self.background.len() {
            return;
        }
        if let Some(cancel) = self
            .running_partials
            .iter()
            .find(|c| !c.load(Ordering::Relaxed))
        {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

struct Shared {
    queues: Mutex<Queues>,
    job_ready: Condvar,
}

/// A fixed set of Whisper workers behind bounded, prioritised queues.
pub struct AsrPool {
    shared: Arc<Shared>,
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
        let background_capacity = BACKGROUND_BACKLOG_PER_WORKER * config.workers;
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                turns: VecDeque::with_capacity(config.queue_capacity),
                background: VecDeque::with_capacity(background_capacity),
                partials: VecDeque::with_capacity(config.workers),
                turn_capacity: config.queue_capacity,
                background_capacity,
                idle_workers: 0,
                running_partials: Vec::with_capacity(config.workers),
                workers: config.workers,
                threads_when_alone: config.threads_when_alone,
                lent: false,
                recent_turns: VecDeque::with_capacity(LEND_WHEN_FEWER_THAN),
                closed: false,
            }),
            job_ready: Condvar::new(),
        });
        let metrics = Arc::new(AsrMetrics::default());
        let mut workers = Vec::with_capacity(config.workers);
        for (index, transcriber) in transcribers.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let metrics = Arc::clone(&metrics);
            let on_job_done = config.on_job_done.clone();
            let shed_prompt = config.shed_prompt_when_busy;
            let handle = std::thread::Builder::new()
                .name(format!("asr-worker-{index}"))
                .spawn(move || {
                    worker_loop(
                        transcriber,
                        &shared,
                        &metrics,
                        on_job_done.as_deref(),
                        shed_prompt,
                    )
                })
                .map_err(|e| AsrError::Config(format!("cannot start ASR worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(AsrPool {
            shared,
            workers,
            metrics,
        })
    }

    /// Transcribes one utterance of a caller's turn on a worker.
    ///
    /// Returns [`AsrError::Busy`] immediately when the queue is full. Dropping
    /// the returned future (hang-up, timeout) cancels the job.
    pub async fn submit(&self, audio: Utterance) -> Result<Transcript, AsrError> {
        self.submit_as(JobClass::Turn, audio, None).await
    }

    /// [`submit`](Self::submit) with a window policy other than the model's.
    pub async fn submit_with(
        &self,
        audio: Utterance,
        window: Option<WindowPolicy>,
    ) -> Result<Transcript, AsrError> {
        self.submit_as(JobClass::Turn, audio, window).await
    }

    /// Transcribes at lower priority than turns, for the record only; see
    /// [`JobClass::Background`]. [`AsrError::Dropped`] when newer jobs
    /// pushed this one out of the backlog.
    pub async fn submit_background(&self, audio: Utterance) -> Result<Transcript, AsrError> {
        self.submit_as(JobClass::Background, audio, None).await
    }

    /// A live partial transcript, only if a worker is idle now
    /// ([`AsrError::Busy`] at once otherwise); [`AsrError::Cancelled`] when
    /// other work took the worker back. See [`JobClass::Partial`].
    pub async fn submit_partial(&self, audio: Utterance) -> Result<Transcript, AsrError> {
        self.submit_as(JobClass::Partial, audio, None).await
    }

    /// Whether a job submitted now would start at once.
    pub fn has_idle_worker(&self) -> bool {
        self.shared.queues.lock().worker_free()
    }

    /// Submits a job of `class`; the future's drop cancels it.
    pub async fn submit_as(
        &self,
        class: JobClass,
        audio: Utterance,
        window: Option<WindowPolicy>,
    ) -> Result<Transcript, AsrError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (reply, response) = oneshot::channel();
        let job = Job {
            audio,
            window,
            class,
            cancel: Arc::clone(&cancel),
            submitted_at: Instant::now(),
            reply,
        };
        self.enqueue(job)?;
        // No await between the enqueue and here, so a dropped future always
        // leaves this guard behind to cancel the job.
        let _cancel_on_drop = CancelOnDrop(cancel);
        response.await.unwrap_or(Err(AsrError::ShutDown))
    }

    fn enqueue(&self, job: Job) -> Result<(), AsrError> {
        let exported = &crate::metrics::pipeline().asr;
        let dropped = {
            let mut queues = self.shared.queues.lock();
            let pushed_out = match queues.admit(job) {
                Ok(pushed_out) => pushed_out,
                Err(refused) => {
                    if matches!(refused, AsrError::Busy) {
                        self.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(refused);
                }
            };
            // Counted under the lock, so the worker that takes the job never
            // decrements first.
            self.metrics.queued.fetch_add(1, Ordering::Relaxed);
            self.metrics.submitted.fetch_add(1, Ordering::Relaxed);
            exported.queue_slot().handed_over();
            pushed_out
        };
        self.shared.job_ready.notify_one();
        if let Some(old) = dropped {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            exported.queued.dec();
            let total = self
                .metrics
                .background_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if total.is_power_of_two() {
                warn!(
                    dropped_total = total,
                    audio_seconds = old.audio.seconds(),
                    "ASR backlog full: the oldest record-only transcription was dropped"
                );
            }
            // The submitter may have gone; nothing to do then.
            let _ = old.reply.send(Err(AsrError::Dropped));
        }
        Ok(())
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
        self.close();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("an ASR worker thread panicked");
            }
        }
    }

    fn close(&self) {
        self.shared.queues.lock().closed = true;
        self.shared.job_ready.notify_all();
    }
}

impl Drop for AsrPool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it drains; they are not
        // joined here so that dropping the pool never blocks the runtime.
        self.close();
    }
}

/// The next job for a worker, the threads to decode it with (`None`: the
/// model's), and whether turns are still waiting behind it; `None` once the
/// pool is closed and drained.
fn take_job(shared: &Shared) -> Option<(Job, Option<u16>, bool)> {
    let mut queues = shared.queues.lock();
    loop {
        // While another worker has this worker's core, jobs wait for it.
        let job = if queues.lent { None } else { queues.next_job() };
        if let Some(job) = job {
            if job.class == JobClass::Partial {
                queues.running_partials.push(Arc::clone(&job.cancel));
            }
            let threads = queues.threads_for(&job);
            let turns_waiting = !queues.turns.is_empty();
            return Some((job, threads, turns_waiting));
        }
        if queues.closed {
            return None;
        }
        queues.idle_workers += 1;
        shared.job_ready.wait(&mut queues);
        queues.idle_workers -= 1;
    }
}

fn worker_loop(
    mut transcriber: Transcriber,
    shared: &Shared,
    metrics: &AsrMetrics,
    on_job_done: Option<&(dyn Fn(&JobReport) + Send + Sync)>,
    shed_prompt_when_busy: bool,
) {
    let exported = &crate::metrics::pipeline().asr;
    let _alive = exported.worker_started();
    while let Some((job, threads, turns_waiting)) = take_job(shared) {
        metrics.queued.fetch_sub(1, Ordering::Relaxed);
        exported.queued.dec();
        let picked_up = Instant::now();
        let queue_wait = picked_up - job.submitted_at;
        let audio_seconds = job.audio.seconds();

        let prompted = !(shed_prompt_when_busy && turns_waiting);
        let result = if job.cancel.load(Ordering::Relaxed) || job.reply.is_closed() {
            Err(AsrError::Cancelled)
        } else {
            metrics.in_progress.fetch_add(1, Ordering::Relaxed);
            let busy = exported.busy_while();
            let audio = job.audio.into_16k();
            let options = TranscribeOptions {
                window: job.window,
                without_prompt: !prompted,
                cancel: Some(Arc::clone(&job.cancel)),
                threads,
            };
            let result = transcriber.transcribe(&audio, &options);
            metrics.in_progress.fetch_sub(1, Ordering::Relaxed);
            drop(busy);
            result
        };
        if job.class == JobClass::Partial {
            shared
                .queues
                .lock()
                .running_partials
                .retain(|c| !Arc::ptr_eq(c, &job.cancel));
        }
        if threads.is_some() {
            shared.queues.lock().give_back();
            shared.job_ready.notify_all();
        }
        let processing = picked_up.elapsed();

        let outcome = match &result {
            Ok(transcript) => {
                metrics.completed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::pipeline()
                    .asr_latency
                    .observe(crate::metrics::seconds(queue_wait + processing));
                // A guard trip rescued by the larger fitted retry is not a
                // full-window pass.
                let fell_back = transcript.window.fallback.is_some()
                    && transcript.window.audio_ctx == crate::asr::window::FULL_WINDOW;
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
        tracing::debug!(
            class = ?job.class,
            prompted,
            audio_seconds,
            queue_wait_ms = queue_wait.as_millis() as u64,
            processing_ms = processing.as_millis() as u64,
            threads = threads.unwrap_or(1),
            audio_ctx = result.as_ref().map_or(0, |t| t.window.audio_ctx),
            outcome = ?outcome,
            "ASR job done"
        );
        if let Some(hook) = on_job_done {
            hook(&JobReport {
                audio_seconds,
                queue_wait,
                processing,
                prompted,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(turn_capacity: usize, background_capacity: usize, idle_workers: usize) -> Queues {
        Queues {
            turns: VecDeque::new(),
            background: VecDeque::new(),
            partials: VecDeque::new(),
            turn_capacity,
            background_capacity,
            idle_workers,
            running_partials: Vec::new(),
            workers: idle_workers.max(1),
            threads_when_alone: 2,
            lent: false,
            recent_turns: VecDeque::new(),
            closed: false,
        }
    }

    /// Turns in quick succession (a busy switchboard) are decoded on one
    /// thread each even when a worker happens to be idle; once they thin
    /// out, a lone turn borrows the idle core again.
    #[test]
    fn no_core_is_lent_while_turns_come_thick_and_fast() {
        let mut q = queues(8, 4, 2);
        let start = Instant::now();
        let mut lent = Vec::new();
        for i in 0..6u64 {
            q.admit(job(JobClass::Turn, 1).0).unwrap();
            let turn = pick(&mut q).unwrap();
            lent.push(q.threads_for_at(&turn, start + Duration::from_millis(300 * i)));
            q.lent = false;
            q.idle_workers += 1;
        }
        assert_eq!(lent, vec![Some(2), Some(2), Some(2), Some(2), None, None]);
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        let turn = pick(&mut q).unwrap();
        assert_eq!(
            q.threads_for_at(&turn, start + Duration::from_secs(5)),
            Some(2)
        );
    }

    /// A turn picked up while the other worker idles gets both cores, and
    /// the other worker takes nothing until they are given back; a turn
    /// picked up with other work waiting, or a partial, gets one thread.
    #[test]
    fn an_idle_workers_core_is_lent_to_a_lone_turn_only() {
        // Two workers, both idle; the one picking up the turn is no longer idle.
        let mut q = queues(4, 4, 2);
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        let turn = pick(&mut q).unwrap();
        assert_eq!(q.threads_for(&turn), Some(2));
        assert!(q.lent);
        assert!(!q.worker_free(), "the lent core is not free for a partial");
        q.lent = false;

        // Two turns at once: each is decoded on its own core.
        let mut q = queues(4, 4, 2);
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        let first = pick(&mut q).unwrap();
        assert_eq!(q.threads_for(&first), None);
        assert!(!q.lent);

        // A partial never borrows.
        let mut q = queues(4, 4, 2);
        q.admit(job(JobClass::Partial, 1).0).unwrap();
        let partial = pick(&mut q).unwrap();
        assert_eq!(q.threads_for(&partial), None);

        // A lone worker has no idle worker's core to borrow.
        let mut q = queues(4, 4, 1);
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        let turn = pick(&mut q).unwrap();
        assert_eq!(q.threads_for(&turn), None);

        // Lending off.
        let mut q = queues(4, 4, 2);
        q.threads_when_alone = 1;
        q.admit(job(JobClass::Turn, 1).0).unwrap();
        let turn = pick(&mut q).unwrap();
        assert_eq!(q.threads_for(&turn), None);
    }

    fn job(
        class: JobClass,
        seconds: usize,
    ) -> (Job, oneshot::Receiver<Result<Transcript, AsrError>>) {
        let (reply, response) = oneshot::channel();
        let job = Job {
            audio: Utterance::Telephony8k(vec![0.0; seconds * 8_000]),
            window: None,
            class,
            cancel: Arc::new(AtomicBool::new(false)),
            submitted_at: Instant::now(),
            reply,
        };
        (job, response)
    }

    /// A worker took the next job; partials are tracked as running.
    fn pick(q: &mut Queues) -> Option<Job> {
        let job = q.next_job()?;
        if job.class == JobClass::Partial {
            q.running_partials.push(Arc::clone(&job.cancel));
        }
        q.idle_workers = q.idle_workers.saturating_sub(1);
        Some(job)
    }

    /// With the one worker decoding a partial, a turn takes the worker
    /// back: the partial is cancelled mid-decode and the turn transcribed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_takes_the_worker_back_from_a_partial() {
        let models = crate::config::Config::default().model_set();
        if !models.whisper_ggml.exists() {
            assert!(std::env::var_os("CI").is_none(), "Whisper missing under CI");
            eprintln!("*** SKIPPED: run `frontdoor models fetch` ***");
            return;
        }
        let model = AsrModel::load(&models.whisper_ggml, Default::default()).expect("Whisper");
        let pool = Arc::new(
            AsrPool::start(
                &model,
                AsrPoolConfig {
                    workers: 1,
                    queue_capacity: 2,
                    on_job_done: None,
                    threads_when_alone: 1,
                    shed_prompt_when_busy: true,
                },
            )
            .expect("pool"),
        );
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech_8k.wav");
        let speech = super::super::audio::read_wav_16k_mono(&path).expect("fixture");
        // Long enough that the partial is still decoding when the turn comes.
        let mut long = Vec::new();
        for _ in 0..8 {
            long.extend_from_slice(&speech);
        }
        let partial = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.submit_as(
                    JobClass::Partial,
                    Utterance::Wideband16k(long),
                    Some(WindowPolicy::Full),
                )
                .await
            })
        };
        let started = Instant::now();
        while pool.metrics().snapshot().in_progress == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the partial never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!pool.has_idle_worker());
        assert!(
            matches!(
                pool.submit_partial(Utterance::Wideband16k(speech.clone()))
                    .await,
                Err(AsrError::Busy)
            ),
            "a second partial is refused at once"
        );
        let turn = pool
            .submit(Utterance::Wideband16k(speech))
            .await
            .expect("the turn is transcribed");
        assert!(
            turn.text.to_lowercase().contains("young"),
            "{:?}",
            turn.text
        );
        assert!(matches!(
            partial.await.expect("task"),
            Err(AsrError::Cancelled)
        ));
        assert_eq!(pool.metrics().snapshot().cancelled, 1);
    }

    #[test]
    fn turns_are_served_before_background_and_partials() {
        let mut q = queues(4, 4, 0);
        // No worker idle: a partial is refused at once, never queued.
        assert!(matches!(
            q.admit(job(JobClass::Partial, 1).0),
            Err(AsrError::Busy)
        ));
        assert!(q.admit(job(JobClass::Background, 1).0).unwrap().is_none());
        assert!(q.admit(job(JobClass::Turn, 2).0).unwrap().is_none());
        assert_eq!(pick(&mut q).map(|j| j.class), Some(JobClass::Turn));
        assert_eq!(pick(&mut q).map(|j| j.class), Some(JobClass::Background));
        assert!(pick(&mut q).is_none());
    }

    #[test]
    fn a_partial_is_accepted_only_when_a_worker_is_free_for_it() {
        let mut q = queues(4, 4, 1);
        assert!(q.worker_free());
        assert!(q.admit(job(JobClass::Partial, 1).0).is_ok());
        // The idle worker is spoken for by the queued partial.
        assert!(!q.worker_free());
        assert!(matches!(
            q.admit(job(JobClass::Partial, 1).0),
            Err(AsrError::Busy)
        ));
    }

    #[test]
    fn a_turn_cancels_a_running_partial_when_no_worker_is_free() {
        let mut q = queues(4, 4, 1);
        q.admit(job(JobClass::Partial, 1).0).unwrap();
        let partial = pick(&mut q).expect("the idle worker takes the partial");
        assert!(!partial.cancel.load(Ordering::Relaxed));
        q.admit(job(JobClass::Turn, 2).0).unwrap();
        assert!(
            partial.cancel.load(Ordering::Relaxed),
            "the partial gives its worker up"
        );
    }

    #[test]
    fn a_turn_leaves_a_partial_alone_when_another_worker_is_idle() {
        let mut q = queues(4, 4, 2);
        q.admit(job(JobClass::Partial, 1).0).unwrap();
        let partial = pick(&mut q).expect("taken");
        q.admit(job(JobClass::Turn, 2).0).unwrap();
        assert!(!partial.cancel.load(Ordering::Relaxed));
        // A second turn finds no idle worker left: now the partial yields.
        q.admit(job(JobClass::Turn, 2).0).unwrap();
        assert!(partial.cancel.load(Ordering::Relaxed));
    }

    #[test]
    fn a_full_background_backlog_drops_its_oldest_job() {
        let mut q = queues(4, 2, 0);
        let (first, mut first_reply) = job(JobClass::Background, 1);
        q.admit(first).unwrap();
        q.admit(job(JobClass::Background, 2).0).unwrap();
        let pushed_out = q
            .admit(job(JobClass::Background, 3).0)
            .unwrap()
            .expect("oldest out");
        assert_eq!(pushed_out.audio.seconds(), 1.0);
        assert_eq!(q.background.len(), 2);
        assert_eq!(q.background.front().map(|j| j.audio.seconds()), Some(2.0));
        drop(pushed_out);
        assert!(
            first_reply.try_recv().is_err(),
            "answered by the pool, not here"
        );
    }

    #[test]
    fn turns_are_refused_beyond_capacity_plus_idle_workers() {
        let mut q = queues(0, 2, 1);
        assert!(q.admit(job(JobClass::Turn, 1).0).is_ok());
        assert!(matches!(
            q.admit(job(JobClass::Turn, 1).0),
            Err(AsrError::Busy)
        ));
        // Background work is never refused: it waits or pushes out older work.
        assert!(q.admit(job(JobClass::Background, 1).0).is_ok());
        q.closed = true;
        assert!(matches!(
            q.admit(job(JobClass::Background, 1).0),
            Err(AsrError::ShutDown)
        ));
    }
}
