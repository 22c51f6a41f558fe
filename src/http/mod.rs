//! HTTP surface: `/healthz` and Prometheus `/metrics` (the supervisor
//! dashboard joins them here).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

pub use crate::metrics::{Metrics, OutcomeLabel};

/// What HTTP handlers can reach: engine metrics, the call store and the live
/// event bus.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub store: crate::store::StoreHandle,
    pub events: crate::events::EventBus,
    pub config: Arc<crate::config::Config>,
    /// Read queries for the dashboard (own connections, off the writer).
    pub reader: crate::store::StoreReader,
    /// Live calls a supervisor can act on (hang up, take over, listen in).
    pub live: crate::control::LiveCalls,
    /// Agents and queues, when configured.
    pub handoff: Option<crate::handoff::Handoff>,
    /// Dashboard users, sessions and login throttling.
    pub auth: Arc<crate::dashboard::auth::Auth>,
    /// Redacts personal data from anything the dashboard writes to the audit log.
    pub redactor: Arc<crate::governance::Redactor>,
    pub recordings_dir: std::path::PathBuf,
    /// Calls in progress as the live board shows them.
    pub board: crate::dashboard::live::LiveBoard,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.metrics.accepting.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(handoff) = &state.handoff {
        for queue in &state.config.handoff.queue {
            state
                .metrics
                .set_handoff_queue_depth(&queue.name, handoff.waiting(&queue.name));
        }
    }
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
        .merge(if state.config.dashboard.enabled {
            crate::dashboard::router()
        } else {
            Router::new()
        })
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
        // Client addresses feed the dashboard's per-address login throttle.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    };
    Ok((local, fut))
}
