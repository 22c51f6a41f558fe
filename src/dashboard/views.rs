//! Dashboard pages and APIs: the live board, a call's live and recorded
//! view, history, KPIs and the admin page, with the JSON, SSE and WebSocket
//! endpoints behind them (routes in /work/notes/contract6.md).
//!
//! Every route needs a session (the extractors of [`super::auth`]); anything
//! that changes a call needs the session's CSRF token too. Views of call
//! content (transcript, recording, listen-in) and every action are audited
//! with the user as actor.

mod assets;
mod pages;

use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use futures_util::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::auth::{AdminPage, ApiUser, CsrfUser, PageUser, SessionUser};
use super::live::{FLAG_KINDS, LiveCall, LiveCallDetail};
use crate::config::Role;
use crate::control::{ControlError, ListenFrame, SupervisorCommand, TakeOverTarget};
use crate::handoff::{AgentState, AgentStateError, HandoffSection};
use crate::http::AppState;
use crate::store::{AuditEntry, CallDetail, CallSearch, StoreError};

pub use pages::escape;

/// History rows per page unless asked otherwise, and the most one request may ask.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Deep paging beyond this is not a person browsing.
const MAX_OFFSET: usize = 100_000;
/// Longest free-text filter or note accepted.
const MAX_FILTER_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 2_000;
/// Call ids are UUIDs; anything much longer is not one of ours.
const MAX_ID_CHARS: usize = 128;
/// An event stream ends after this long and the browser reconnects, which
/// checks the session again: a logged-out or expired session stops
/// receiving live transcripts within this time.
const STREAM_REAUTH: Duration = Duration::from_secs(300);

/// Browsers may only load what the dashboard itself serves; no inline
/// script, so an injected `<script>` could not run even if escaping failed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/static/{file}", get(assets::serve))
        .route("/", get(board_page))
        .route("/calls/{id}", get(call_page))
        .route("/calls/{id}/recording", get(recording))
        .route("/history", get(history_page))
        .route("/kpis", get(kpis_page))
        .route("/admin", get(admin_page))
        .route("/api/live", get(api_live))
        .route("/api/events", get(api_events))
        .route("/api/calls", get(api_calls))
        .route("/api/calls/{id}", get(api_call))
        .route("/api/calls/{id}/listen", get(api_listen))
        .route("/api/calls/{id}/takeover", post(api_takeover))
        .route("/api/calls/{id}/hangup", post(api_hangup))
        .route("/api/calls/{id}/flag", post(api_flag))
        .route("/api/kpis", get(api_kpis))
        .route("/api/agents/{id}/state", post(api_agent_state))
}

// ---------------------------------------------------------------- errors

/// Why an API request failed; rendered as `{"error": "..."}`.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such call")]
    NotFound,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("call records are unavailable")]
    Store(#[from] StoreError),
    #[error(transparent)]
    AgentState(#[from] AgentStateError),
    #[error("agents are not available on this engine")]
    NoHandoff,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Query(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Target(TargetError::NoAgent) => StatusCode::CONFLICT,
            ApiError::Target(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::Control(ControlError::NotFound) => StatusCode::NOT_FOUND,
            ApiError::Control(_) => StatusCode::CONFLICT,
            ApiError::Store(_) | ApiError::NoHandoff => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AgentState(AgentStateError::UnknownAgent) => StatusCode::NOT_FOUND,
            ApiError::AgentState(AgentStateError::NotChoosable(_)) => StatusCode::BAD_REQUEST,
            ApiError::AgentState(_) => StatusCode::CONFLICT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(e) = &self {
            tracing::error!(error = %e, "dashboard query failed");
        }
        json_response(
            self.status(),
            &serde_json::json!({ "error": self.to_string() }),
        )
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let mut response = (status, Json(value)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

fn viewer(user: &SessionUser) -> pages::Viewer<'_> {
    pages::Viewer {
        name: &user.name,
        role: user.role.as_str(),
        csrf: &user.csrf,
        is_admin: user.role == Role::Admin,
    }
}

fn message_page(user: &SessionUser, status: StatusCode, title: &str, message: &str) -> Response {
    html_response(status, pages::message_page(&viewer(user), title, message))
}

// ---------------------------------------------------------------- query parsing

/// A history or KPI query as it arrives (all text, all optional; empty
/// fields from a submitted form count as absent).
#[derive(Debug, Default, Deserialize)]
pub struct CallQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub number: Option<String>,
    pub intent: Option<String>,
    pub escalation: Option<String>,
    pub q: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{field}: {value:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")]
    BadTime { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a number between {min} and {max}")]
    BadNumber {
        field: &'static str,
        value: String,
        min: usize,
        max: usize,
    },
    #[error(
        "escalation: {0:?} is not one of any, distress, safeguarding, emergency, human_request, complexity"
    )]
    BadEscalation(String),
    #[error("{0}: longer than {MAX_FILTER_CHARS} characters")]
    TooLong(&'static str),
    #[error("from must be before to")]
    EmptyRange,
    #[error("the query string was not understood: {0}")]
    Malformed(String),
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Parses a time bound. A bare date means the start of that day (UTC); as
/// an upper bound (`end_of_day`) it includes the whole day, which is what
/// someone picking "to 3 March" means.
pub fn parse_time(
    field: &'static str,
    value: &str,
    end_of_day: bool,
) -> Result<DateTime<Utc>, QueryError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    // An unencoded `+01:00` offset arrives as a space in a query string.
    if value.contains(' ')
        && let Ok(t) = DateTime::parse_from_rfc3339(&value.replace(' ', "+"))
    {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || QueryError::BadTime {
        field,
        value: value.chars().take(64).collect(),
    };
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| bad())?;
    let date = if end_of_day {
        date.succ_opt().ok_or_else(bad)?
    } else {
        date
    };
    Ok(date.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc())
}

fn parse_bounded(
    field: &'static str,
    value: Option<&str>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, QueryError> {
    let Some(value) = value else {
        return Ok(default);
    };
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| QueryError::BadNumber {
            field,
            value: value.chars().take(32).collect(),
            min,
            max,
        })
}

fn text_filter(field: &'static str, value: &Option<String>) -> Result<Option<String>, QueryError> {
    match present(value) {
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(QueryError::TooLong(field)),
        Some(v) => Ok(Some(v.to_string())),
        None => Ok(None),
    }
}

/// Turns history query parameters into a search.
pub fn parse_search(query: &CallQuery) -> Result<CallSearch, QueryError> {
    let from = present(&query.from)
        .map(|v| parse_time("from", v, false))
        .transpose()?;
    let to = present(&query.to)
        .map(|v| parse_time("to", v, true))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(QueryError::EmptyRange);
    }
    let escalation = match present(&query.escalation) {
        Some(e) if e == "any" || FLAG_KINDS.contains(&e) => Some(e.to_string()),
        Some(e) => return Err(QueryError::BadEscalation(e.chars().take(64).collect())),
        None => None,
    };
    Ok(CallSearch {
        from,
        to,
        number: text_filter("number", &query.number)?,
        intent: text_filter("intent", &query.intent)?,
        escalation,
        words: text_filter("q", &query.q)?,
        limit: parse_bounded("limit", present(&query.limit), DEFAULT_LIMIT, 1, MAX_LIMIT)?,
        offset: parse_bounded("offset", present(&query.offset), 0, 0, MAX_OFFSET)?,
    })
}

/// A KPI period: `[from, to)`. Without bounds, the last seven days
/// including today.
pub fn parse_kpi_range(
    query: &CallQuery,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), QueryError> {
    let to = match present(&query.to) {
        Some(v) => parse_time("to", v, true)?,
        None => (now.date_naive().succ_opt().unwrap_or(now.date_naive()))
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| t.and_utc()),
    };
    let from = match present(&query.from) {
        Some(v) => parse_time("from", v, false)?,
        None => to - ChronoDuration::days(7),
    };
    if from >= to {
        return Err(QueryError::EmptyRange);
    }
    Ok((from, to))
}

fn query_or_error(
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Result<CallQuery, QueryError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| QueryError::Malformed(e.body_text().chars().take(200).collect()))
}

// ---------------------------------------------------------------- take-over targets

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("you have no agent phone configured, so the call cannot be taken over to you")]
    NoAgent,
    #[error(
        "{0:?} is not a take-over target (use me, agent:<id> or queue:<name> of a configured agent or queue)"
    )]
    Unknown(String),
}

/// Parses a take-over target: `me` (the user's own agent phone),
/// `agent:<id>` or `queue:<name>`; only configured agents and queues.
pub fn parse_target(
    raw: &str,
    own_agent: Option<&str>,
    handoff: &HandoffSection,
) -> Result<TakeOverTarget, TargetError> {
    let raw = raw.trim();
    let unknown = || TargetError::Unknown(raw.chars().take(64).collect());
    if raw == "me" {
        return own_agent
            .map(|a| TakeOverTarget::Agent(a.to_string()))
            .ok_or(TargetError::NoAgent);
    }
    if let Some(id) = raw.strip_prefix("agent:") {
        return handoff
            .agent
            .iter()
            .any(|a| a.id == id)
            .then(|| TakeOverTarget::Agent(id.to_string()))
            .ok_or_else(unknown);
    }
    if let Some(name) = raw.strip_prefix("queue:") {
        return handoff
            .queue
            .iter()
            .any(|q| q.name == name)
            .then(|| TakeOverTarget::Queue(name.to_string()))
            .ok_or_else(unknown);
    }
    Err(unknown())
}

/// The take-over choices the call page offers this user, `(value, label)`.
fn target_choices(user: &SessionUser, handoff: &HandoffSection) -> Vec<(String, String)> {
    let mut choices = Vec::new();
    if let Some(agent) = &user.agent {
        choices.push(("me".to_string(), format!("Me ({agent})")));
    }
    for a in &handoff.agent {
        choices.push((format!("agent:{}", a.id), format!("Agent {}", a.id)));
    }
    for q in &handoff.queue {
        choices.push((format!("queue:{}", q.name), format!("Queue {}", q.name)));
    }
    choices
}

// ---------------------------------------------------------------- recordings

/// The recording file a call record names, only when it really lies
/// inside `dir` (after resolving `..` and symbolic links) and is a file.
pub fn resolve_recording(dir: &FsPath, recorded: &str) -> Option<PathBuf> {
    let recorded = FsPath::new(recorded);
    let candidate = if recorded.is_absolute() {
        recorded.to_path_buf()
    } else {
        dir.join(recorded)
    };
    let root = dir.canonicalize().ok()?;
    let real = candidate.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

// ---------------------------------------------------------------- shared lookups

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub name: String,
    pub waiting: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub state: String,
}

/// What `/api/live` returns and the event stream sends as `board`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSnapshot {
    pub calls: Vec<LiveCall>,
    pub queues: Vec<QueueView>,
    pub agents: Vec<AgentView>,
}

fn queue_views(state: &AppState) -> Vec<QueueView> {
    state
        .config
        .handoff
        .queue
        .iter()
        .map(|q| QueueView {
            name: q.name.clone(),
            waiting: state.handoff.as_ref().map_or(0, |h| h.waiting(&q.name)),
        })
        .collect()
}

async fn agent_views(state: &AppState) -> Vec<AgentView> {
    let ids: Vec<String> = state
        .config
        .handoff
        .agent
        .iter()
        .map(|a| a.id.clone())
        .collect();
    match &state.handoff {
        Some(handoff) => handoff
            .directory()
            .statuses(&ids)
            .await
            .into_iter()
            .map(|s| AgentView {
                id: s.id,
                state: s.state.as_str().to_string(),
            })
            .collect(),
        None => ids
            .into_iter()
            .map(|id| AgentView {
                id,
                state: "offline".to_string(),
            })
            .collect(),
    }
}

async fn live_snapshot(state: &AppState) -> LiveSnapshot {
    state.board.reconcile(&state.live.ids());
    LiveSnapshot {
        calls: state.board.calls(),
        queues: queue_views(state),
        agents: agent_views(state).await,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_ID_CHARS
}

/// A call's records: the reader's full detail, else the bare call record
/// (a call so new the reader has not seen it, or a store without the read
/// side).
async fn load_detail(state: &AppState, id: &str) -> Result<Option<CallDetail>, StoreError> {
    if let Some(detail) = state.reader.call_detail(id).await? {
        return Ok(Some(detail));
    }
    Ok(state.store.call(id).await?.map(|call| CallDetail {
        call,
        turns: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
        requests: Vec::new(),
        transfers: Vec::new(),
    }))
}

/// Records that a person looked at or listened to call content.
async fn audit_view(
    state: &AppState,
    user: &SessionUser,
    action: &str,
    call_id: &str,
    detail: &str,
) {
    state
        .store
        .audit(AuditEntry {
            at: Utc::now(),
            actor: user.name.clone(),
            action: action.to_string(),
            call_id: Some(call_id.to_string()),
            detail: state.redactor.redact(detail).into_owned(),
        })
        .await;
}

// ---------------------------------------------------------------- pages

async fn board_page(State(state): State<AppState>, PageUser(user): PageUser) -> Response {
    let snapshot = live_snapshot(&state).await;
    html_response(
        StatusCode::OK,
        pages::board_page(
            &viewer(&user),
            &snapshot.calls,
            &snapshot.queues,
            &snapshot.agents,
        ),
    )
}

async fn call_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(id): Path<String>,
) -> Response {
    if !valid_id(&id) {
        return message_page(
            &user,
            StatusCode::NOT_FOUND,
            "No such call",
            "There is no call with that id.",
        );
    }
    let live = state.board.call(&id);
    let detail = match load_detail(&state, &id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "loading a call for its page");
            return message_page(
                &user,
                StatusCode::SERVICE_UNAVAILABLE,
                "Records unavailable",
                "The call records cannot be read just now; try again shortly.",
            );
        }
    };
    if live.is_none() && detail.is_none() {
        return message_page(
            &user,
            StatusCode::NOT_FOUND,
            "No such call",
            "There is no call with that id.",
        );
    }
    audit_view(&state, &user, "view_transcript", &id, "call page").await;
    let targets = target_choices(&user, &state.config.handoff);
    let page = pages::CallPage {
        id: &id,
        live: live.as_ref(),
        detail: detail.as_ref(),
        targets: &targets,
    };
    html_response(StatusCode::OK, pages::call_page(&viewer(&user), &page))
}

async fn history_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Response {
    let raw = query.as_ref().map(|Query(q)| q).ok();
    let value =
        |f: fn(&CallQuery) -> &Option<String>| raw.and_then(|q| f(q).as_deref()).unwrap_or("");
    let form = pages::HistoryForm {
        from: value(|q| &q.from),
        to: value(|q| &q.to),
        number: value(|q| &q.number),
        intent: value(|q| &q.intent),
        escalation: value(|q| &q.escalation),
        q: value(|q| &q.q),
    };
    let search = match raw {
        Some(q) => parse_search(q),
        None => Err(QueryError::Malformed(
            "the search was not understood".into(),
        )),
    };
    let viewer = viewer(&user);
    match search {
        Err(e) => html_response(
            StatusCode::BAD_REQUEST,
            pages::history_page(&viewer, &form, Err(&e.to_string())),
        ),
        Ok(search) => match state.reader.search_calls(search).await {
            Ok(rows) => html_response(
                StatusCode::OK,
                pages::history_page(&viewer, &form, Ok(&rows)),
            ),
            Err(e) => {
                tracing::error!(error = %e, "history search failed");
                html_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::history_page(
                        &viewer,
                        &form,
                        Err("The call records cannot be searched just now."),
                    ),
                )
            }
        },
    }
}

async fn kpis_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Response {
    let range = query_or_error(query).and_then(|q| parse_kpi_range(&q, Utc::now()));
    let (from, to) = match range {
        Ok(r) => r,
        Err(e) => return message_page(&user, StatusCode::BAD_REQUEST, "KPIs", &e.to_string()),
    };
    match state.reader.kpis(from, to).await {
        Ok(kpis) => {
            // The form shows the inclusive last day, as it was picked.
            let last_day = (to - ChronoDuration::seconds(1)).date_naive();
            html_response(
                StatusCode::OK,
                pages::kpis_page(
                    &viewer(&user),
                    &from.date_naive().to_string(),
                    &last_day.to_string(),
                    &kpis,
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "KPI query failed");
            message_page(
                &user,
                StatusCode::SERVICE_UNAVAILABLE,
                "KPIs",
                "The call records cannot be read just now.",
            )
        }
    }
}

async fn admin_page(State(state): State<AppState>, AdminPage(user): AdminPage) -> Response {
    let names = state.auth.user_names();
    let users: Vec<pages::UserView> = names
        .iter()
        .map(|(name, role, agent)| pages::UserView {
            name,
            role: role.as_str(),
            agent: agent.as_deref(),
        })
        .collect();
    let agents = agent_views(&state).await;
    let queues: Vec<(QueueView, Vec<String>)> = queue_views(&state)
        .into_iter()
        .zip(state.config.handoff.queue.iter())
        .map(|(view, spec)| (view, spec.members.clone()))
        .collect();
    let gov = &state.config.governance;
    let admin = pages::AdminView {
        users: &users,
        agents: &agents,
        queues: &queues,
        redact: &gov.redact,
        transcript_retention_days: gov.transcript_retention_days,
        recording_retention_days: gov.recording_retention_days,
        purge_interval_mins: gov.purge_interval_mins,
    };
    html_response(StatusCode::OK, pages::admin_page(&viewer(&user), &admin))
}

// ---------------------------------------------------------------- JSON APIs

async fn api_live(State(state): State<AppState>, ApiUser(_user): ApiUser) -> Response {
    json_response(StatusCode::OK, &live_snapshot(&state).await)
}

async fn api_calls(
    State(state): State<AppState>,
    ApiUser(_user): ApiUser,
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let search = parse_search(&query_or_error(query)?)?;
    let rows = state.reader.search_calls(search).await?;
    Ok(json_response(StatusCode::OK, &rows))
}

/// A call's records and, while it is live, its live state.
#[derive(Serialize)]
struct CallView {
    #[serde(flatten)]
    detail: Option<CallDetail>,
    live: Option<LiveCallDetail>,
}

async fn api_call(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError::NotFound);
    }
    let live = state.board.call(&id);
    let detail = load_detail(&state, &id).await?;
    if live.is_none() && detail.is_none() {
        return Err(ApiError::NotFound);
    }
    audit_view(&state, &user, "view_transcript", &id, "api").await;
    Ok(json_response(StatusCode::OK, &CallView { detail, live }))
}

async fn api_kpis(
    State(state): State<AppState>,
    ApiUser(_user): ApiUser,
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (from, to) = parse_kpi_range(&query_or_error(query)?, Utc::now())?;
    let kpis = state.reader.kpis(from, to).await?;
    Ok(json_response(StatusCode::OK, &kpis))
}

/// Only the first request of a playback is audited: a player fetches the
/// file in several ranges, and one listen should be one entry.
fn starts_playback(headers: &HeaderMap) -> bool {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|range| range.trim().starts_with("bytes=0-"))
}

async fn recording(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError::NotFound);
    }
    let record = state.store.call(&id).await?.ok_or(ApiError::NotFound)?;
    let recorded = record.recording_path.ok_or(ApiError::NotFound)?;
    let dir = state.recordings_dir.clone();
    let file = tokio::task::spawn_blocking(move || resolve_recording(&dir, &recorded))
        .await
        .ok()
        .flatten()
        .ok_or(ApiError::NotFound)?;
    if starts_playback(request.headers()) {
        audit_view(&state, &user, "play_recording", &id, "").await;
    }
    let served = tower_http::services::ServeFile::new(&file)
        .try_call(request)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, path = %file.display(), "serving a recording");
            ApiError::NotFound
        })?;
    let mut response = served.map(axum::body::Body::new);
    let is_content = response_is_content(response.status());
    let headers = response.headers_mut();
    if is_content {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

fn response_is_content(status: StatusCode) -> bool {
    status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT
}

// ---------------------------------------------------------------- actions

#[derive(Deserialize)]
struct TakeOverBody {
    target: String,
}

#[derive(Deserialize)]
struct FlagBody {
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct AgentStateBody {
    state: String,
}

fn body_or_error<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text().chars().take(200).collect()))
}

async fn api_takeover(
    State(state): State<AppState>,
    CsrfUser(user): CsrfUser,
    Path(id): Path<String>,
    body: Result<Json<TakeOverBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body)?;
    let target = parse_target(&body.target, user.agent.as_deref(), &state.config.handoff)?;
    let detail = match &target {
        TakeOverTarget::Agent(a) => format!("to agent {a}"),
        TakeOverTarget::Queue(q) => format!("to queue {q}"),
    };
    state.live.command(
        &id,
        SupervisorCommand::TakeOver {
            by: user.name.clone(),
            target,
        },
    )?;
    let detail = state.redactor.redact(&detail).into_owned();
    state
        .store
        .supervisor_action(&id, &user.name, "takeover", &detail)
        .await;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "status": format!("taking over {detail}") }),
    ))
}

async fn api_hangup(
    State(state): State<AppState>,
    CsrfUser(user): CsrfUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.live.command(
        &id,
        SupervisorCommand::Hangup {
            by: user.name.clone(),
        },
    )?;
    state
        .store
        .supervisor_action(&id, &user.name, "hangup", "")
        .await;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "status": "hanging up" }),
    ))
}

async fn api_flag(
    State(state): State<AppState>,
    CsrfUser(user): CsrfUser,
    Path(id): Path<String>,
    body: Result<Json<FlagBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body)?;
    if body.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    if !valid_id(&id) {
        return Err(ApiError::NotFound);
    }
    if !state.board.contains(&id) && state.store.call(&id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let note = state.redactor.redact(body.note.trim()).into_owned();
    state
        .store
        .supervisor_action(&id, &user.name, "flagged", &note)
        .await;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "status": "flagged for review" }),
    ))
}

/// A supervisor or admin sets an agent's state: `available`, `break`,
/// `wrap_up` or `offline` (the others follow calls). Refused with 409
/// while the agent is ringing or on a call. Audited with the user as actor.
async fn api_agent_state(
    State(state): State<AppState>,
    CsrfUser(user): CsrfUser,
    Path(id): Path<String>,
    body: Result<Json<AgentStateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body)?;
    if !state.config.handoff.agent.iter().any(|a| a.id == id) {
        return Err(AgentStateError::UnknownAgent.into());
    }
    let wanted = AgentState::parse_chosen(body.state.trim()).ok_or_else(|| {
        ApiError::BadRequest(
            "state must be \"available\", \"break\", \"wrap_up\" or \"offline\"".into(),
        )
    })?;
    let handoff = state.handoff.as_ref().ok_or(ApiError::NoHandoff)?;
    let result = handoff.set_agent_state(&id, wanted).await;
    let detail = match &result {
        Ok(now) => format!("agent {id}: {} (asked {})", now.as_str(), wanted.as_str()),
        Err(e) => format!("agent {id}: {} refused: {e}", wanted.as_str()),
    };
    state
        .store
        .audit(AuditEntry {
            at: Utc::now(),
            actor: user.name.clone(),
            action: "agent_state".to_string(),
            call_id: None,
            detail,
        })
        .await;
    let now = result?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "agent": id, "state": now.as_str() }),
    ))
}

// ---------------------------------------------------------------- live streams

#[derive(Deserialize)]
struct EventsQuery {
    /// A call page's call: its live transcript so far comes first.
    call: Option<String>,
}

fn sse_json(kind: &'static str, value: &impl Serialize) -> Option<Event> {
    serde_json::to_string(value)
        .ok()
        .map(|json| Event::default().event(kind).data(json))
}

async fn api_events(
    State(state): State<AppState>,
    ApiUser(_user): ApiUser,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before taking the snapshot: an event in between is then
    // seen twice (the pages apply events idempotently) rather than never.
    let rx = state.events.subscribe();
    let mut first = Vec::with_capacity(2);
    first.extend(sse_json("board", &live_snapshot(&state).await));
    if let Ok(Query(EventsQuery { call: Some(id) })) = query
        && let Some(live) = state.board.call(&id)
    {
        first.extend(sse_json("call_snapshot", &live));
    }
    let head = stream::iter(first.into_iter().map(Ok));
    let tail = stream::unfold((rx, state), |(mut rx, state)| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if let Some(sse) = sse_json("call", &*event) {
                        return Some((Ok(sse), (rx, state)));
                    }
                }
                // Missed events: a fresh board lets the page catch up.
                Err(RecvError::Lagged(_)) => {
                    if let Some(sse) = sse_json("board", &live_snapshot(&state).await) {
                        return Some((Ok(sse), (rx, state)));
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream = head
        .chain(tail)
        .take_until(tokio::time::sleep(STREAM_REAUTH));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Whether a WebSocket handshake comes from a page of this server. Browsers
/// always send `Origin` on WebSocket handshakes and cookies ride along, so
/// without this check any site could listen in through a supervisor's
/// browser. Clients that send no `Origin` are not browsers.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

async fn api_listen(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Ok(json_response(
            StatusCode::FORBIDDEN,
            &serde_json::json!({ "error": "cross-origin listen-in refused" }),
        ));
    }
    let frames = state.live.listen(&id).ok_or(ApiError::NotFound)?;
    audit_view(&state, &user, "listen_in", &id, "").await;
    Ok(ws.on_upgrade(move |socket| pump_listen(socket, frames)))
}

/// 320 samples as 640 bytes little-endian, as the browser reads them.
fn frame_bytes(frame: &ListenFrame) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(frame.len() * 2);
    for sample in frame.iter() {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    bytes
}

async fn pump_listen(mut socket: WebSocket, mut frames: broadcast::Receiver<ListenFrame>) {
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if socket.send(Message::Binary(frame_bytes(&frame).into())).await.is_err() {
                        return;
                    }
                }
                // A slow listener skips audio rather than delaying the call.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "call ended".into(),
                        })))
                        .await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests;
