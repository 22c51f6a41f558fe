//! Durable call records.
//!
//! [`CallStore`] is the interface every backend implements: SQLite on disk is
//! the embedded default ([`SqliteStore`]); a PostgreSQL backend shared by
//! several engine nodes implements the same trait. Backends are synchronous;
//! the engine talks to one through [`StoreHandle`], which owns a dedicated
//! writer thread and a bounded queue, so disk I/O never blocks the async
//! runtime and records are written in the order events happened.
//!
//! Each event is its own committed transaction: a crash of the engine loses
//! nothing already written, and on the next start-up calls left open are
//! closed as `interrupted`.

mod read;
mod sqlite;
mod sqlite_read;

use std::sync::Arc;
use std::thread;

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use read::{
    CallDetail, CallEventRecord, CallQueries, CallSearch, CallSummary, Kpis, StoreReader,
};
pub use sqlite::SqliteStore;
pub use sqlite_read::{MAX_SEARCH_LIMIT, SqliteQueries, TextSearch, clamp_limit};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the call store has shut down")]
    Closed,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupBy {
    Caller,
    Frontdoor,
    System,
}

impl HangupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Frontdoor => "frontdoor",
            HangupBy::System => "system",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewCall {
    pub id: String,
    pub sip_call_id: String,
    pub caller: String,
    pub callee: String,
    pub route: Option<String>,
    pub source: String,
    pub node: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    pub packets_rx: u64,
    pub packets_tx: u64,
    pub lost: i64,
    pub jitter_ms: f64,
}

#[derive(Debug, Clone)]
pub struct CallEnd {
    pub ended_at: DateTime<Utc>,
    pub reason: String,
    pub hangup_by: HangupBy,
    /// The final response Frontdoor sent to the INVITE.
    pub sip_status: Option<u16>,
    pub stats: Option<MediaStats>,
}

/// A call as stored, for the CLI, the dashboard and tests.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub id: String,
    pub sip_call_id: String,
    pub caller: String,
    pub callee: String,
    pub route: Option<String>,
    pub state: String,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub hangup_by: Option<String>,
    pub sip_status: Option<i64>,
    pub codec: Option<String>,
    pub rtp_packets_rx: Option<i64>,
    pub rtp_packets_tx: Option<i64>,
    pub rtp_lost: Option<i64>,
    pub rtp_jitter_ms: Option<f64>,
    pub recording_path: Option<String>,
}

/// One exchange in a conversation: what was heard and what the AI decided.
#[derive(Debug, Clone, Serialize)]
pub struct TurnRecord {
    pub call_id: String,
    pub at: DateTime<Utc>,
    /// `caller`, `assistant` or `agent`.
    pub speaker: String,
    pub text: String,
    pub intent: Option<String>,
    pub confidence: Option<f32>,
    pub escalation: Option<String>,
    /// The rule or score behind the decision, for the audit trail.
    pub reason: Option<String>,
}

/// A request the assistant completed on its own (a "deflected" call).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub call_id: String,
    pub at: DateTime<Utc>,
    pub reference: String,
    pub kind: String,
    /// Collected details (address, bin type, ...), as JSON.
    pub details_json: String,
}

/// An append-only audit entry: a decision the AI made or an action a person took.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `ai`, `system`, or the user name of a person.
    pub actor: String,
    pub action: String,
    pub call_id: Option<String>,
    pub detail: String,
}

/// A hand-off to a person (by the AI or a supervisor), written when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct TransferRecord {
    pub call_id: String,
    pub requested_at: DateTime<Utc>,
    /// `ai` or the dashboard user who took the call over.
    pub requested_by: String,
    /// distress, safeguarding, emergency, human_request, complexity, supervisor.
    pub reason: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// completed, referred, caller_gone, no_agent, not_configured.
    pub outcome: String,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeResult {
    pub turns_deleted: usize,
    /// Transfer summaries/transcripts and request details cleared.
    pub details_cleared: usize,
    /// Recording files whose records were cleared; the caller deletes them.
    pub recordings: Vec<String>,
}

/// A storage backend. Implementations must make each call durable before
/// returning (for SQLite: a committed WAL transaction).
pub trait CallStore: Send + 'static {
    fn call_started(&mut self, call: &NewCall) -> Result<(), StoreError>;
    fn call_answered(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        codec: &str,
        recording_path: Option<&str>,
    ) -> Result<(), StoreError>;
    fn call_event(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
    fn call_ended(&mut self, id: &str, end: &CallEnd) -> Result<(), StoreError>;
    /// Closes calls this node left open (a crash) as `interrupted`; returns how many.
    fn close_interrupted(&mut self, node: &str, at: DateTime<Utc>) -> Result<usize, StoreError>;
    fn turn(&mut self, turn: &TurnRecord) -> Result<(), StoreError>;
    fn request(&mut self, request: &RequestRecord) -> Result<(), StoreError>;
    fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;
    fn transfer(&mut self, transfer: &TransferRecord) -> Result<(), StoreError>;
    /// A person's action on a call (`flagged`, `takeover`, ...): a call event
    /// of kind `action` and an audit entry with the user as actor, together.
    fn supervisor_action(
        &mut self,
        call_id: &str,
        at: DateTime<Utc>,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
    /// Retention, one bounded batch: at most `max_calls` calls per side,
    /// oldest first, in one transaction; returns what was removed and whether
    /// more calls remain past the cutoffs. See [`CallStore::purge_before`].
    fn purge_batch(
        &mut self,
        transcripts_before: Option<DateTime<Utc>>,
        recordings_before: Option<DateTime<Utc>>,
        max_calls: usize,
    ) -> Result<(PurgeResult, bool), StoreError>;
    /// Retention. Transcripts: for every ENDED call that started before
    /// `transcripts_before`, deletes its turns, clears the summary and
    /// transcript from its `transfer` call events, blanks its `dtmf` events and
    /// empties its requests' details (the request itself, its reference and
    /// kind stay for the statistics). Whole calls are purged, never half a
    /// conversation: the cutoff applies to the call's start, not to each turn.
    /// Recordings: for every ended call that started before
    /// `recordings_before`, clears `recording_path` and returns the paths so
    /// the caller deletes the files. Calls in progress are never touched and
    /// the audit log is append-only (the database refuses it anyway). Purged
    /// calls are marked (`transcript_purged_at`, `recording_purged_at`).
    fn purge_before(
        &mut self,
        transcripts_before: Option<DateTime<Utc>>,
        recordings_before: Option<DateTime<Utc>>,
    ) -> Result<PurgeResult, StoreError> {
        let mut total = PurgeResult::default();
        loop {
            let (batch, more) =
                self.purge_batch(transcripts_before, recordings_before, PURGE_BATCH_CALLS)?;
            total.absorb(batch);
            if !more {
                return Ok(total);
            }
        }
    }
    fn turns(&mut self, call_id: &str) -> Result<Vec<TurnRecord>, StoreError>;
    fn audit_for_call(&mut self, call_id: &str) -> Result<Vec<AuditEntry>, StoreError>;
    fn call(&mut self, id: &str) -> Result<Option<CallRecord>, StoreError>;
    fn recent_calls(&mut self, limit: usize) -> Result<Vec<CallRecord>, StoreError>;
}

/// Calls purged per transaction: small enough that the writer thread gets
/// back to live calls' records within milliseconds, even on a first purge of
/// years of history.
pub const PURGE_BATCH_CALLS: usize = 200;

impl PurgeResult {
    /// Adds another batch's counts and paths to these.
    pub fn absorb(&mut self, batch: PurgeResult) {
        self.turns_deleted += batch.turns_deleted;
        self.details_cleared += batch.details_cleared;
        self.recordings.extend(batch.recordings);
    }
}

enum Command {
    Started(NewCall),
    Answered {
        id: String,
        at: DateTime<Utc>,
        codec: String,
        recording: Option<String>,
    },
    Event {
        id: String,
        at: DateTime<Utc>,
        kind: &'static str,
        detail: String,
    },
    Ended {
        id: String,
        end: CallEnd,
    },
    Turn(TurnRecord),
    Request(RequestRecord),
    Audit(AuditEntry),
    Transfer(TransferRecord),
    SupervisorAction {
        call_id: String,
        at: DateTime<Utc>,
        user: String,
        action: String,
        detail: String,
    },
    PurgeBatch {
        transcripts_before: Option<DateTime<Utc>>,
        recordings_before: Option<DateTime<Utc>>,
        reply: oneshot::Sender<Result<(PurgeResult, bool), StoreError>>,
    },
    CloseInterrupted {
        node: String,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Result<Option<CallRecord>, StoreError>>,
    },
    Recent {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<CallRecord>, StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

/// Async front of a [`CallStore`]: cheap to clone, writes are queued in order.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    _thread: Arc<WriterThread>,
}

struct WriterThread(Option<thread::JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        // The channel closes when the last handle drops; the thread then drains
        // what is queued and exits. Joining here makes that drain complete.
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// Writes queued beyond this back-pressure the engine (a full disk should slow
/// call set-up down, never drop records silently).
const QUEUE_DEPTH: usize = 4096;

impl StoreHandle {
    pub fn spawn(mut store: impl CallStore) -> StoreHandle {
        let (tx, mut rx) = mpsc::channel::<Command>(QUEUE_DEPTH);
        let thread = thread::Builder::new()
            .name("call-store".into())
            .spawn(move || {
                while let Some(cmd) = rx.blocking_recv() {
                    let result = match cmd {
                        Command::Started(call) => store.call_started(&call),
                        Command::Answered {
                            id,
                            at,
                            codec,
                            recording,
                        } => store.call_answered(&id, at, &codec, recording.as_deref()),
                        Command::Event {
                            id,
                            at,
                            kind,
                            detail,
                        } => store.call_event(&id, at, kind, &detail),
                        Command::Ended { id, end } => store.call_ended(&id, &end),
                        Command::Turn(t) => store.turn(&t),
                        Command::Request(r) => store.request(&r),
                        Command::Audit(a) => store.audit(&a),
                        Command::Transfer(t) => store.transfer(&t),
                        Command::SupervisorAction {
                            call_id,
                            at,
                            user,
                            action,
                            detail,
                        } => store.supervisor_action(&call_id, at, &user, &action, &detail),
                        Command::PurgeBatch {
                            transcripts_before,
                            recordings_before,
                            reply,
                        } => {
                            let _ = reply.send(store.purge_batch(
                                transcripts_before,
                                recordings_before,
                                PURGE_BATCH_CALLS,
                            ));
                            Ok(())
                        }
                        Command::CloseInterrupted { node, reply } => {
                            let _ = reply.send(store.close_interrupted(&node, Utc::now()));
                            Ok(())
                        }
                        Command::Get { id, reply } => {
                            let _ = reply.send(store.call(&id));
                            Ok(())
                        }
                        Command::Recent { limit, reply } => {
                            let _ = reply.send(store.recent_calls(limit));
                            Ok(())
                        }
                        Command::Flush(reply) => {
                            let _ = reply.send(());
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::error!(error = %e, "call record write failed");
                    }
                }
            })
            .expect("spawning the call-store thread");
        StoreHandle {
            tx,
            _thread: Arc::new(WriterThread(Some(thread))),
        }
    }

    async fn send(&self, cmd: Command) {
        if self.tx.send(cmd).await.is_err() {
            tracing::error!("call store is closed; a record was not written");
        }
    }

    pub async fn call_started(&self, call: NewCall) {
        self.send(Command::Started(call)).await
    }

    pub async fn call_answered(&self, id: &str, codec: &str, recording: Option<String>) {
        self.send(Command::Answered {
            id: id.to_string(),
            at: Utc::now(),
            codec: codec.to_string(),
            recording,
        })
        .await
    }

    /// A timestamped event in the call's history (hold, resume, DTMF, ...).
    pub async fn call_event(&self, id: &str, kind: &'static str, detail: impl Into<String>) {
        self.send(Command::Event {
            id: id.to_string(),
            at: Utc::now(),
            kind,
            detail: detail.into(),
        })
        .await
    }

    pub async fn call_ended(&self, id: &str, end: CallEnd) {
        self.send(Command::Ended {
            id: id.to_string(),
            end,
        })
        .await
    }

    pub async fn turn(&self, turn: TurnRecord) {
        self.send(Command::Turn(turn)).await
    }

    pub async fn request(&self, request: RequestRecord) {
        self.send(Command::Request(request)).await
    }

    pub async fn audit(&self, entry: AuditEntry) {
        self.send(Command::Audit(entry)).await
    }

    /// Records a finished hand-off.
    pub async fn transfer(&self, transfer: TransferRecord) {
        self.send(Command::Transfer(transfer)).await
    }

    /// A dashboard user's action on a call (`flagged`, `takeover`,
    /// `hangup_by_supervisor`, ...): stored as a call event of that kind and
    /// an audit entry with the user as actor, in one transaction. `detail`
    /// must already be redacted.
    pub async fn supervisor_action(&self, call_id: &str, user: &str, action: &str, detail: &str) {
        self.send(Command::SupervisorAction {
            call_id: call_id.to_string(),
            at: Utc::now(),
            user: user.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
        })
        .await
    }

    /// Retention purge; see [`CallStore::purge_before`]. Runs in batches of
    /// [`PURGE_BATCH_CALLS`] calls, each queued behind the writes already
    /// waiting, so live calls' records are never held up for long. The
    /// returned recording paths are no longer referenced by any call: the
    /// caller deletes the files and audits the purge.
    pub async fn purge_before(
        &self,
        transcripts_before: Option<DateTime<Utc>>,
        recordings_before: Option<DateTime<Utc>>,
    ) -> Result<PurgeResult, StoreError> {
        let mut total = PurgeResult::default();
        loop {
            let (reply, rx) = oneshot::channel();
            self.send(Command::PurgeBatch {
                transcripts_before,
                recordings_before,
                reply,
            })
            .await;
            let (batch, more) = rx.await.map_err(|_| StoreError::Closed)??;
            total.absorb(batch);
            if !more {
                return Ok(total);
            }
        }
    }

    pub async fn close_interrupted(&self, node: &str) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::CloseInterrupted {
            node: node.to_string(),
            reply,
        })
        .await;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Get {
            id: id.to_string(),
            reply,
        })
        .await;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Recent { limit, reply }).await;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush(reply)).await;
        let _ = rx.await;
    }
}
