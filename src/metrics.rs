//! Engine metrics exported to Prometheus on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
