//! SQLite backend: one file (`frontdoor.db`) in WAL mode under the data directory.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditEntry, CallEnd, CallRecord, CallStore, NewCall, RequestRecord, StoreError, TurnRecord,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS calls (
    id              TEXT PRIMARY KEY,
    sip_call_id     TEXT NOT NULL,
    caller          TEXT NOT NULL,
    callee          TEXT NOT NULL,
    route           TEXT,
    source          TEXT,
    node            TEXT NOT NULL,
    state           TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    answered_at     TEXT,
    ended_at        TEXT,
    end_reason      TEXT,
    hangup_by       TEXT,
    sip_status      INTEGER,
    codec           TEXT,
    rtp_packets_rx  INTEGER,
    rtp_packets_tx  INTEGER,
    rtp_lost        INTEGER,
    rtp_jitter_ms   REAL,
    recording_path  TEXT
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
CREATE INDEX IF NOT EXISTS calls_state ON calls(state, node);
CREATE TABLE IF NOT EXISTS call_events (
    call_id TEXT NOT NULL,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_events_call ON call_events(call_id);
CREATE TABLE IF NOT EXISTS turns (
    call_id    TEXT NOT NULL,
    at         TEXT NOT NULL,
    speaker    TEXT NOT NULL,
    text       TEXT NOT NULL,
    intent     TEXT,
    confidence REAL,
    escalation TEXT,
    reason     TEXT
);
CREATE INDEX IF NOT EXISTS turns_call ON turns(call_id);
CREATE TABLE IF NOT EXISTS requests (
    call_id      TEXT NOT NULL,
    at           TEXT NOT NULL,
    reference    TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    details_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    call_id TEXT,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_call ON audit_log(call_id);
-- The audit trail is append-only: the database itself refuses edits.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#;

/// Timestamps are written by us in RFC 3339; an unreadable one (edited by
/// hand) reads as the epoch rather than failing the whole query.
fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

pub struct SqliteStore {
    conn: Connection,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/frontdoor.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(data_dir.join("frontdoor.db"))?;
        // WAL keeps readers (dashboard, tests) from blocking the writer; with
        // synchronous=NORMAL a committed transaction survives a process crash
        // (only an OS crash can lose the last few).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }

    fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
        Ok(CallRecord {
            id: row.get("id")?,
            sip_call_id: row.get("sip_call_id")?,
            caller: row.get("caller")?,
            callee: row.get("callee")?,
            route: row.get("route")?,
            state: row.get("state")?,
            started_at: row.get("started_at")?,
            answered_at: row.get("answered_at")?,
            ended_at: row.get("ended_at")?,
            end_reason: row.get("end_reason")?,
            hangup_by: row.get("hangup_by")?,
            sip_status: row.get("sip_status")?,
            codec: row.get("codec")?,
            rtp_packets_rx: row.get("rtp_packets_rx")?,
            rtp_packets_tx: row.get("rtp_packets_tx")?,
            rtp_lost: row.get("rtp_lost")?,
            rtp_jitter_ms: row.get("rtp_jitter_ms")?,
            recording_path: row.get("recording_path")?,
        })
    }
}

impl CallStore for SqliteStore {
    fn call_started(&mut self, c: &NewCall) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO calls (id, sip_call_id, caller, callee, route, source, node, state, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'ringing', ?8)",
            params![c.id, c.sip_call_id, c.caller, c.callee, c.route, c.source, c.node, ts(c.started_at)],
        )?;
        Ok(())
    }

    fn call_answered(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        codec: &str,
        recording_path: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE calls SET state = 'answered', answered_at = ?2, codec = ?3, recording_path = ?4
             WHERE id = ?1 AND state = 'ringing'",
            params![id, ts(at), codec, recording_path],
        )?;
        Ok(())
    }

    fn call_event(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO call_events (call_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![id, ts(at), kind, detail],
        )?;
        Ok(())
    }

    fn call_ended(&mut self, id: &str, e: &CallEnd) -> Result<(), StoreError> {
        let stats = e.stats.clone().unwrap_or_default();
        let has_stats = e.stats.is_some();
        self.conn.execute(
            "UPDATE calls SET state = 'ended', ended_at = ?2, end_reason = ?3, hangup_by = ?4,
                 sip_status = COALESCE(?5, sip_status),
                 rtp_packets_rx = CASE WHEN ?10 THEN ?6 ELSE rtp_packets_rx END,
                 rtp_packets_tx = CASE WHEN ?10 THEN ?7 ELSE rtp_packets_tx END,
                 rtp_lost = CASE WHEN ?10 THEN ?8 ELSE rtp_lost END,
                 rtp_jitter_ms = CASE WHEN ?10 THEN ?9 ELSE rtp_jitter_ms END
             WHERE id = ?1 AND state != 'ended'",
            params![
                id,
                ts(e.ended_at),
                e.reason,
                e.hangup_by.as_str(),
                e.sip_status,
                stats.packets_rx as i64,
                stats.packets_tx as i64,
                stats.lost,
                stats.jitter_ms,
                has_stats,
            ],
        )?;
        Ok(())
    }

    fn close_interrupted(&mut self, node: &str, at: DateTime<Utc>) -> Result<usize, StoreError> {
        let n = self.conn.execute(
            "UPDATE calls SET state = 'ended', ended_at = ?2, end_reason = 'interrupted', hangup_by = 'system'
             WHERE state != 'ended' AND node = ?1",
            params![node, ts(at)],
        )?;
        Ok(n)
    }

    fn turn(&mut self, t: &TurnRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO turns (call_id, at, speaker, text, intent, confidence, escalation, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                t.call_id,
                ts(t.at),
                t.speaker,
                t.text,
                t.intent,
                t.confidence,
                t.escalation,
                t.reason
            ],
        )?;
        Ok(())
    }

    fn request(&mut self, r: &RequestRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO requests (call_id, at, reference, kind, details_json) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.call_id, ts(r.at), r.reference, r.kind, r.details_json],
        )?;
        Ok(())
    }

    fn audit(&mut self, a: &AuditEntry) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit_log (at, actor, action, call_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(a.at), a.actor, a.action, a.call_id, a.detail],
        )?;
        Ok(())
    }

    fn turns(&mut self, call_id: &str) -> Result<Vec<TurnRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT call_id, at, speaker, text, intent, confidence, escalation, reason
             FROM turns WHERE call_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([call_id], |row| {
            Ok(TurnRecord {
                call_id: row.get(0)?,
                at: parse_ts(&row.get::<_, String>(1)?),
                speaker: row.get(2)?,
                text: row.get(3)?,
                intent: row.get(4)?,
                confidence: row.get(5)?,
                escalation: row.get(6)?,
                reason: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn audit_for_call(&mut self, call_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, actor, action, call_id, detail FROM audit_log WHERE call_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([call_id], |row| {
            Ok(AuditEntry {
                at: parse_ts(&row.get::<_, String>(0)?),
                actor: row.get(1)?,
                action: row.get(2)?,
                call_id: row.get(3)?,
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn call(&mut self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM calls WHERE id = ?1",
                [id],
                Self::row_to_record,
            )
            .optional()?)
    }

    fn recent_calls(&mut self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM calls ORDER BY started_at DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], Self::row_to_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn new_call(id: &str) -> NewCall {
        NewCall {
            id: id.into(),
            sip_call_id: format!("{id}@host"),
            caller: "07700900123".into(),
            callee: "01332640000".into(),
            route: Some("main".into()),
            source: "127.0.0.1:5061".into(),
            node: "node-a".into(),
            started_at: Utc::now(),
        }
    }

    #[test]
    fn lifecycle_is_durable_and_crash_recovery_closes_open_calls() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            s.call_started(&new_call("a")).unwrap();
            s.call_answered("a", Utc::now(), "PCMU", Some("/r/a.wav"))
                .unwrap();
            s.call_event("a", Utc::now(), "hold", "sendonly").unwrap();
            s.call_ended(
                "a",
                &CallEnd {
                    ended_at: Utc::now(),
                    reason: "caller hung up".into(),
                    hangup_by: HangupBy::Caller,
                    sip_status: Some(200),
                    stats: Some(MediaStats {
                        packets_rx: 100,
                        packets_tx: 90,
                        lost: 1,
                        jitter_ms: 2.5,
                    }),
                },
            )
            .unwrap();
            s.call_started(&new_call("b")).unwrap();
            // "b" is left open: the process "crashes" here.
        }
        let mut s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.close_interrupted("node-b", Utc::now()).unwrap(), 0);
        assert_eq!(s.close_interrupted("node-a", Utc::now()).unwrap(), 1);
        let a = s.call("a").unwrap().unwrap();
        assert_eq!(a.state, "ended");
        assert_eq!(a.codec.as_deref(), Some("PCMU"));
        assert_eq!(a.hangup_by.as_deref(), Some("caller"));
        assert_eq!(a.rtp_packets_rx, Some(100));
        assert_eq!(a.sip_status, Some(200));
        let b = s.call("b").unwrap().unwrap();
        assert_eq!(b.end_reason.as_deref(), Some("interrupted"));
        assert_eq!(s.recent_calls(10).unwrap().len(), 2);

        s.turn(&TurnRecord {
            call_id: "a".into(),
            at: Utc::now(),
            speaker: "caller".into(),
            text: "my bin was missed".into(),
            intent: Some("bin_missed".into()),
            confidence: Some(0.9),
            escalation: Some("none".into()),
            reason: Some("classifier".into()),
        })
        .unwrap();
        s.request(&RequestRecord {
            call_id: "a".into(),
            at: Utc::now(),
            reference: "FD-ABC123".into(),
            kind: "bin_missed".into(),
            details_json: "{}".into(),
        })
        .unwrap();
        let turns = s.turns("a").unwrap();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].intent.as_deref(), Some("bin_missed"));
    }

    #[test]
    fn audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        s.audit(&AuditEntry {
            at: Utc::now(),
            actor: "ai".into(),
            action: "escalate".into(),
            call_id: Some("a".into()),
            detail: "distress: rule distress.not_wanting_to_live".into(),
        })
        .unwrap();
        assert_eq!(s.audit_for_call("a").unwrap().len(), 1);
        assert!(
            s.conn
                .execute("UPDATE audit_log SET actor = 'x'", [])
                .is_err()
        );
        assert!(s.conn.execute("DELETE FROM audit_log", []).is_err());
        assert_eq!(s.audit_for_call("a").unwrap()[0].actor, "ai");
        assert!(s.call("zzz").unwrap().is_none());
    }

    #[tokio::test]
    async fn handle_writes_in_order_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(SqliteStore::open(dir.path()).unwrap());
        handle.call_started(new_call("c")).await;
        handle.call_answered("c", "PCMA", None).await;
        handle
            .call_ended(
                "c",
                CallEnd {
                    ended_at: Utc::now(),
                    reason: "done".into(),
                    hangup_by: HangupBy::Frontdoor,
                    sip_status: None,
                    stats: None,
                },
            )
            .await;
        handle.flush().await;
        let c = handle.call("c").await.unwrap().unwrap();
        assert_eq!(c.state, "ended");
        assert_eq!(c.codec.as_deref(), Some("PCMA"));
        assert_eq!(c.hangup_by.as_deref(), Some("frontdoor"));
    }
}
