//! Read side of the call records for the dashboard: the query types, the
//! [`CallQueries`] interface a backend implements, and [`StoreReader`], its
//! async front.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AuditEntry, CallRecord, RequestRecord, StoreError, TransferRecord, TurnRecord};

/// History search; every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct CallSearch {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Substring of the caller's or the dialled number.
    pub number: Option<String>,
    pub intent: Option<String>,
    /// `distress`, `safeguarding`, `emergency`, `human_request`, `complexity`, or `any`.
    pub escalation: Option<String>,
    /// Words that appear in the call's transcript.
    pub words: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// One row of the history list.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub route: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_secs: Option<f64>,
    pub end_reason: Option<String>,
    pub intents: Vec<String>,
    pub escalations: Vec<String>,
    pub transferred: bool,
    pub has_recording: bool,
    pub flagged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallEventRecord {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

/// Everything about one call, for its page.
#[derive(Debug, Clone, Serialize)]
pub struct CallDetail {
    pub call: CallRecord,
    pub turns: Vec<TurnRecord>,
    pub events: Vec<CallEventRecord>,
    pub audit: Vec<AuditEntry>,
    pub requests: Vec<RequestRecord>,
    pub transfers: Vec<TransferRecord>,
}

/// What the council reports, over `[from, to)`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Kpis {
    /// Calls answered (refused ones are counted in `refused`).
    pub calls_handled: u64,
    /// Answered calls that ended without a transfer to a person.
    pub contained: u64,
    /// contained / calls_handled (0 when no calls).
    pub deflection_rate: f64,
    pub escalations_by_reason: Vec<(String, u64)>,
    pub transfers: u64,
    /// Average time from transfer request to an agent answering.
    pub avg_agent_wait_secs: Option<f64>,
    /// Average time from INVITE to answer.
    pub avg_time_to_answer_secs: Option<f64>,
    /// Calls started in each hour of the day (local time), 24 entries.
    pub calls_by_hour: Vec<u64>,
    pub refused: u64,
}

/// Read queries over the records; a PostgreSQL backend implements this too.
pub trait CallQueries: Send + Sync + 'static {
    fn search_calls(&self, query: &CallSearch) -> Result<Vec<CallSummary>, StoreError>;
    fn call_detail(&self, id: &str) -> Result<Option<CallDetail>, StoreError>;
    fn kpis(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Kpis, StoreError>;
}

/// Async front of a [`CallQueries`]: queries run on the blocking pool, on
/// their own connections, so a long history search never delays the writer.
#[derive(Clone)]
pub struct StoreReader {
    inner: Arc<dyn CallQueries>,
}

impl StoreReader {
    /// Read-only connections to `data_dir/frontdoor.db`, which the writer
    /// ([`super::SqliteStore::open`]) must have created already.
    pub fn open_sqlite(data_dir: &Path) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            inner: Arc::new(super::SqliteQueries::open(data_dir)?),
        })
    }

    pub fn new(inner: Arc<dyn CallQueries>) -> StoreReader {
        StoreReader { inner }
    }

    pub async fn search_calls(&self, query: CallSearch) -> Result<Vec<CallSummary>, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.search_calls(&query))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub async fn call_detail(&self, id: &str) -> Result<Option<CallDetail>, StoreError> {
        let inner = self.inner.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || inner.call_detail(&id))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub async fn kpis(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Kpis, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.kpis(from, to))
            .await
            .map_err(|_| StoreError::Closed)?
    }
}
