//! Dashboard authentication: users from configuration, argon2id passwords,
//! server-side sessions, CSRF tokens and login throttling.
//!
//! Handlers take one of the extractors below to say who may call them:
//! [`PageUser`] (HTML pages: no session redirects to the login form),
//! [`AdminPage`] (admin-only pages), [`ApiUser`] (JSON and streams: no session
//! is a 401) and [`CsrfUser`] (state-changing requests: also checks the
//! `X-CSRF-Token` header against the session's token).

#[path = "csrf.rs"]
mod csrf;
#[path = "session.rs"]
pub mod session;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::{DashboardSection, Role};
use crate::http::AppState;
use crate::store::AuditEntry;

pub use csrf::tokens_match;
use session::{MemorySessionStore, SessionKey, SessionLimits, SessionStore, StoredSession};

/// The session cookie: an opaque random id, HttpOnly, SameSite=Strict.
pub const SESSION_COOKIE: &str = "frontdoor_session";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "frontdoor_login_csrf";
/// The header state-changing API calls carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a login form stays usable.
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Expired sessions are swept at most this often (on the request path).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const MAX_SESSIONS: usize = 10_000;
const MAX_SESSIONS_PER_USER: usize = 32;
/// Distinct user names / client addresses tracked for throttling.
const MAX_THROTTLE_ENTRIES: usize = 10_000;
/// Longer inputs are rejected before hashing (argon2 time grows with them).
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_USER_NAME_BYTES: usize = 128;
/// Redirect targets longer than this fall back to `/`.
const MAX_NEXT_BYTES: usize = 2048;
/// A login waiting this long for a free verifier is told to retry.
const VERIFY_QUEUE_TIMEOUT: Duration = Duration::from_secs(15);

const LOGIN_HTML: &str = include_str!("login.html");

/// Who is signed in on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionUser {
    pub name: String,
    pub role: Role,
    /// The hand-off agent id whose phone "take over → to me" rings.
    pub agent: Option<String>,
    /// The session's CSRF token; pages embed it as
    /// `<meta name="csrf-token" content="...">`.
    pub csrf: String,
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("dashboard user {user}: {reason}")]
    User { user: String, reason: String },
    #[error("dashboard user {0:?} is configured more than once")]
    DuplicateUser(String),
    #[error("dashboard setting {setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: &'static str,
    },
    #[error("hashing a password: {0}")]
    Hash(String),
}

/// Where "now" comes from; tests substitute a hand-driven clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

struct Account {
    role: Role,
    agent: Option<String>,
    /// Validated argon2 PHC string.
    phc: String,
}

/// Users, sessions and login throttling.
pub struct Auth {
    accounts: HashMap<String, Account>,
    /// Configuration order, for listing.
    names: Vec<String>,
    /// Verified against when the user name is unknown, so a wrong name takes
    /// as long as a wrong password.
    decoy_phc: String,
    sessions: Arc<dyn SessionStore>,
    limits: SessionLimits,
    secure_cookies: bool,
    throttle: LoginThrottle,
    /// Each argon2 verification holds ~19 MiB and a core for tens of
    /// milliseconds: bound how many run at once so a login flood cannot
    /// exhaust memory or the blocking pool.
    verifiers: Arc<Semaphore>,
    /// Logged once: without client addresses only user names are throttled.
    warned_no_client_addr: AtomicBool,
    clock: Arc<dyn Clock>,
    last_sweep: Mutex<SystemTime>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes.
        f.debug_struct("Auth")
            .field("users", &self.names)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An argon2id PHC string for `plain` with a fresh random salt
/// (`frontdoor dashboard hash-password`).
pub fn hash_password(plain: &str) -> Result<String, AuthError> {
    if plain.is_empty() {
        return Err(AuthError::Hash("the password is empty".into()));
    }
    if plain.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::Hash(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Argon2::default()
        .hash_password(plain.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `plain` matches the PHC string. Slow by design: call it off the
/// async runtime.
fn verify_password(plain: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(plain.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks a configured PHC string is an argon2 hash this build can verify.
fn validate_phc(phc: &str) -> Result<(), String> {
    let hash =
        PasswordHash::new(phc).map_err(|e| format!("password_hash is not a PHC string ({e})"))?;
    let algorithm = hash.algorithm.as_str();
    if !matches!(algorithm, "argon2id" | "argon2i" | "argon2d") {
        return Err(format!(
            "password_hash uses {algorithm}; expected argon2id (`frontdoor dashboard hash-password`)"
        ));
    }
    argon2::Params::try_from(&hash).map_err(|e| format!("password_hash parameters: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("password_hash has no salt or no hash".into());
    }
    Ok(())
}

impl Auth {
    pub fn from_config(cfg: &DashboardSection) -> Result<Auth, AuthError> {
        Self::from_config_with_env(cfg, |var| std::env::var(var).ok())
    }

    /// As `from_config`, reading `password_env` variables through `env`.
    fn from_config_with_env(
        cfg: &DashboardSection,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Auth, AuthError> {
        let setting = |setting, reason| AuthError::Setting { setting, reason };
        if cfg.session_idle_mins == 0 {
            return Err(setting("session_idle_mins", "must be at least 1"));
        }
        if cfg.session_max_hours == 0 {
            return Err(setting("session_max_hours", "must be at least 1"));
        }
        if cfg.login_attempts == 0 {
            return Err(setting("login_attempts", "must be at least 1"));
        }
        if cfg.login_window_secs == 0 {
            return Err(setting("login_window_secs", "must be at least 1"));
        }

        let mut accounts = HashMap::with_capacity(cfg.user.len());
        let mut names = Vec::with_capacity(cfg.user.len());
        for user in &cfg.user {
            let fail = |reason: String| AuthError::User {
                user: user.name.clone(),
                reason,
            };
            if user.name.trim().is_empty() || user.name.len() > MAX_USER_NAME_BYTES {
                return Err(fail(format!(
                    "the name must be 1 to {MAX_USER_NAME_BYTES} bytes"
                )));
            }
            if user.name.chars().any(char::is_control) {
                return Err(fail("the name contains control characters".into()));
            }
            if accounts.contains_key(&user.name) {
                return Err(AuthError::DuplicateUser(user.name.clone()));
            }
            let phc = match (&user.password_hash, &user.password_env) {
                (Some(_), Some(_)) => {
                    return Err(fail("set password_hash or password_env, not both".into()));
                }
                (None, None) => {
                    return Err(fail("needs password_hash or password_env".into()));
                }
                (Some(phc), None) => {
                    validate_phc(phc).map_err(fail)?;
                    phc.clone()
                }
                (None, Some(var)) => match env(var) {
                    Some(plain) if !plain.is_empty() => hash_password(&plain)
                        .map_err(|e| fail(format!("password_env {var}: {e}")))?,
                    Some(_) => return Err(fail(format!("password_env {var} is empty"))),
                    None => return Err(fail(format!("password_env {var} is not set"))),
                },
            };
            names.push(user.name.clone());
            accounts.insert(
                user.name.clone(),
                Account {
                    role: user.role,
                    agent: user.agent.clone(),
                    phc,
                },
            );
        }

        let decoy_phc = hash_password(&csrf::random_token())?;
        let verifier_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(Auth {
            accounts,
            names,
            decoy_phc,
            sessions: Arc::new(MemorySessionStore::new(MAX_SESSIONS, MAX_SESSIONS_PER_USER)),
            limits: SessionLimits {
                idle: Duration::from_secs(cfg.session_idle_mins.saturating_mul(60)),
                absolute: Duration::from_secs(cfg.session_max_hours.saturating_mul(3600)),
            },
            secure_cookies: cfg.secure_cookies,
            throttle: LoginThrottle::new(
                cfg.login_attempts,
                Duration::from_secs(cfg.login_window_secs),
                MAX_THROTTLE_ENTRIES,
            ),
            verifiers: Arc::new(Semaphore::new(verifier_count)),
            warned_no_client_addr: AtomicBool::new(false),
            last_sweep: Mutex::new(clock.now()),
            clock,
        })
    }

    /// Replaces the in-memory session store (a shared store for several
    /// engines, later).
    pub fn with_session_store(mut self, store: Arc<dyn SessionStore>) -> Auth {
        self.sessions = store;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Auth {
        *self.last_sweep.get_mut() = clock.now();
        self.clock = clock;
        self
    }

    /// Configured users (name, role, agent) in configuration order; never
    /// their hashes.
    pub fn user_names(&self) -> Vec<(String, Role, Option<String>)> {
        self.names
            .iter()
            .filter_map(|name| {
                self.accounts
                    .get(name)
                    .map(|a| (name.clone(), a.role, a.agent.clone()))
            })
            .collect()
    }

    /// Checks a user name and password. Always costs one argon2
    /// verification, known user or not. `None` when the verifiers are
    /// saturated for too long.
    pub async fn check_password(&self, name: &str, password: &str) -> Option<bool> {
        let account = self.accounts.get(name);
        let phc = account.map_or(&self.decoy_phc, |a| &a.phc).clone();
        // Over-long input still pays for a verification (of a short stand-in)
        // so its rejection is not faster than a wrong password's.
        let (plain, acceptable) = if password.len() > MAX_PASSWORD_BYTES || password.is_empty() {
            (String::from("-"), false)
        } else {
            (password.to_owned(), true)
        };
        let permit =
            tokio::time::timeout(VERIFY_QUEUE_TIMEOUT, self.verifiers.clone().acquire_owned())
                .await
                .ok()?
                .ok()?;
        // The permit moves into the blocking task: a client that hangs up
        // mid-login must not free its slot while the hash still runs.
        let matched = tokio::task::spawn_blocking(move || {
            let matched = verify_password(&plain, &phc);
            drop(permit);
            matched
        })
        .await
        .unwrap_or(false);
        Some(matched && acceptable && account.is_some())
    }

    /// Starts a session for a user who just proved their password: a fresh
    /// id (never one the browser offered) and a fresh CSRF token. Returns
    /// the cookie value.
    async fn start_session(
        &self,
        name: &str,
    ) -> Result<(String, SessionUser), session::SessionStoreError> {
        let account = self
            .accounts
            .get(name)
            .ok_or_else(|| session::SessionStoreError::Unavailable("no such user".into()))?;
        let user = SessionUser {
            name: name.to_owned(),
            role: account.role,
            agent: account.agent.clone(),
            csrf: csrf::random_token(),
        };
        let id = csrf::random_token();
        let now = self.clock.now();
        self.sessions
            .insert(
                SessionKey::of(&id),
                StoredSession {
                    user: user.clone(),
                    created: now,
                    last_seen: now,
                },
            )
            .await?;
        Ok((id, user))
    }

    /// The signed-in user of a request, if its session cookie names a live
    /// session. Marks the session active.
    pub async fn session_user(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<SessionUser>, session::SessionStoreError> {
        self.maybe_sweep().await;
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        if !looks_like_token(id) {
            return Ok(None);
        }
        self.sessions
            .touch(SessionKey::of(id), self.clock.now(), self.limits)
            .await
    }

    /// Whether the request's session is still live, without extending it:
    /// for streams (events, listen-in) that should end at logout or expiry
    /// but must not keep an unattended session alive by themselves.
    pub async fn is_signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers, SESSION_COOKIE).filter(|id| looks_like_token(id)) else {
            return false;
        };
        matches!(
            self.sessions
                .peek(SessionKey::of(id), self.clock.now(), self.limits)
                .await,
            Ok(Some(_))
        )
    }

    /// Ends the request's session, if any; returns who it belonged to.
    async fn end_session(&self, headers: &HeaderMap) -> Option<SessionUser> {
        let id = cookie(headers, SESSION_COOKIE).filter(|id| looks_like_token(id))?;
        self.sessions
            .remove(SessionKey::of(id))
            .await
            .ok()
            .flatten()
    }

    async fn maybe_sweep(&self) {
        let now = self.clock.now();
        {
            let mut last = self.last_sweep.lock();
            match now.duration_since(*last) {
                Ok(elapsed) if elapsed >= SWEEP_INTERVAL => *last = now,
                _ => return,
            }
        }
        if let Err(e) = self.sessions.sweep(now, self.limits).await {
            tracing::warn!(error = %e, "sweeping expired dashboard sessions");
        }
    }

    fn session_cookie(&self, id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.limits.absolute.as_secs(),
            self.secure_attr()
        )
    }

    fn clear_cookie(&self, name: &str, path: &str) -> String {
        format!(
            "{name}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.secure_attr()
        )
    }

    fn login_csrf_cookie(&self, token: &str) -> String {
        format!(
            "{LOGIN_CSRF_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={}{}",
            LOGIN_FORM_LIFETIME.as_secs(),
            self.secure_attr()
        )
    }

    fn secure_attr(&self) -> &'static str {
        if self.secure_cookies { "; Secure" } else { "" }
    }
}

/// Session ids and CSRF tokens are 64 hex characters; anything else is not
/// worth a lookup.
fn looks_like_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The value of cookie `name` from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

// ---------------------------------------------------------------- throttle

/// Failed logins in the current window for one key.
#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: SystemTime,
    failures: u32,
    /// Whether an attempt has been refused in this window yet: only the
    /// first refusal is audited, so hammering a locked name cannot flood
    /// the audit log.
    refused: bool,
}

/// An attempt refused by the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When the window that refused it ends.
    pub retry_after: Duration,
    /// The first refusal in this window (worth an audit entry).
    pub first: bool,
}

/// Bounded map of failure windows.
struct FailureCounter<K> {
    entries: Mutex<HashMap<K, FailureWindow>>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone> FailureCounter<K> {
    fn new(cap: usize) -> Self {
        FailureCounter {
            entries: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn retry_after(
        &self,
        key: &K,
        attempts: u32,
        window: Duration,
        now: SystemTime,
    ) -> Option<Duration> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        let elapsed = now.duration_since(entry.started).unwrap_or(Duration::ZERO);
        (entry.failures >= attempts && elapsed < window).then(|| window - elapsed)
    }

    /// Counts one more attempt for `key` unless it already has `attempts`
    /// in the current window, in which case it says how long to wait.
    /// Checking and counting under one lock means concurrent requests
    /// cannot all slip past the check before any failure is recorded.
    fn try_count(
        &self,
        key: K,
        attempts: u32,
        window: Duration,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let mut entries = self.entries.lock();
        let elapsed =
            |entry: &FailureWindow| now.duration_since(entry.started).unwrap_or(Duration::ZERO);
        if !entries.contains_key(&key) && entries.len() >= self.cap {
            entries.retain(|_, entry| elapsed(entry) < window);
            // Still full of live windows: forget the oldest, which is the
            // closest to expiring anyway.
            if entries.len() >= self.cap
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.started)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(key).or_insert(FailureWindow {
            started: now,
            failures: 0,
            refused: false,
        });
        if elapsed(entry) >= window {
            *entry = FailureWindow {
                started: now,
                failures: 0,
                refused: false,
            };
        }
        if entry.failures >= attempts {
            let first = !entry.refused;
            entry.refused = true;
            return Err(Refusal {
                retry_after: window.saturating_sub(elapsed(entry)),
                first,
            });
        }
        entry.failures += 1;
        Ok(())
    }

    /// Takes back one counted attempt (it turned out not to be a failure).
    fn forgive_one(&self, key: &K) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures == 0 {
                entries.remove(key);
            }
        }
    }

    fn clear(&self, key: &K) {
        self.entries.lock().remove(key);
    }

    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Client address as throttled: IPv6 clients by their /64, since one
/// host usually holds the whole prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddrKey(u128);

impl AddrKey {
    fn of(addr: IpAddr) -> AddrKey {
        match addr {
            IpAddr::V4(v4) => AddrKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(u128::from(u32::from(v4))),
                None => AddrKey((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
            },
        }
    }
}

/// Counts failed logins per user name and per client address; once either
/// reaches `attempts` within `window`, every attempt for it is refused until
/// the window (which starts at its first failure) has passed.
pub struct LoginThrottle {
    attempts: u32,
    window: Duration,
    by_user: FailureCounter<String>,
    by_addr: FailureCounter<AddrKey>,
}

impl LoginThrottle {
    pub fn new(attempts: u32, window: Duration, cap: usize) -> LoginThrottle {
        LoginThrottle {
            attempts: attempts.max(1),
            window,
            by_user: FailureCounter::new(cap),
            by_addr: FailureCounter::new(cap),
        }
    }

    /// How long until this user name / address may try again, if throttled.
    pub fn retry_after(
        &self,
        user: &str,
        addr: Option<IpAddr>,
        now: SystemTime,
    ) -> Option<Duration> {
        let by_user =
            self.by_user
                .retry_after(&throttle_name(user), self.attempts, self.window, now);
        let by_addr = addr.and_then(|addr| {
            self.by_addr
                .retry_after(&AddrKey::of(addr), self.attempts, self.window, now)
        });
        by_user.max(by_addr)
    }

    /// Counts an attempt before the password is checked, as a failure
    /// until it proves otherwise ([`Self::succeeded`], [`Self::abandoned`]).
    /// Refused (with the time to wait) when the user name or the address
    /// has used up its attempts in the window; a refused attempt is not
    /// counted.
    pub fn begin(&self, user: &str, addr: Option<IpAddr>, now: SystemTime) -> Result<(), Refusal> {
        let name = throttle_name(user);
        self.by_user
            .try_count(name.clone(), self.attempts, self.window, now)?;
        if let Some(addr) = addr
            && let Err(refusal) =
                self.by_addr
                    .try_count(AddrKey::of(addr), self.attempts, self.window, now)
        {
            self.by_user.forgive_one(&name);
            return Err(refusal);
        }
        Ok(())
    }

    /// The password was right: the user name starts afresh; the address
    /// only gets this attempt back (clearing it would let an attacker
    /// interleave their own good logins with guesses).
    pub fn succeeded(&self, user: &str, addr: Option<IpAddr>) {
        self.by_user.clear(&throttle_name(user));
        if let Some(addr) = addr {
            self.by_addr.forgive_one(&AddrKey::of(addr));
        }
    }

    /// The password was never checked (server busy): take the attempt back.
    pub fn abandoned(&self, user: &str, addr: Option<IpAddr>) {
        self.by_user.forgive_one(&throttle_name(user));
        if let Some(addr) = addr {
            self.by_addr.forgive_one(&AddrKey::of(addr));
        }
    }

    /// Tracked user names and addresses (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_user.len(), self.by_addr.len())
    }
}

/// The throttling key for a user name: bounded length, so a megabyte-long
/// name costs no more memory than a short one.
fn throttle_name(user: &str) -> String {
    truncate_chars(user, 64).to_owned()
}

fn truncate_chars(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// ---------------------------------------------------------------- redirects

/// Whether `next` is safe to redirect to after login: a path on this site.
/// Rejects absolute URLs, scheme-relative `//host`, and backslashes (which
/// browsers treat as slashes, so `/\host` would leave the site).
pub fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= MAX_NEXT_BYTES
        && next
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
}

/// `next` if it is a local path, else `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next) if is_local_path(next) => next,
        _ => "/",
    }
}

/// Percent-encodes a query-string value (everything but unreserved
/// characters and `/`).
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The dashboard's one HTML escaper, for the pages this module renders.
pub(crate) fn html_escape(text: &str) -> String {
    super::views::escape(text)
}

// ---------------------------------------------------------------- extractors

/// A signed-in user, for HTML pages. Without a live session the request is
/// redirected (303) to `/login?next=<this path>`.
pub struct PageUser(pub SessionUser);

/// A signed-in admin, for admin pages: supervisors get a 403 page.
pub struct AdminPage(pub SessionUser);

/// A signed-in user, for JSON APIs and streams: no session is a 401
/// `{"error":"authentication required"}`.
pub struct ApiUser(pub SessionUser);

/// A signed-in user whose request carries the session's CSRF token in
/// `X-CSRF-Token`, for anything that changes state: else 403 JSON.
pub struct CsrfUser(pub SessionUser);

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unavailable(error: &session::SessionStoreError) -> Response {
    tracing::error!(%error, "dashboard session lookup failed");
    json_error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
}

fn forbidden_page(user: &SessionUser) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not allowed — Frontdoor</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main>\
         <h1>Not allowed</h1><p data-testid=\"forbidden\">{} ({}) may not open this page: it is for administrators.</p>\
         <p><a href=\"/\">Back to the live board</a></p></main></body></html>\n",
        html_escape(&user.name),
        user.role.as_str()
    );
    let mut response = (StatusCode::FORBIDDEN, Html(body)).into_response();
    security_headers(response.headers_mut());
    response
}

fn login_redirect(parts: &Parts) -> Response {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if target == "/" {
        "/login".to_owned()
    } else {
        format!("/login?next={}", encode_query_value(target))
    };
    see_other(&location)
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    } else {
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match state.auth.session_user(&parts.headers).await {
            Ok(Some(user)) => Ok(PageUser(user)),
            Ok(None) => Err(login_redirect(parts)),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

impl FromRequestParts<AppState> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let PageUser(user) = PageUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(AdminPage(user))
        } else {
            Err(forbidden_page(&user))
        }
    }
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match state.auth.session_user(&parts.headers).await {
            Ok(Some(user)) => Ok(ApiUser(user)),
            Ok(None) => Err(json_error(
                StatusCode::UNAUTHORIZED,
                "authentication required",
            )),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

impl FromRequestParts<AppState> for CsrfUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ApiUser(user) = ApiUser::from_request_parts(parts, state).await?;
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .map_or(&[][..], HeaderValue::as_bytes);
        if tokens_match(presented, user.csrf.as_bytes()) {
            Ok(CsrfUser(user))
        } else {
            Err(json_error(
                StatusCode::FORBIDDEN,
                "missing or invalid CSRF token",
            ))
        }
    }
}

/// The client's address for throttling, when the server was started with
/// connect info.
struct ClientAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(ClientAddr(client_ip(peer, &parts.headers)))
    }
}

/// The address to throttle: the TCP peer, except that a peer on loopback
/// is taken to be a reverse proxy on this host (TLS termination), whose
/// last `X-Forwarded-For` entry is the address it saw. Only a local
/// process can connect from loopback, so a remote client cannot use the
/// header to pick its own address, and without it every user behind the
/// proxy would share one throttle.
fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    if !peer.is_loopback() {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    Some(forwarded.unwrap_or(peer))
}

// ---------------------------------------------------------------- routes

/// `GET /login`, `POST /login`, `POST /logout`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// Renders the login page with a fresh form token, set as the double-submit
/// cookie as well.
fn login_page(
    auth: &Auth,
    status: StatusCode,
    error: Option<&str>,
    user: &str,
    next: &str,
) -> Response {
    let token = csrf::random_token();
    let error_html = error.map_or_else(String::new, |message| {
        format!(
            "<p class=\"login-error\" role=\"alert\" data-testid=\"login-error\">{}</p>",
            html_escape(message)
        )
    });
    let body = LOGIN_HTML
        .replace("{{error}}", &error_html)
        .replace("{{csrf}}", &token)
        .replace("{{next}}", &html_escape(next))
        .replace("{{username}}", &html_escape(user));
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(cookie) = HeaderValue::from_str(&auth.login_csrf_cookie(&token)) {
        headers.append(header::SET_COOKIE, cookie);
    }
    security_headers(headers);
    response
}

/// Headers for pages that carry secrets or forms: not cached, not framed.
fn security_headers(headers: &mut HeaderMap) {
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
        HeaderValue::from_static(
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    // Already signed in: straight on.
    if let Ok(Some(_)) = state.auth.session_user(&headers).await {
        return see_other(next);
    }
    login_page(&state.auth, StatusCode::OK, None, "", next)
}

/// A user name fit for the audit log: bounded, no control characters.
fn audit_name(name: &str) -> String {
    truncate_chars(name, 64)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

async fn audit(state: &AppState, actor: &str, action: &str, detail: String) {
    state
        .store
        .audit(AuditEntry {
            at: Utc::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            call_id: None,
            detail: state.redactor.redact(&detail).into_owned(),
        })
        .await;
}

async fn login_submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let auth = &state.auth;
    let Ok(Form(form)) = form else {
        return login_page(
            auth,
            StatusCode::BAD_REQUEST,
            Some("The login form was not understood; please try again."),
            "",
            "/",
        );
    };
    let next = safe_next(form.next.as_deref());
    let shown_name = truncate_chars(&form.username, MAX_USER_NAME_BYTES);

    // Double-submit check: a cross-site form cannot read or set our cookie,
    // so it cannot make the two agree.
    let cookie_token = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !tokens_match(form.csrf.as_bytes(), cookie_token.as_bytes()) {
        return login_page(
            auth,
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please sign in again."),
            shown_name,
            next,
        );
    }

    let addr_detail = addr.map_or_else(String::new, |a| format!(" from {a}"));
    if addr.is_none() && !auth.warned_no_client_addr.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "dashboard logins are throttled per user name only: the HTTP server does not pass client addresses"
        );
    }
    if let Err(refusal) = auth.throttle.begin(&form.username, addr, auth.clock.now()) {
        if refusal.first {
            let name = audit_name(&form.username);
            tracing::warn!(user = %name, "dashboard login refused: too many failed attempts");
            audit(
                &state,
                "anonymous",
                "login_rate_limited",
                format!("user {name}{addr_detail}"),
            )
            .await;
        }
        let secs = refusal.retry_after.as_secs().max(1);
        let mut response = login_page(
            auth,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-in attempts. Try again in {} minute(s).",
                secs.div_ceil(60)
            )),
            shown_name,
            next,
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }

    let Some(matched) = auth.check_password(&form.username, &form.password).await else {
        auth.throttle.abandoned(&form.username, addr);
        let mut response = login_page(
            auth,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The server is busy. Please try again in a moment."),
            shown_name,
            next,
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };

    if !matched {
        let name = audit_name(&form.username);
        tracing::info!(user = %name, "dashboard login failed");
        audit(
            &state,
            "anonymous",
            "login_failed",
            format!("user {name}{addr_detail}"),
        )
        .await;
        return login_page(
            auth,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            shown_name,
            next,
        );
    }

    auth.throttle.succeeded(&form.username, addr);
    // Whatever session the browser came with ends: the new one gets an id
    // the browser has never held (no fixation).
    auth.end_session(&headers).await;
    let (id, user) = match auth.start_session(&form.username).await {
        Ok(started) => started,
        Err(e) => return unavailable(&e),
    };
    tracing::info!(user = %user.name, role = user.role.as_str(), "dashboard login");
    audit(
        &state,
        &user.name,
        "login",
        format!("role {}{addr_detail}", user.role.as_str()),
    )
    .await;

    let mut response = see_other(next);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&auth.session_cookie(&id)) {
        headers.append(header::SET_COOKIE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&auth.clear_cookie(LOGIN_CSRF_COOKIE, "/login")) {
        headers.append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize, Default)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session. Needs the session's CSRF token, as the `X-CSRF-Token`
/// header (fetch) or a `csrf` form field (a plain form button).
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let auth = &state.auth;
    let mut response = see_other("/login");
    match auth.session_user(&headers).await {
        Ok(Some(user)) => {
            let form_token = form.map(|Form(f)| f.csrf).unwrap_or_default();
            let presented = headers
                .get(CSRF_HEADER)
                .map_or(form_token.as_bytes(), HeaderValue::as_bytes);
            if !tokens_match(presented, user.csrf.as_bytes()) {
                return json_error(StatusCode::FORBIDDEN, "missing or invalid CSRF token");
            }
            auth.end_session(&headers).await;
            tracing::info!(user = %user.name, "dashboard logout");
            audit(&state, &user.name, "logout", String::new()).await;
        }
        Ok(None) => {}
        Err(e) => return unavailable(&e),
    }
    if let Ok(value) = HeaderValue::from_str(&auth.clear_cookie(SESSION_COOKIE, "/")) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DashboardUser;

    /// A clock the test moves by hand.
    struct ManualClock(Mutex<SystemTime>);

    impl ManualClock {
        fn new() -> Arc<ManualClock> {
            Arc::new(ManualClock(Mutex::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            )))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock()
        }
    }

    fn user(name: &str, role: Role) -> DashboardUser {
        DashboardUser {
            name: name.into(),
            role,
            password_hash: None,
            password_env: Some(format!("PW_{}", name.to_uppercase())),
            agent: None,
        }
    }

    fn section(users: Vec<DashboardUser>) -> DashboardSection {
        DashboardSection {
            user: users,
            session_idle_mins: 30,
            session_max_hours: 12,
            login_attempts: 3,
            login_window_secs: 300,
            ..DashboardSection::default()
        }
    }

    fn test_env(var: &str) -> Option<String> {
        match var {
            "PW_SUE" => Some("sue-secret".into()),
            "PW_ADA" => Some("ada-secret".into()),
            "PW_EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn auth_with_clock(clock: Arc<ManualClock>) -> Auth {
        let mut ada = user("ada", Role::Admin);
        ada.agent = Some("1001".into());
        Auth::from_config_with_env(&section(vec![user("sue", Role::Supervisor), ada]), test_env)
            .expect("config")
            .with_clock(clock)
    }

    fn cookie_headers(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}; theme=dark"))
                .expect("header"),
        );
        headers
    }

    fn error_text(result: Result<Auth, AuthError>) -> String {
        match result {
            Ok(_) => panic!("configuration was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn hash_password_is_argon2id_and_verifies() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsf", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
        // Fresh salt each time.
        assert_ne!(phc, hash_password("correct horse").expect("hash"));
        assert!(hash_password("").is_err());
    }

    #[test]
    fn configured_hash_is_accepted_and_bad_ones_name_the_user() {
        let phc = hash_password("pw").expect("hash");
        let mut with_hash = user("sue", Role::Supervisor);
        with_hash.password_env = None;
        with_hash.password_hash = Some(phc);
        let auth = Auth::from_config_with_env(&section(vec![with_hash.clone()]), test_env)
            .expect("valid hash");
        assert_eq!(
            auth.user_names(),
            vec![("sue".to_owned(), Role::Supervisor, None)]
        );

        for bad in [
            "plaintext",
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        ] {
            with_hash.password_hash = Some(bad.into());
            let message = error_text(Auth::from_config_with_env(
                &section(vec![with_hash.clone()]),
                test_env,
            ));
            assert!(
                message.contains("sue") && message.contains("password_hash"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn config_errors_name_the_user_and_variable() {
        let mut neither = user("sue", Role::Supervisor);
        neither.password_env = None;
        let message = error_text(Auth::from_config_with_env(
            &section(vec![neither]),
            test_env,
        ));
        assert!(
            message.contains("sue") && message.contains("password_hash or password_env"),
            "{message}"
        );

        let mut both = user("sue", Role::Supervisor);
        both.password_hash = Some(hash_password("x").expect("hash"));
        let message = error_text(Auth::from_config_with_env(&section(vec![both]), test_env));
        assert!(message.contains("not both"), "{message}");

        let unset = user("bob", Role::Supervisor);
        let message = error_text(Auth::from_config_with_env(&section(vec![unset]), test_env));
        assert!(
            message.contains("bob") && message.contains("PW_BOB") && message.contains("not set"),
            "{message}"
        );

        let mut empty = user("eve", Role::Supervisor);
        empty.password_env = Some("PW_EMPTY".into());
        let message = error_text(Auth::from_config_with_env(&section(vec![empty]), test_env));
        assert!(
            message.contains("eve") && message.contains("PW_EMPTY") && message.contains("empty"),
            "{message}"
        );

        let message = error_text(Auth::from_config_with_env(
            &section(vec![
                user("sue", Role::Supervisor),
                user("sue", Role::Admin),
            ]),
            test_env,
        ));
        assert!(
            message.contains("sue") && message.contains("more than once"),
            "{message}"
        );

        let mut nameless = user("sue", Role::Supervisor);
        nameless.name = " ".into();
        assert!(Auth::from_config_with_env(&section(vec![nameless]), test_env).is_err());

        let mut zero = section(vec![]);
        zero.login_attempts = 0;
        assert!(error_text(Auth::from_config_with_env(&zero, test_env)).contains("login_attempts"));
        let mut zero = section(vec![]);
        zero.session_idle_mins = 0;
        assert!(
            error_text(Auth::from_config_with_env(&zero, test_env)).contains("session_idle_mins")
        );
    }

    #[test]
    fn user_names_list_config_order_without_secrets() {
        let auth = auth_with_clock(ManualClock::new());
        assert_eq!(
            auth.user_names(),
            vec![
                ("sue".to_owned(), Role::Supervisor, None),
                ("ada".to_owned(), Role::Admin, Some("1001".to_owned())),
            ]
        );
        let debug = format!("{auth:?}");
        assert!(!debug.contains("argon2"), "{debug}");
    }

    #[tokio::test]
    async fn password_check_accepts_only_the_right_user_and_password() {
        let auth = auth_with_clock(ManualClock::new());
        assert_eq!(auth.check_password("sue", "sue-secret").await, Some(true));
        assert_eq!(auth.check_password("sue", "ada-secret").await, Some(false));
        assert_eq!(
            auth.check_password("nobody", "sue-secret").await,
            Some(false)
        );
        assert_eq!(auth.check_password("sue", "").await, Some(false));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(auth.check_password("sue", &long).await, Some(false));
    }

    #[tokio::test]
    async fn sessions_expire_after_idle_time() {
        let clock = ManualClock::new();
        let auth = auth_with_clock(clock.clone());
        let (id, started) = auth.start_session("ada").await.expect("session");
        assert_eq!(started.role, Role::Admin);
        assert_eq!(started.agent.as_deref(), Some("1001"));
        let headers = cookie_headers(&id);

        // Activity keeps it alive past the idle limit in total...
        for _ in 0..3 {
            clock.advance(Duration::from_secs(29 * 60));
            let user = auth
                .session_user(&headers)
                .await
                .expect("store")
                .expect("live session");
            assert_eq!(user, started);
        }
        // ...but 30 idle minutes end it.
        clock.advance(Duration::from_secs(30 * 60));
        assert_eq!(auth.session_user(&headers).await.expect("store"), None);
    }

    #[tokio::test]
    async fn stream_checks_do_not_keep_a_session_alive() {
        let clock = ManualClock::new();
        let auth = auth_with_clock(clock.clone());
        let (id, _) = auth.start_session("sue").await.expect("session");
        let headers = cookie_headers(&id);
        for _ in 0..5 {
            clock.advance(Duration::from_secs(5 * 60));
            assert!(auth.is_signed_in(&headers).await);
        }
        clock.advance(Duration::from_secs(5 * 60));
        assert!(!auth.is_signed_in(&headers).await, "30 idle minutes");
        assert_eq!(auth.session_user(&headers).await.expect("store"), None);
    }

    #[tokio::test]
    async fn sessions_expire_at_the_absolute_limit_despite_activity() {
        let clock = ManualClock::new();
        let auth = auth_with_clock(clock.clone());
        let (id, _) = auth.start_session("sue").await.expect("session");
        let headers = cookie_headers(&id);
        let mut elapsed = Duration::ZERO;
        while elapsed + Duration::from_secs(20 * 60) < Duration::from_secs(12 * 3600) {
            clock.advance(Duration::from_secs(20 * 60));
            elapsed += Duration::from_secs(20 * 60);
            assert!(
                auth.session_user(&headers).await.expect("store").is_some(),
                "alive at {elapsed:?}"
            );
        }
        clock.advance(Duration::from_secs(12 * 3600) - elapsed);
        assert_eq!(auth.session_user(&headers).await.expect("store"), None);
    }

    #[tokio::test]
    async fn each_login_gets_new_id_and_csrf_and_logout_ends_it() {
        let auth = auth_with_clock(ManualClock::new());
        let (first_id, first) = auth.start_session("sue").await.expect("session");
        let (second_id, second) = auth.start_session("sue").await.expect("session");
        assert_ne!(first_id, second_id);
        assert_ne!(first.csrf, second.csrf);
        assert!(looks_like_token(&first_id) && looks_like_token(&first.csrf));

        let headers = cookie_headers(&first_id);
        assert!(auth.is_signed_in(&headers).await);
        assert_eq!(
            auth.end_session(&headers).await.map(|u| u.name),
            Some("sue".into())
        );
        assert_eq!(auth.session_user(&headers).await.expect("store"), None);
        assert!(!auth.is_signed_in(&headers).await);
        // The other session is untouched.
        assert!(
            auth.session_user(&cookie_headers(&second_id))
                .await
                .expect("store")
                .is_some()
        );
        // Unknown and malformed cookies are simply no session.
        assert_eq!(
            auth.session_user(&cookie_headers(&"0".repeat(64)))
                .await
                .expect("store"),
            None
        );
        assert_eq!(
            auth.session_user(&cookie_headers("x; y"))
                .await
                .expect("store"),
            None
        );
        assert_eq!(
            auth.session_user(&HeaderMap::new()).await.expect("store"),
            None
        );
    }

    #[tokio::test]
    async fn expired_sessions_are_swept() {
        let store = Arc::new(MemorySessionStore::new(100, 10));
        let clock = ManualClock::new();
        let auth = auth_with_clock(clock.clone()).with_session_store(store.clone());
        for _ in 0..3 {
            auth.start_session("sue").await.expect("session");
        }
        assert_eq!(store.len(), 3);
        clock.advance(Duration::from_secs(31 * 60));
        // Any request past the sweep interval clears them.
        let _ = auth.session_user(&HeaderMap::new()).await;
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn session_store_is_bounded_per_user_and_overall() {
        let store = MemorySessionStore::new(5, 2);
        let now = SystemTime::UNIX_EPOCH;
        let session = |name: &str, at: u64| StoredSession {
            user: SessionUser {
                name: name.into(),
                role: Role::Supervisor,
                agent: None,
                csrf: String::new(),
            },
            created: now + Duration::from_secs(at),
            last_seen: now + Duration::from_secs(at),
        };
        for i in 0..4 {
            store
                .insert(SessionKey::of(&format!("sue{i}")), session("sue", i))
                .await
                .expect("insert");
        }
        assert_eq!(store.len(), 2, "per-user cap");
        let limits = SessionLimits {
            idle: Duration::from_secs(3600),
            absolute: Duration::from_secs(7200),
        };
        // The newest two survive.
        assert!(
            store
                .touch(SessionKey::of("sue3"), now, limits)
                .await
                .expect("touch")
                .is_some()
        );
        assert!(
            store
                .touch(SessionKey::of("sue0"), now, limits)
                .await
                .expect("touch")
                .is_none()
        );
        for i in 0..10 {
            store
                .insert(
                    SessionKey::of(&format!("u{i}")),
                    session(&format!("user{i}"), 10 + i),
                )
                .await
                .expect("insert");
        }
        assert_eq!(store.len(), 5, "overall cap");
    }

    #[test]
    fn throttle_refuses_after_n_failures_until_the_window_passes() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(300), 100);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let addr: IpAddr = "192.0.2.7".parse().expect("addr");
        for i in 0..3 {
            assert_eq!(
                throttle.begin("sue", Some(addr), t0 + Duration::from_secs(i)),
                Ok(()),
                "attempt {i}"
            );
        }
        let later = t0 + Duration::from_secs(100);
        // Refused even before the password is looked at, right or wrong.
        let refusal = |secs, first| {
            Err(Refusal {
                retry_after: Duration::from_secs(secs),
                first,
            })
        };
        assert_eq!(throttle.begin("sue", None, later), refusal(200, true));
        // Only the first refusal in a window is worth an audit entry.
        assert_eq!(
            throttle.begin("sue", None, later + Duration::from_secs(1)),
            refusal(199, false)
        );
        assert_eq!(
            throttle.retry_after("sue", None, later),
            Some(Duration::from_secs(200))
        );
        // The address is throttled for other names too, and a refused try
        // does not count against the other name.
        assert_eq!(throttle.begin("ada", Some(addr), later), refusal(200, true));
        assert_eq!(throttle.retry_after("ada", None, later), None);
        // Another address trying another name is not.
        let other: IpAddr = "192.0.2.8".parse().expect("addr");
        assert_eq!(throttle.begin("ada", Some(other), later), Ok(()));
        // Once the window has passed, tries are allowed and counted afresh.
        let after = t0 + Duration::from_secs(300);
        assert_eq!(throttle.begin("sue", Some(addr), after), Ok(()));
        assert_eq!(throttle.retry_after("sue", Some(addr), after), None);
    }

    #[test]
    fn throttle_success_clears_the_name_but_only_forgives_the_address_once() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60), 100);
        let now = SystemTime::UNIX_EPOCH;
        let addr: IpAddr = "2001:db8::1".parse().expect("addr");
        throttle.begin("sue", Some(addr), now).expect("first");
        throttle.begin("sue", Some(addr), now).expect("second");
        throttle.succeeded("sue", Some(addr));
        // The name starts afresh...
        assert_eq!(throttle.retry_after("sue", None, now), None);
        // ...the address still holds the one real failure: one more try from
        // the same IPv6 /64, whatever the host part, uses it up.
        let neighbour: IpAddr = "2001:db8::ffff".parse().expect("addr");
        throttle.begin("bob", Some(neighbour), now).expect("third");
        assert!(throttle.begin("carol", Some(addr), now).is_err());
    }

    #[test]
    fn throttle_abandoned_attempts_are_not_failures() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60), 100);
        let now = SystemTime::UNIX_EPOCH;
        let addr: IpAddr = "198.51.100.1".parse().expect("addr");
        throttle.begin("sue", Some(addr), now).expect("first");
        throttle.abandoned("sue", Some(addr));
        assert_eq!(throttle.tracked(), (0, 0));
        throttle
            .begin("sue", Some(addr), now)
            .expect("retry after busy");
    }

    #[test]
    fn throttle_memory_is_bounded() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60), 50);
        let now = SystemTime::UNIX_EPOCH;
        for i in 0..1000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            let _ = throttle.begin(&format!("user{i}-{}", "x".repeat(500)), Some(addr), now);
        }
        assert_eq!(throttle.tracked(), (50, 50));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_a_local_proxy() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.4"),
        );
        let local: IpAddr = "127.0.0.1".parse().expect("addr");
        let remote: IpAddr = "192.0.2.1".parse().expect("addr");
        // Behind a local proxy: the address the proxy appended (the last).
        assert_eq!(
            client_ip(Some(local), &headers),
            Some("198.51.100.4".parse().expect("addr"))
        );
        // A remote peer's header is its own word: ignored.
        assert_eq!(client_ip(Some(remote), &headers), Some(remote));
        assert_eq!(client_ip(Some(local), &HeaderMap::new()), Some(local));
        let mut garbage = HeaderMap::new();
        garbage.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_ip(Some(local), &garbage), Some(local));
        assert_eq!(client_ip(None, &headers), None);
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        for ok in ["/", "/calls/abc?x=1", "/history?q=a%20b#top"] {
            assert!(is_local_path(ok), "{ok}");
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "",
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/ok\r\nSet-Cookie: x=1",
            "/caf\u{e9}",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
            assert_eq!(safe_next(Some(bad)), "/");
        }
        assert_eq!(safe_next(None), "/");
        assert!(!is_local_path(&format!("/{}", "a".repeat(MAX_NEXT_BYTES))));
    }

    #[test]
    fn login_redirect_keeps_path_and_query_encoded() {
        let request = axum::http::Request::builder()
            .uri("/calls/abc?tab=audit&x=a b".replace(' ', "%20"))
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let response = login_redirect(&parts);
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/login?next=/calls/abc%3Ftab%3Daudit%26x%3Da%2520b"
        );
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("frontdoor_session=abc"),
        );
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "frontdoor"), None);
    }

    #[test]
    fn cookies_carry_the_security_attributes() {
        let auth = auth_with_clock(ManualClock::new());
        let session = auth.session_cookie("abc");
        assert!(
            session.contains("HttpOnly")
                && session.contains("SameSite=Strict")
                && session.contains("Path=/;")
        );
        assert!(!session.contains("Secure"));
        let mut cfg = section(vec![]);
        cfg.secure_cookies = true;
        let secure = Auth::from_config_with_env(&cfg, test_env).expect("config");
        assert!(secure.session_cookie("abc").ends_with("; Secure"));
        assert!(secure.login_csrf_cookie("abc").contains("Path=/login"));
    }

    #[tokio::test]
    async fn login_page_escapes_what_it_echoes_and_pairs_cookie_with_field() {
        let auth = auth_with_clock(ManualClock::new());
        let response = login_page(
            &auth,
            StatusCode::UNAUTHORIZED,
            Some("Wrong <b>"),
            "\"><script>",
            "/x?a=\"",
        );
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let set_cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .to_owned();
        let token = set_cookie
            .strip_prefix(&format!("{LOGIN_CSRF_COOKIE}="))
            .and_then(|rest| rest.split(';').next())
            .expect("token")
            .to_owned();
        assert!(looks_like_token(&token));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            body.contains(&format!("name=\"csrf\" value=\"{token}\"")),
            "{body}"
        );
        assert!(body.contains("data-testid=\"login-error\">Wrong &lt;b&gt;</p>"));
        assert!(body.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert!(body.contains("name=\"next\" value=\"/x?a=&quot;\""));
        assert!(!body.contains("<script>"));
        for selector in ["name=\"username\"", "name=\"password\"", "type=\"submit\""] {
            assert!(body.contains(selector), "{selector}");
        }
    }

    #[test]
    fn html_escape_covers_attribute_breakers() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
