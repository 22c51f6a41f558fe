//! Server-side dashboard sessions.
//!
//! The browser only holds a random 256-bit id; everything else (who, role,
//! CSRF token, timestamps) stays here. The store is keyed by the SHA-256 of
//! the id, so a dump of the store (or a future shared database table) does
//! not hand out live session cookies.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::SessionUser;

/// A boxed future, so `SessionStore` stays object-safe while a database
/// backend can still await its queries.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session ends after this long without a request.
    pub idle: Duration,
    /// And at the latest this long after login, however busy.
    pub absolute: Duration,
}

/// What the store keeps per session.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub user: SessionUser,
    pub created: SystemTime,
    pub last_seen: SystemTime,
}

impl StoredSession {
    /// Whether the session has outlived either limit at `now`. A clock that
    /// went backwards counts as no time passed rather than as expiry.
    pub fn is_expired(&self, now: SystemTime, limits: SessionLimits) -> bool {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
        since(self.last_seen) >= limits.idle || since(self.created) >= limits.absolute
    }
}

/// The store's lookup key: SHA-256 of the id the browser holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    pub fn of(session_id: &str) -> SessionKey {
        SessionKey(Sha256::digest(session_id.as_bytes()).into())
    }
}

#[derive(Debug, Error)]
pub enum SessionStoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Where sessions live. In memory today; a shared PostgreSQL table later,
/// which is why every call returns a future.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session.
    fn insert(
        &self,
        key: SessionKey,
        session: StoredSession,
    ) -> StoreFuture<'_, Result<(), SessionStoreError>>;

    /// The session's user if it exists and has not expired at `now`; marks it
    /// seen at `now`. An expired session is removed.
    fn touch(
        &self,
        key: SessionKey,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>>;

    /// The session's user if it exists and has not expired at `now`,
    /// without counting this as activity (long-lived streams re-checking).
    fn peek(
        &self,
        key: SessionKey,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>>;

    /// Ends a session; returns its user if there was one.
    fn remove(
        &self,
        key: SessionKey,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>>;

    /// Drops every session expired at `now`; returns how many.
    fn sweep(
        &self,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<usize, SessionStoreError>>;
}

/// Sessions in this process's memory, bounded in total and per user so a
/// script that logs in in a loop cannot grow it without limit.
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<SessionKey, StoredSession>>,
    max_sessions: usize,
    max_per_user: usize,
}

impl MemorySessionStore {
    pub fn new(max_sessions: usize, max_per_user: usize) -> MemorySessionStore {
        MemorySessionStore {
            sessions: Mutex::new(HashMap::new()),
            max_sessions: max_sessions.max(1),
            max_per_user: max_per_user.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for one more session of `user`: the user's oldest session
    /// goes first when they are at their cap, then the oldest overall.
    fn evict_for(
        sessions: &mut HashMap<SessionKey, StoredSession>,
        user: &str,
        per_user: usize,
        total: usize,
    ) {
        let oldest_of = |sessions: &HashMap<SessionKey, StoredSession>, only_user: Option<&str>| {
            sessions
                .iter()
                .filter(|(_, s)| only_user.is_none_or(|u| s.user.name == u))
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
        };
        let users_sessions = sessions.values().filter(|s| s.user.name == user).count();
        if users_sessions >= per_user
            && let Some(key) = oldest_of(sessions, Some(user))
        {
            sessions.remove(&key);
        }
        while sessions.len() >= total {
            match oldest_of(sessions, None) {
                Some(key) => {
                    sessions.remove(&key);
                }
                None => break,
            }
        }
    }
}

impl SessionStore for MemorySessionStore {
    fn insert(
        &self,
        key: SessionKey,
        session: StoredSession,
    ) -> StoreFuture<'_, Result<(), SessionStoreError>> {
        let mut sessions = self.sessions.lock();
        Self::evict_for(
            &mut sessions,
            &session.user.name,
            self.max_per_user,
            self.max_sessions,
        );
        sessions.insert(key, session);
        Box::pin(std::future::ready(Ok(())))
    }

    fn touch(
        &self,
        key: SessionKey,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>> {
        let mut sessions = self.sessions.lock();
        let user = match sessions.get_mut(&key) {
            Some(session) if session.is_expired(now, limits) => {
                sessions.remove(&key);
                None
            }
            Some(session) => {
                // Never move last_seen backwards if the clock does.
                if now > session.last_seen {
                    session.last_seen = now;
                }
                Some(session.user.clone())
            }
            None => None,
        };
        Box::pin(std::future::ready(Ok(user)))
    }

    fn peek(
        &self,
        key: SessionKey,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>> {
        let user = self
            .sessions
            .lock()
            .get(&key)
            .filter(|session| !session.is_expired(now, limits))
            .map(|session| session.user.clone());
        Box::pin(std::future::ready(Ok(user)))
    }

    fn remove(
        &self,
        key: SessionKey,
    ) -> StoreFuture<'_, Result<Option<SessionUser>, SessionStoreError>> {
        let removed = self.sessions.lock().remove(&key).map(|s| s.user);
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn sweep(
        &self,
        now: SystemTime,
        limits: SessionLimits,
    ) -> StoreFuture<'_, Result<usize, SessionStoreError>> {
        let mut sessions = self.sessions.lock();
        let before = sessions.len();
        sessions.retain(|_, s| !s.is_expired(now, limits));
        Box::pin(std::future::ready(Ok(before - sessions.len())))
    }
}
