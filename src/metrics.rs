//! Engine metrics exported to Prometheus on `/metrics`.
//!
//! Per-engine counters live in [`Metrics`]. The speech pipeline's
//! measurements (ASR/TTS latency, worker queues and saturation, hand-off
//! queues) live in one process-wide [`PipelineMetrics`] ([`pipeline`]): the
//! worker pools are built before any `Metrics` exists and are shared by
//! every call, so they write to it directly, without allocating, and each
//! `Metrics` registry exports it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// `asr` or `tts`.
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

/// A worker pool's gauges, as handles into the labelled families.
#[derive(Debug, Clone)]
pub struct PoolGauges {
    /// Jobs waiting for a worker.
    pub queued: Gauge,
    /// Workers running a job now.
    pub busy: Gauge,
    /// Worker threads alive.
    pub workers: Gauge,
    /// busy / workers, refreshed when the metrics are rendered.
    saturation: Gauge<f64, AtomicU64>,
}

impl PoolGauges {
    /// Counts a worker thread until the guard drops (the thread ends, even
    /// by panic).
    pub fn worker_started(&self) -> CountedWhileAlive {
        CountedWhileAlive::new(self.workers.clone())
    }

    /// Counts a busy worker until the guard drops.
    pub fn busy_while(&self) -> CountedWhileAlive {
        CountedWhileAlive::new(self.busy.clone())
    }

    /// Counts a queued job until it is [handed over](QueueSlot::handed_over)
    /// to the queue or the slot is dropped (the send failed or was
    /// abandoned). The worker that takes the job decrements [`Self::queued`].
    pub fn queue_slot(&self) -> QueueSlot {
        self.queued.inc();
        QueueSlot {
            queued: Some(self.queued.clone()),
        }
    }

    fn refresh_saturation(&self) {
        let workers = self.workers.get();
        let ratio = if workers > 0 {
            self.busy.get().max(0) as f64 / workers as f64
        } else {
            0.0
        };
        self.saturation.set(ratio);
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub struct CountedWhileAlive(Gauge);

impl CountedWhileAlive {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        CountedWhileAlive(gauge)
    }
}

impl Drop for CountedWhileAlive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A job counted as queued before it is sent, so a fast worker never takes
/// the count below zero; see [`PoolGauges::queue_slot`].
#[derive(Debug)]
pub struct QueueSlot {
    queued: Option<Gauge>,
}

impl QueueSlot {
    /// The job is in the queue; its worker now owns the count.
    pub fn handed_over(mut self) {
        self.queued = None;
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        if let Some(queued) = self.queued.take() {
            queued.dec();
        }
    }
}

/// Speech pipeline and hand-off measurements, one set per process.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Submit to transcript, queue wait included, per transcription.
    pub asr_latency: Histogram,
    /// Request queued to its first sentence of audio.
    pub tts_first_audio: Histogram,
    /// Synthesis time of each sentence.
    pub tts_sentence: Histogram,
    pub asr: PoolGauges,
    pub tts: PoolGauges,
    queue_depth: Family<PoolLabel, Gauge>,
    busy: Family<PoolLabel, Gauge>,
    workers: Family<PoolLabel, Gauge>,
    saturation: Family<PoolLabel, Gauge<f64, AtomicU64>>,
    handoff_queue_depth: Family<QueueLabel, Gauge>,
    /// Partial (non-final) caller transcripts published for the dashboard.
    pub partial_transcripts: Counter,
}

impl PipelineMetrics {
    fn new() -> PipelineMetrics {
        let queue_depth = Family::<PoolLabel, Gauge>::default();
        let busy = Family::<PoolLabel, Gauge>::default();
        let workers = Family::<PoolLabel, Gauge>::default();
        let saturation = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        let pool = |name: &'static str| {
            let label = PoolLabel { pool: name };
            PoolGauges {
                queued: queue_depth.get_or_create_owned(&label),
                busy: busy.get_or_create_owned(&label),
                workers: workers.get_or_create_owned(&label),
                saturation: saturation.get_or_create_owned(&label),
            }
        };
        let asr = pool("asr");
        let tts = pool("tts");
        PipelineMetrics {
            // 50 ms to ~13 s: a short turn on an idle pool up to a long one
            // behind a full queue.
            asr_latency: Histogram::new(exponential_buckets(0.05, 2.0, 9)),
            // 25 ms to ~6 s.
            tts_first_audio: Histogram::new(exponential_buckets(0.025, 2.0, 9)),
            tts_sentence: Histogram::new(exponential_buckets(0.025, 2.0, 9)),
            asr,
            tts,
            queue_depth,
            busy,
            workers,
            saturation,
            handoff_queue_depth: Family::default(),
            partial_transcripts: Counter::default(),
        }
    }

    /// Records how many callers wait in a hand-off queue now.
    pub fn set_handoff_queue_depth(&self, queue: &str, waiting: usize) {
        self.handoff_queue_depth
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "asr_latency_seconds",
            "Speech recognition latency per transcription, from submit to transcript (queue wait included)",
            self.asr_latency.clone(),
        );
        registry.register(
            "tts_first_audio_seconds",
            "Speech synthesis latency from request to its first sentence of audio",
            self.tts_first_audio.clone(),
        );
        registry.register(
            "tts_sentence_seconds",
            "Speech synthesis time per sentence",
            self.tts_sentence.clone(),
        );
        registry.register(
            "worker_queue_depth",
            "Jobs waiting for a speech worker, by pool (asr, tts)",
            self.queue_depth.clone(),
        );
        registry.register(
            "worker_busy",
            "Speech workers running a job, by pool",
            self.busy.clone(),
        );
        registry.register(
            "workers",
            "Speech worker threads, by pool",
            self.workers.clone(),
        );
        registry.register(
            "worker_saturation",
            "Busy workers / workers, by pool (1 = every worker busy)",
            self.saturation.clone(),
        );
        registry.register(
            "handoff_queue_depth",
            "Callers waiting for an agent, by hand-off queue",
            self.handoff_queue_depth.clone(),
        );
        registry.register(
            "partial_transcripts",
            "Partial (non-final) caller transcripts published to the live view",
            self.partial_transcripts.clone(),
        );
    }

    fn refresh(&self) {
        self.asr.refresh_saturation();
        self.tts.refresh_saturation();
    }
}

static PIPELINE: LazyLock<PipelineMetrics> = LazyLock::new(PipelineMetrics::new);

/// The process-wide pipeline metrics.
pub fn pipeline() -> &'static PipelineMetrics {
    &PIPELINE
}

/// Seconds, as Prometheus histograms want them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Engine-wide counters, shared by the engine and the HTTP server.
pub struct Metrics {
    registry: Registry,
    pub calls_active: Gauge,
    pub calls_total: Family<OutcomeLabel, Counter>,
    pub sip_rejected_total: Family<OutcomeLabel, Counter>,
    pub accepting: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("frontdoor");
        let calls_active = Gauge::default();
        let calls_total = Family::<OutcomeLabel, Counter>::default();
        let sip_rejected_total = Family::<OutcomeLabel, Counter>::default();
        registry.register("calls_active", "Calls in progress", calls_active.clone());
        registry.register(
            "calls",
            "Calls finished, by outcome (caller_hangup, frontdoor_hangup, cancelled, media_timeout, failed, rejected)",
            calls_total.clone(),
        );
        registry.register(
            "sip_rejected",
            "INVITEs refused, by reason (busy, shutting_down, no_route, no_codec, bad_request)",
            sip_rejected_total.clone(),
        );
        pipeline().register(&mut registry);
        Arc::new(Metrics {
            registry,
            calls_active,
            calls_total,
            sip_rejected_total,
            accepting: AtomicBool::new(true),
        })
    }

    pub fn call_finished(&self, outcome: &str) {
        self.calls_total
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.sip_rejected_total
            .get_or_create(&OutcomeLabel {
                outcome: reason.to_string(),
            })
            .inc();
    }

    /// Records how many callers wait in a hand-off queue now (call on every
    /// change, and with 0 when a queue empties).
    pub fn set_handoff_queue_depth(&self, queue: &str, waiting: usize) {
        pipeline().set_handoff_queue_depth(queue, waiting);
    }

    pub fn render(&self) -> String {
        pipeline().refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line starting with `series` (name and
    /// labels as rendered).
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(series)?;
                rest.strip_prefix(' ')?.trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    }

    #[test]
    fn pipeline_families_are_rendered_with_their_values() {
        let metrics = Metrics::new();
        let pipeline = pipeline();
        pipeline.asr_latency.observe(0.3);
        pipeline.tts_first_audio.observe(0.12);
        pipeline.tts_sentence.observe(0.08);
        metrics.set_handoff_queue_depth("council_tax", 3);

        // Other tests in this process may run pools too, so gauges are
        // checked as "at least what this test holds".
        let _worker = pipeline.asr.worker_started();
        let _busy = pipeline.asr.busy_while();
        let waiting = pipeline.tts.queue_slot();
        let text = metrics.render();

        for family in [
            "# TYPE frontdoor_asr_latency_seconds histogram",
            "# TYPE frontdoor_tts_first_audio_seconds histogram",
            "# TYPE frontdoor_tts_sentence_seconds histogram",
            "# TYPE frontdoor_worker_queue_depth gauge",
            "# TYPE frontdoor_worker_busy gauge",
            "# TYPE frontdoor_workers gauge",
            "# TYPE frontdoor_worker_saturation gauge",
            "# TYPE frontdoor_handoff_queue_depth gauge",
            "# TYPE frontdoor_calls_active gauge",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        assert!(sample(&text, "frontdoor_asr_latency_seconds_count") >= 1.0);
        assert!(sample(&text, "frontdoor_asr_latency_seconds_sum") >= 0.3);
        assert!(sample(&text, r#"frontdoor_asr_latency_seconds_bucket{le="0.4"}"#) >= 1.0);
        assert!(sample(&text, "frontdoor_tts_first_audio_seconds_count") >= 1.0);
        assert!(sample(&text, "frontdoor_tts_sentence_seconds_count") >= 1.0);
        assert!(sample(&text, r#"frontdoor_workers{pool="asr"}"#) >= 1.0);
        assert!(sample(&text, r#"frontdoor_worker_busy{pool="asr"}"#) >= 1.0);
        let saturation = sample(&text, r#"frontdoor_worker_saturation{pool="asr"}"#);
        assert!(saturation > 0.0 && saturation <= 1.0, "{saturation}");
        assert!(sample(&text, r#"frontdoor_worker_queue_depth{pool="tts"}"#) >= 1.0);
        assert_eq!(
            sample(
                &text,
                r#"frontdoor_handoff_queue_depth{queue="council_tax"}"#
            ),
            3.0
        );

        // An abandoned queue slot gives its count back.
        let before = pipeline.tts.queued.get();
        drop(waiting);
        assert_eq!(pipeline.tts.queued.get(), before - 1);
        metrics.set_handoff_queue_depth("council_tax", 0);
        assert_eq!(
            sample(
                &metrics.render(),
                r#"frontdoor_handoff_queue_depth{queue="council_tax"}"#
            ),
            0.0
        );
    }
}
