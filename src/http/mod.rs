//! HTTP surface: `/healthz` and Prometheus `/metrics` (the supervisor
//! dashboard joins them here).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

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

    fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// What HTTP handlers can reach: engine metrics, the call store and the live
/// event bus.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub store: crate::store::StoreHandle,
    pub events: crate::events::EventBus,
    pub config: Arc<crate::config::Config>,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.metrics.accepting.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds the HTTP listener (so a port clash fails start-up) and returns the
/// server future, which ends when `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((local, fut))
}
