//! SQLite backend: one file (`frontdoor.db`) in WAL mode under the data directory.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditEntry, CallEnd, CallRecord, CallStore, NewCall, PurgeResult, RequestRecord, StoreError,
    TransferRecord, TurnRecord,
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
CREATE TABLE IF NOT EXISTS transfers (
    call_id      TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reason       TEXT NOT NULL,
    queue        TEXT,
    agent        TEXT,
    answered_at  TEXT,
    ended_at     TEXT,
    outcome      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_call ON transfers(call_id);
CREATE INDEX IF NOT EXISTS transfers_reason ON transfers(reason, call_id);
-- History search filters and KPI aggregates.
CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller);
CREATE INDEX IF NOT EXISTS calls_callee ON calls(callee);
CREATE INDEX IF NOT EXISTS call_events_kind ON call_events(kind, call_id);
CREATE INDEX IF NOT EXISTS turns_intent ON turns(intent, call_id);
CREATE INDEX IF NOT EXISTS turns_escalation ON turns(escalation, call_id);
CREATE INDEX IF NOT EXISTS requests_call ON requests(call_id);
CREATE INDEX IF NOT EXISTS calls_recording_kept ON calls(started_at, id)
    WHERE recording_path IS NOT NULL;
-- The audit trail is append-only: the database itself refuses edits.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#;

/// Columns added after the first release: databases created by an older
/// engine gain them on open (`ALTER TABLE` cannot say `IF NOT EXISTS`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // When retention removed the call's transcript / recording, so a call page
    // can say why they are missing and a purge skips calls already done.
    ("calls", "transcript_purged_at", "TEXT"),
    ("calls", "recording_purged_at", "TEXT"),
];

/// Full-text index over what was said, kept in step with `turns` by triggers.
/// It is an external-content index (the text is stored once, in `turns`) and
/// is keyed by the rowid of `turns`: the database must never be VACUUMed
/// without a `rebuild` of `turns_fts` afterwards, because VACUUM may renumber
/// rowids of a table without an INTEGER PRIMARY KEY.
pub(super) const FTS_TABLE: &str = "turns_fts";
const FTS_SCHEMA: &str = r#"
CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5(
    text, content='turns', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS turns_fts_insert AFTER INSERT ON turns BEGIN
    INSERT INTO turns_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS turns_fts_delete AFTER DELETE ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS turns_fts_update AFTER UPDATE OF text ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO turns_fts(rowid, text) VALUES (new.rowid, new.text);
END;
"#;

/// The next calls (at most `?2`) whose transcripts a purge with cutoff `?1`
/// removes: ended calls that started before it and were not purged yet. A
/// call in progress is never touched, whatever the cutoff. Served by the
/// partial index `calls_transcript_kept`, so a purge costs what it removes,
/// not the size of the history. The order is total, so every statement of
/// one batch transaction sees the same calls. (`+state` keeps the planner off
/// `calls_state`: nearly every call is `ended`, so that index selects nothing.)
const TRANSCRIPT_BATCH: &str = "SELECT id FROM calls
     WHERE transcript_purged_at IS NULL AND started_at < ?1 AND +state = 'ended'
     ORDER BY started_at, id LIMIT ?2";
/// Likewise for recordings (partial index `calls_recording_kept`).
const RECORDING_BATCH: &str = "SELECT id FROM calls
     WHERE recording_path IS NOT NULL AND started_at < ?1 AND +state = 'ended'
     ORDER BY started_at, id LIMIT ?2";

/// Indexes over columns in [`ADDED_COLUMNS`]: created once those exist.
const LATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS calls_transcript_kept ON calls(started_at, id)
    WHERE transcript_purged_at IS NULL;
";

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
        [name],
        |row| row.get(0),
    )
}

fn column_exists(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |row| row.get(0),
    )
}

pub(super) fn fts5_compiled_in(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT sqlite_compileoption_used('ENABLE_FTS5')",
        [],
        |row| row.get(0),
    )
}

/// Brings a database of any earlier version up to the current schema. Runs in
/// one IMMEDIATE transaction so two engines starting on the same file cannot
/// both decide to add the same column.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        if !column_exists(&tx, table, column)? {
            // Identifiers cannot be bound as parameters; these are constants.
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    tx.execute_batch(LATE_INDEXES)?;
    if fts5_compiled_in(&tx)? {
        let fresh = !table_exists(&tx, FTS_TABLE)?;
        tx.execute_batch(FTS_SCHEMA)?;
        if fresh {
            // Turns written before the index existed (an older database).
            tx.execute("INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')", [])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Timestamps are written by us in RFC 3339; an unreadable one (edited by
/// hand) reads as the epoch rather than failing the whole query.
pub(super) fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

pub(super) const DB_FILE: &str = "frontdoor.db";

pub struct SqliteStore {
    conn: Connection,
}

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/frontdoor.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let mut conn = Connection::open(data_dir.join(DB_FILE))?;
        // WAL keeps readers (dashboard, tests) from blocking the writer; with
        // synchronous=NORMAL a committed transaction survives a process crash
        // (only an OS crash can lose the last few).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore { conn })
    }

    pub(super) fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
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

    fn transfer(&mut self, t: &TransferRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO transfers (call_id, requested_at, requested_by, reason, queue, agent,
                 answered_at, ended_at, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                t.call_id,
                ts(t.requested_at),
                t.requested_by,
                t.reason,
                t.queue,
                t.agent,
                t.answered_at.map(ts),
                t.ended_at.map(ts),
                t.outcome
            ],
        )?;
        Ok(())
    }

    fn supervisor_action(
        &mut self,
        call_id: &str,
        at: DateTime<Utc>,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        // One transaction: the action and the record of who did it exist
        // together or not at all.
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO call_events (call_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![call_id, ts(at), action, detail],
        )?;
        tx.execute(
            "INSERT INTO audit_log (at, actor, action, call_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), user, action, call_id, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn purge_batch(
        &mut self,
        transcripts_before: Option<DateTime<Utc>>,
        recordings_before: Option<DateTime<Utc>>,
        max_calls: usize,
    ) -> Result<(PurgeResult, bool), StoreError> {
        let now = ts(Utc::now());
        let limit = i64::try_from(max_calls.max(1)).unwrap_or(i64::MAX);
        let mut result = PurgeResult::default();
        let mut more = false;
        let tx = self.conn.transaction()?;
        if let Some(cutoff) = transcripts_before {
            let cutoff = ts(cutoff);
            let batch = params![cutoff, limit];
            result.turns_deleted = tx.execute(
                &format!("DELETE FROM turns WHERE call_id IN ({TRANSCRIPT_BATCH})"),
                batch,
            )?;
            // The hand-off event keeps its reason, priority and queue (the
            // KPIs and the audit story need them); what the caller said goes.
            result.details_cleared += tx.execute(
                &format!(
                    "UPDATE call_events SET detail = CASE WHEN json_valid(detail)
                         THEN json_remove(detail, '$.summary', '$.transcript') ELSE '' END
                     WHERE kind = 'transfer' AND call_id IN ({TRANSCRIPT_BATCH})
                       AND CASE WHEN json_valid(detail)
                           THEN json_type(detail, '$.summary') IS NOT NULL
                                OR json_type(detail, '$.transcript') IS NOT NULL
                           ELSE detail != '' END"
                ),
                batch,
            )?;
            // Keypad entries are what the caller "said" too (account numbers).
            result.details_cleared += tx.execute(
                &format!(
                    "UPDATE call_events SET detail = ''
                     WHERE kind = 'dtmf' AND detail != '' AND call_id IN ({TRANSCRIPT_BATCH})"
                ),
                batch,
            )?;
            result.details_cleared += tx.execute(
                &format!(
                    "UPDATE requests SET details_json = '{{}}'
                     WHERE details_json != '{{}}' AND call_id IN ({TRANSCRIPT_BATCH})"
                ),
                batch,
            )?;
            // Last: marking the calls takes them out of the batch query.
            let calls = tx.execute(
                &format!(
                    "UPDATE calls SET transcript_purged_at = ?3 WHERE id IN ({TRANSCRIPT_BATCH})"
                ),
                params![cutoff, limit, now],
            )?;
            more |= calls >= max_calls.max(1);
        }
        if let Some(cutoff) = recordings_before {
            let cutoff = ts(cutoff);
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT recording_path FROM calls WHERE id IN ({RECORDING_BATCH})
                     ORDER BY started_at, id"
                ))?;
                let paths =
                    stmt.query_map(params![cutoff, limit], |row| row.get::<_, String>(0))?;
                result.recordings = paths.collect::<Result<Vec<_>, _>>()?;
            }
            let calls = tx.execute(
                &format!(
                    "UPDATE calls SET recording_path = NULL, recording_purged_at = ?3
                     WHERE id IN ({RECORDING_BATCH})"
                ),
                params![cutoff, limit, now],
            )?;
            more |= calls >= max_calls.max(1);
        }
        tx.commit()?;
        Ok((result, more))
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

    fn ended_call(s: &mut SqliteStore, id: &str, started_at: DateTime<Utc>, recording: &str) {
        let mut call = new_call(id);
        call.started_at = started_at;
        s.call_started(&call).unwrap();
        s.call_answered(id, started_at, "PCMU", Some(recording))
            .unwrap();
        s.call_ended(
            id,
            &CallEnd {
                ended_at: started_at + chrono::Duration::seconds(60),
                reason: "caller hung up".into(),
                hangup_by: HangupBy::Caller,
                sip_status: Some(200),
                stats: None,
            },
        )
        .unwrap();
    }

    fn said(s: &mut SqliteStore, id: &str, at: DateTime<Utc>, text: &str) {
        s.turn(&TurnRecord {
            call_id: id.into(),
            at,
            speaker: "caller".into(),
            text: text.into(),
            intent: Some("bin_missed".into()),
            confidence: Some(0.8),
            escalation: Some("none".into()),
            reason: None,
        })
        .unwrap();
    }

    fn count(s: &SqliteStore, sql: &str) -> i64 {
        s.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn transfer_record(call_id: &str, at: DateTime<Utc>) -> TransferRecord {
        TransferRecord {
            call_id: call_id.into(),
            requested_at: at,
            requested_by: "ai".into(),
            reason: "distress".into(),
            queue: Some("welfare".into()),
            agent: Some("alice".into()),
            answered_at: Some(at + chrono::Duration::seconds(12)),
            ended_at: None,
            outcome: "completed".into(),
        }
    }

    #[test]
    fn transfers_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let at = Utc::now();
        s.transfer(&transfer_record("t", at)).unwrap();
        let (reason, queue, agent, answered, ended, outcome): (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
        ) = s
            .conn
            .query_row(
                "SELECT reason, queue, agent, answered_at, ended_at, outcome FROM transfers
                 WHERE call_id = 't'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(reason, "distress");
        assert_eq!(queue.as_deref(), Some("welfare"));
        assert_eq!(agent.as_deref(), Some("alice"));
        assert_eq!(
            answered.map(|a| parse_ts(&a)),
            Some(parse_ts(&ts(at + chrono::Duration::seconds(12))))
        );
        assert_eq!(ended, None);
        assert_eq!(outcome, "completed");
    }

    #[test]
    fn supervisor_action_writes_event_and_audit_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        s.call_started(&new_call("f")).unwrap();
        s.supervisor_action("f", Utc::now(), "sam", "flagged", "sounds upset")
            .unwrap();
        let (kind, detail): (String, String) = s
            .conn
            .query_row(
                "SELECT kind, detail FROM call_events WHERE call_id = 'f'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (kind.as_str(), detail.as_str()),
            ("flagged", "sounds upset")
        );
        let audit = s.audit_for_call("f").unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].actor, "sam");
        assert_eq!(audit[0].action, "flagged");
    }

    #[test]
    fn purge_removes_old_transcripts_and_recordings_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let old = now - chrono::Duration::days(40);
        let recent = now - chrono::Duration::days(2);
        ended_call(&mut s, "old", old, "/rec/old.wav");
        ended_call(&mut s, "new", recent, "/rec/new.wav");
        // Started long ago but still in progress: never purged.
        let mut live = new_call("live");
        live.started_at = old;
        s.call_started(&live).unwrap();
        s.call_answered("live", old, "PCMU", Some("/rec/live.wav"))
            .unwrap();
        for id in ["old", "new", "live"] {
            let at = if id == "new" { recent } else { old };
            said(&mut s, id, at, "my card is 4111 1111 1111 1111");
            said(&mut s, id, at, "and my bin was missed");
            s.call_event(
                id,
                at,
                "transfer",
                r#"{"reason":"distress","priority":"urgent","queue":"welfare","summary":"caller upset","transcript":["help"]}"#,
            )
            .unwrap();
            s.call_event(id, at, "dtmf", "1234").unwrap();
            s.call_event(id, at, "hold", "sendonly").unwrap();
            s.request(&RequestRecord {
                call_id: id.into(),
                at,
                reference: format!("FD-{id}"),
                kind: "bin_missed".into(),
                details_json: r#"{"address":"1 High St"}"#.into(),
            })
            .unwrap();
            s.audit(&AuditEntry {
                at,
                actor: "ai".into(),
                action: "intent".into(),
                call_id: Some(id.into()),
                detail: "bin_missed".into(),
            })
            .unwrap();
        }
        let cutoff = now - chrono::Duration::days(30);
        let result = s.purge_before(Some(cutoff), Some(cutoff)).unwrap();
        assert_eq!(result.turns_deleted, 2);
        // transfer event + dtmf event + request details of "old".
        assert_eq!(result.details_cleared, 3);
        assert_eq!(result.recordings, vec!["/rec/old.wav".to_string()]);

        assert!(s.turns("old").unwrap().is_empty());
        assert_eq!(s.turns("new").unwrap().len(), 2);
        assert_eq!(s.turns("live").unwrap().len(), 2);
        let transfer_detail = |s: &SqliteStore, id: &str| -> String {
            s.conn
                .query_row(
                    "SELECT detail FROM call_events WHERE call_id = ?1 AND kind = 'transfer'",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let old_detail: serde_json::Value =
            serde_json::from_str(&transfer_detail(&s, "old")).unwrap();
        assert_eq!(old_detail["reason"], "distress");
        assert_eq!(old_detail["queue"], "welfare");
        assert!(old_detail.get("summary").is_none());
        assert!(old_detail.get("transcript").is_none());
        assert!(transfer_detail(&s, "new").contains("caller upset"));
        assert!(transfer_detail(&s, "live").contains("caller upset"));
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM call_events WHERE kind = 'dtmf' AND detail = ''"
            ),
            1
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM call_events WHERE kind = 'hold' AND detail = 'sendonly'"
            ),
            3
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM requests WHERE details_json = '{}'"
            ),
            1
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM requests WHERE call_id = 'old' AND reference = 'FD-old'"
            ),
            1
        );
        assert_eq!(s.call("old").unwrap().unwrap().recording_path, None);
        assert_eq!(
            s.call("new").unwrap().unwrap().recording_path.as_deref(),
            Some("/rec/new.wav")
        );
        assert_eq!(
            s.call("live").unwrap().unwrap().recording_path.as_deref(),
            Some("/rec/live.wav")
        );
        // The audit trail is untouched, redacted details and all.
        assert_eq!(count(&s, "SELECT count(*) FROM audit_log"), 3);
        assert_eq!(s.audit_for_call("old").unwrap()[0].detail, "bin_missed");
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM calls WHERE transcript_purged_at IS NOT NULL"
            ),
            1
        );

        // A second run finds nothing left to do.
        let again = s.purge_before(Some(cutoff), Some(cutoff)).unwrap();
        assert_eq!(again.turns_deleted, 0);
        assert_eq!(again.details_cleared, 0);
        assert!(again.recordings.is_empty());
        // Only one side of retention configured: the other is left alone.
        let later = now + chrono::Duration::days(1);
        let only_recordings = s.purge_before(None, Some(later)).unwrap();
        assert_eq!(only_recordings.turns_deleted, 0);
        assert_eq!(only_recordings.recordings, vec!["/rec/new.wav".to_string()]);
        assert_eq!(s.turns("new").unwrap().len(), 2);
    }

    #[tokio::test]
    async fn handle_writes_transfers_actions_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(SqliteStore::open(dir.path()).unwrap());
        let old = Utc::now() - chrono::Duration::days(10);
        let mut call = new_call("h");
        call.started_at = old;
        handle.call_started(call).await;
        handle
            .call_answered("h", "PCMU", Some("/rec/h.wav".into()))
            .await;
        handle
            .call_ended(
                "h",
                CallEnd {
                    ended_at: Utc::now(),
                    reason: "done".into(),
                    hangup_by: HangupBy::Caller,
                    sip_status: None,
                    stats: None,
                },
            )
            .await;
        handle.transfer(transfer_record("h", old)).await;
        handle
            .supervisor_action("h", "sam", "takeover", "queue:welfare")
            .await;
        let purged = handle
            .purge_before(None, Some(Utc::now() - chrono::Duration::days(5)))
            .await
            .unwrap();
        assert_eq!(purged.recordings, vec!["/rec/h.wav".to_string()]);
        let audit = {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            assert_eq!(
                count(&s, "SELECT count(*) FROM transfers WHERE call_id = 'h'"),
                1
            );
            s.audit_for_call("h").unwrap()
        };
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].actor, "sam");
    }

    #[test]
    fn purge_runs_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let old = Utc::now() - chrono::Duration::days(100);
        for n in 0..5 {
            let id = format!("c{n}");
            ended_call(
                &mut s,
                &id,
                old + chrono::Duration::minutes(n),
                &format!("/r/{id}.wav"),
            );
            said(&mut s, &id, old, "hello");
        }
        let cutoff = Utc::now() - chrono::Duration::days(30);
        let (first, more) = s.purge_batch(Some(cutoff), Some(cutoff), 2).unwrap();
        assert!(more);
        assert_eq!(first.turns_deleted, 2);
        // Oldest first.
        assert_eq!(first.recordings, ["/r/c0.wav", "/r/c1.wav"]);
        let rest = s.purge_before(Some(cutoff), Some(cutoff)).unwrap();
        assert_eq!(rest.turns_deleted, 3);
        assert_eq!(rest.recordings, ["/r/c2.wav", "/r/c3.wav", "/r/c4.wav"]);
        let (nothing, more) = s.purge_batch(Some(cutoff), Some(cutoff), 2).unwrap();
        assert!(!more);
        assert_eq!(nothing.turns_deleted, 0);
    }

    #[test]
    fn purge_batches_use_the_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        for (query, index) in [
            (TRANSCRIPT_BATCH, "calls_transcript_kept"),
            (RECORDING_BATCH, "calls_recording_kept"),
        ] {
            let plan: Vec<String> = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap()
                .query_map(params!["2030-01-01T00:00:00.000Z", 10], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
        }
    }

    #[tokio::test]
    async fn handle_purges_more_than_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let old = Utc::now() - chrono::Duration::days(100);
        let calls = PURGE_BATCH_CALLS * 2 + 7;
        for n in 0..calls {
            let id = format!("c{n}");
            ended_call(&mut s, &id, old, &format!("/r/{id}.wav"));
            said(&mut s, &id, old, "hello");
        }
        drop(s);
        let handle = StoreHandle::spawn(SqliteStore::open(dir.path()).unwrap());
        let cutoff = Utc::now() - chrono::Duration::days(30);
        let purged = handle
            .purge_before(Some(cutoff), Some(cutoff))
            .await
            .unwrap();
        assert_eq!(purged.turns_deleted, calls);
        assert_eq!(purged.recordings.len(), calls);
    }
}
