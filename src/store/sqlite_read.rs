//! Read queries over `frontdoor.db` for the dashboard: history search, a
//! call's full record and the council's KPIs. Each query runs on a read-only
//! connection of its own, so with WAL it sees the last committed state and
//! never blocks (or is blocked by) the writer thread.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Local, Timelike, Utc};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, params_from_iter};

use super::read::{CallDetail, CallEventRecord, CallQueries, CallSearch, CallSummary, Kpis};
use super::sqlite::{DB_FILE, FTS_TABLE, SqliteStore, parse_ts, ts};
use super::{AuditEntry, RequestRecord, StoreError, TransferRecord, TurnRecord};

/// Idle connections kept open; more are opened when queries overlap and
/// closed again afterwards (the blocking pool bounds how many run at once).
const IDLE_CONNECTIONS: usize = 4;
/// A reader waits this long on a lock (a checkpoint, a schema change at
/// start-up) before the query fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// History pages are bounded whatever the request asks for.
pub const DEFAULT_SEARCH_LIMIT: usize = 50;
pub const MAX_SEARCH_LIMIT: usize = 500;
/// Words beyond this many in a transcript search are ignored: each one is a
/// sub-query, and nobody searches for a paragraph.
const MAX_SEARCH_WORDS: usize = 8;
/// Longer "words" are pasted junk, not something said on a call.
const MAX_WORD_BYTES: usize = 64;
/// Separates values inside `group_concat` (ASCII unit separator: never in an
/// intent or escalation name).
const LIST_SEPARATOR: char = '\u{1f}';

/// How transcript words are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSearch {
    /// The `turns_fts` full-text index: whole words, stemmed (`bins` finds `bin`).
    Fts5,
    /// Substring match with `LIKE` (no index; a build of SQLite without FTS5).
    Like,
}

pub struct SqliteQueries {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    text_search: TextSearch,
}

impl SqliteQueries {
    /// Opens `data_dir/frontdoor.db` read-only. The writer
    /// ([`super::SqliteStore::open`]) must have created it first.
    pub fn open(data_dir: &Path) -> Result<SqliteQueries, StoreError> {
        let path = data_dir.join(DB_FILE);
        let first = open_reader(&path)?;
        let text_search = if first.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
            [FTS_TABLE],
            |row| row.get::<_, bool>(0),
        )? {
            TextSearch::Fts5
        } else {
            TextSearch::Like
        };
        Ok(SqliteQueries {
            path,
            idle: Mutex::new(vec![first]),
            text_search,
        })
    }

    /// Forces a text search strategy (tests of the `LIKE` fallback).
    pub fn with_text_search(mut self, text_search: TextSearch) -> SqliteQueries {
        self.text_search = text_search;
        self
    }

    pub fn text_search(&self) -> TextSearch {
        self.text_search
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let taken = self.idle.lock().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        // A connection left inside a transaction (a failed rollback) would
        // pin an old snapshot for every later query: close it instead.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock();
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        result
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// `LIKE` pattern matching `text` anywhere, with the wildcards in `text`
/// taken literally (used with `ESCAPE '\'`).
fn like_contains(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// One FTS5 query per word, each a quoted string so that operators and
/// punctuation in what was typed (`AND`, `*`, `"`, `:`) are plain text.
fn fts_phrase(word: &str) -> String {
    format!("\"{}\"", word.replace('"', "\"\""))
}

fn search_words(words: &str) -> impl Iterator<Item = &str> {
    words
        .split_whitespace()
        // Punctuation alone is no word (FTS5 tokenises it away) and both
        // strategies must agree on what a search means.
        .filter(|w| w.len() <= MAX_WORD_BYTES && w.chars().any(char::is_alphanumeric))
        .take(MAX_SEARCH_WORDS)
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn split_list(list: Option<String>) -> Vec<String> {
    list.map(|l| {
        l.split(LIST_SEPARATOR)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

fn seconds_between(from: &str, to: &str) -> f64 {
    (parse_ts(to) - parse_ts(from)).num_milliseconds() as f64 / 1000.0
}

/// Escalation reasons of a call, first seen first: the AI's decisions on
/// turns plus the reasons of hand-offs (a supervisor take-over among them).
const CALL_ESCALATIONS: &str = "SELECT e FROM (
        SELECT escalation AS e, at FROM turns
         WHERE call_id = c.id AND escalation IS NOT NULL AND escalation NOT IN ('', 'none')
        UNION ALL
        SELECT reason AS e, requested_at AS at FROM transfers WHERE call_id = c.id
    ) GROUP BY e ORDER BY min(at)";

/// The page of calls is chosen first (cheap: the filters and the
/// `started_at` index) and the summary columns, each a few sub-queries, are
/// computed for that page only.
fn summary_sql(where_clause: &str) -> String {
    format!(
        "SELECT c.id, c.caller, c.callee, c.route, c.started_at, c.ended_at, c.end_reason,
            c.recording_path IS NOT NULL AS has_recording,
            (SELECT group_concat(intent, char(31)) FROM (
                SELECT intent FROM turns
                 WHERE call_id = c.id AND intent IS NOT NULL AND intent != ''
                 GROUP BY intent ORDER BY min(rowid))) AS intents,
            (SELECT group_concat(e, char(31)) FROM ({CALL_ESCALATIONS})) AS escalations,
            EXISTS (SELECT 1 FROM transfers WHERE call_id = c.id)
              OR EXISTS (SELECT 1 FROM call_events WHERE kind = 'transfer' AND call_id = c.id)
              AS transferred,
            EXISTS (SELECT 1 FROM call_events WHERE kind = 'flagged' AND call_id = c.id)
              AS flagged
         FROM (SELECT c.rowid AS page_rowid FROM calls c
               {where_clause}
               ORDER BY c.started_at DESC, c.rowid DESC
               LIMIT ? OFFSET ?) AS page
         JOIN calls c ON c.rowid = page.page_rowid
         ORDER BY c.started_at DESC, c.rowid DESC"
    )
}

fn row_to_summary(row: &Row<'_>) -> rusqlite::Result<CallSummary> {
    let started_at: String = row.get("started_at")?;
    let ended_at: Option<String> = row.get("ended_at")?;
    Ok(CallSummary {
        duration_secs: ended_at.as_deref().map(|e| seconds_between(&started_at, e)),
        id: row.get("id")?,
        caller: row.get("caller")?,
        callee: row.get("callee")?,
        route: row.get("route")?,
        started_at,
        ended_at,
        end_reason: row.get("end_reason")?,
        intents: split_list(row.get("intents")?),
        escalations: split_list(row.get("escalations")?),
        transferred: row.get("transferred")?,
        has_recording: row.get("has_recording")?,
        flagged: row.get("flagged")?,
    })
}

impl SqliteQueries {
    /// The WHERE clause and its parameters for a search (parameters are
    /// positional, in the order the conditions are pushed).
    fn search_filter(&self, q: &CallSearch) -> (String, Vec<Value>) {
        let mut conditions: Vec<&'static str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(from) = q.from {
            conditions.push("c.started_at >= ?");
            params.push(Value::Text(ts(from)));
        }
        if let Some(to) = q.to {
            conditions.push("c.started_at < ?");
            params.push(Value::Text(ts(to)));
        }
        if let Some(number) = non_empty(&q.number) {
            conditions.push("(c.caller LIKE ? ESCAPE '\\' OR c.callee LIKE ? ESCAPE '\\')");
            let pattern = like_contains(number);
            params.push(Value::Text(pattern.clone()));
            params.push(Value::Text(pattern));
        }
        if let Some(intent) = non_empty(&q.intent) {
            conditions.push("EXISTS (SELECT 1 FROM turns WHERE call_id = c.id AND intent = ?)");
            params.push(Value::Text(intent.to_string()));
        }
        if let Some(escalation) = non_empty(&q.escalation) {
            if escalation.eq_ignore_ascii_case("any") {
                conditions.push(
                    "(EXISTS (SELECT 1 FROM turns WHERE call_id = c.id
                              AND escalation IS NOT NULL AND escalation NOT IN ('', 'none'))
                      OR EXISTS (SELECT 1 FROM transfers WHERE call_id = c.id)
                      OR EXISTS (SELECT 1 FROM call_events WHERE kind = 'transfer' AND call_id = c.id))",
                );
            } else {
                // A hand-off still in progress has no transfers row yet; its
                // `transfer` event carries the reason.
                conditions.push(
                    "(EXISTS (SELECT 1 FROM turns WHERE call_id = c.id AND escalation = ?)
                      OR EXISTS (SELECT 1 FROM transfers WHERE call_id = c.id AND reason = ?)
                      OR EXISTS (SELECT 1 FROM call_events WHERE kind = 'transfer' AND call_id = c.id
                           AND CASE WHEN json_valid(detail)
                               THEN json_extract(detail, '$.reason') END = ?))",
                );
                for _ in 0..3 {
                    params.push(Value::Text(escalation.to_string()));
                }
            }
        }
        if let Some(words) = non_empty(&q.words) {
            for word in search_words(words) {
                match self.text_search {
                    TextSearch::Fts5 => {
                        conditions.push(
                            "c.id IN (SELECT t.call_id FROM turns t
                                WHERE t.rowid IN (SELECT rowid FROM turns_fts WHERE turns_fts MATCH ?))",
                        );
                        params.push(Value::Text(fts_phrase(word)));
                    }
                    TextSearch::Like => {
                        conditions.push(
                            "EXISTS (SELECT 1 FROM turns WHERE call_id = c.id
                                AND text LIKE ? ESCAPE '\\')",
                        );
                        params.push(Value::Text(like_contains(word)));
                    }
                }
            }
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        (clause, params)
    }
}

/// Clamps a requested page size: 0 means the default.
pub fn clamp_limit(limit: usize) -> usize {
    if limit == 0 {
        DEFAULT_SEARCH_LIMIT
    } else {
        limit.min(MAX_SEARCH_LIMIT)
    }
}

impl CallQueries for SqliteQueries {
    fn search_calls(&self, q: &CallSearch) -> Result<Vec<CallSummary>, StoreError> {
        let (clause, mut params) = self.search_filter(q);
        params.push(Value::Integer(clamp_limit(q.limit) as i64));
        params.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
        let sql = summary_sql(&clause);
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), row_to_summary)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn call_detail(&self, id: &str) -> Result<Option<CallDetail>, StoreError> {
        self.with_conn(|conn| {
            // One read transaction: the parts agree with each other even while
            // the writer adds turns to a live call. Dropping it rolls back,
            // which for a reader just ends the snapshot.
            let snapshot = conn.unchecked_transaction()?;
            read_detail(&snapshot, id)
        })
    }

    fn kpis(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Kpis, StoreError> {
        self.with_conn(|conn| {
            let snapshot = conn.unchecked_transaction()?;
            read_kpis(&snapshot, from, to)
        })
    }
}

fn read_detail(conn: &Connection, id: &str) -> Result<Option<CallDetail>, StoreError> {
    let Some(call) = conn
        .prepare_cached("SELECT * FROM calls WHERE id = ?1")?
        .query_row([id], SqliteStore::row_to_record)
        .optional()?
    else {
        return Ok(None);
    };
    let turns = conn
        .prepare_cached(
            "SELECT call_id, at, speaker, text, intent, confidence, escalation, reason
             FROM turns WHERE call_id = ?1 ORDER BY at, rowid",
        )?
        .query_map([id], |row| {
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
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let events = conn
        .prepare_cached(
            "SELECT at, kind, detail FROM call_events WHERE call_id = ?1 ORDER BY at, rowid",
        )?
        .query_map([id], |row| {
            Ok(CallEventRecord {
                at: row.get(0)?,
                kind: row.get(1)?,
                detail: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let audit = conn
        .prepare_cached(
            "SELECT at, actor, action, call_id, detail FROM audit_log
             WHERE call_id = ?1 ORDER BY at, seq",
        )?
        .query_map([id], |row| {
            Ok(AuditEntry {
                at: parse_ts(&row.get::<_, String>(0)?),
                actor: row.get(1)?,
                action: row.get(2)?,
                call_id: row.get(3)?,
                detail: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let requests = conn
        .prepare_cached(
            "SELECT call_id, at, reference, kind, details_json FROM requests
             WHERE call_id = ?1 ORDER BY at, rowid",
        )?
        .query_map([id], |row| {
            Ok(RequestRecord {
                call_id: row.get(0)?,
                at: parse_ts(&row.get::<_, String>(1)?),
                reference: row.get(2)?,
                kind: row.get(3)?,
                details_json: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let transfers = conn
        .prepare_cached(
            "SELECT call_id, requested_at, requested_by, reason, queue, agent, answered_at,
                    ended_at, outcome
             FROM transfers WHERE call_id = ?1 ORDER BY requested_at, rowid",
        )?
        .query_map([id], |row| {
            Ok(TransferRecord {
                call_id: row.get(0)?,
                requested_at: parse_ts(&row.get::<_, String>(1)?),
                requested_by: row.get(2)?,
                reason: row.get(3)?,
                queue: row.get(4)?,
                agent: row.get(5)?,
                answered_at: row.get::<_, Option<String>>(6)?.as_deref().map(parse_ts),
                ended_at: row.get::<_, Option<String>>(7)?.as_deref().map(parse_ts),
                outcome: row.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(CallDetail {
        call,
        turns,
        events,
        audit,
        requests,
        transfers,
    }))
}

fn read_kpis(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Kpis, StoreError> {
    let (from, to) = (ts(from), ts(to));
    let in_range = "c.started_at >= ?1 AND c.started_at < ?2";
    let (calls_handled, contained, avg_time_to_answer_secs, refused): (
        i64,
        i64,
        Option<f64>,
        i64,
    ) = conn.prepare_cached(&format!(
        "SELECT
            count(c.answered_at),
            coalesce(sum(c.answered_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM transfers WHERE call_id = c.id)
                AND NOT EXISTS (SELECT 1 FROM call_events WHERE kind = 'transfer' AND call_id = c.id)), 0),
            avg(CASE WHEN c.answered_at IS NOT NULL
                THEN (julianday(c.answered_at) - julianday(c.started_at)) * 86400.0 END),
            coalesce(sum(c.answered_at IS NULL AND c.state = 'ended' AND c.sip_status >= 300), 0)
         FROM calls c WHERE {in_range}"
    ))?
    .query_row(params![from, to], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    })?;

    // Once per call per reason: the AI's escalation decisions on its turns,
    // plus supervisor take-overs (hand-offs a person asked for), which no
    // turn records.
    let escalations_by_reason = conn
        .prepare_cached(&format!(
            "SELECT reason, count(*) FROM (
                SELECT DISTINCT t.call_id, t.escalation AS reason
                  FROM turns t JOIN calls c ON c.id = t.call_id
                 WHERE {in_range} AND t.escalation IS NOT NULL AND t.escalation NOT IN ('', 'none')
                UNION
                SELECT DISTINCT x.call_id, x.reason
                  FROM transfers x JOIN calls c ON c.id = x.call_id
                 WHERE {in_range} AND x.requested_by != 'ai'
             ) GROUP BY reason ORDER BY count(*) DESC, reason"
        ))?
        .query_map(params![from, to], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?.max(0) as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;

    let (transfers, avg_agent_wait_secs): (i64, Option<f64>) = conn
        .prepare_cached(&format!(
            "SELECT count(*),
                avg(CASE WHEN x.answered_at IS NOT NULL
                    THEN (julianday(x.answered_at) - julianday(x.requested_at)) * 86400.0 END)
             FROM transfers x JOIN calls c ON c.id = x.call_id WHERE {in_range}"
        ))?
        .query_row(params![from, to], |row| Ok((row.get(0)?, row.get(1)?)))?;

    // Hours in the engine's local time zone (the council's office hours);
    // streamed, so a year's range costs no memory.
    let mut calls_by_hour = vec![0u64; 24];
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.started_at FROM calls c WHERE {in_range}"
    ))?;
    let mut rows = stmt.query(params![from, to])?;
    while let Some(row) = rows.next()? {
        let started: String = row.get(0)?;
        let hour = parse_ts(&started).with_timezone(&Local).hour() as usize;
        if let Some(bucket) = calls_by_hour.get_mut(hour) {
            *bucket += 1;
        }
    }

    let calls_handled = calls_handled.max(0) as u64;
    let contained = contained.max(0) as u64;
    Ok(Kpis {
        calls_handled,
        contained,
        deflection_rate: if calls_handled == 0 {
            0.0
        } else {
            contained as f64 / calls_handled as f64
        },
        escalations_by_reason,
        transfers: transfers.max(0) as u64,
        avg_agent_wait_secs,
        avg_time_to_answer_secs,
        calls_by_hour,
        refused: refused.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        CallEnd, CallStore, HangupBy, NewCall, StoreHandle, StoreReader, TransferRecord,
    };
    use chrono::{Duration as Span, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
    }

    fn start(s: &mut SqliteStore, id: &str, caller: &str, at: DateTime<Utc>) {
        s.call_started(&NewCall {
            id: id.into(),
            sip_call_id: format!("{id}@pbx"),
            caller: caller.into(),
            callee: "01332640000".into(),
            route: Some("main".into()),
            source: "192.0.2.1:5060".into(),
            node: "node-a".into(),
            started_at: at,
        })
        .unwrap();
    }

    fn end(s: &mut SqliteStore, id: &str, at: DateTime<Utc>, sip_status: Option<u16>) {
        s.call_ended(
            id,
            &CallEnd {
                ended_at: at,
                reason: "caller hung up".into(),
                hangup_by: HangupBy::Caller,
                sip_status,
                stats: None,
            },
        )
        .unwrap();
    }

    fn turn(
        s: &mut SqliteStore,
        id: &str,
        at: DateTime<Utc>,
        text: &str,
        intent: Option<&str>,
        escalation: &str,
    ) {
        s.turn(&TurnRecord {
            call_id: id.into(),
            at,
            speaker: "caller".into(),
            text: text.into(),
            intent: intent.map(str::to_string),
            confidence: Some(0.9),
            escalation: Some(escalation.into()),
            reason: Some("rule".into()),
        })
        .unwrap();
    }

    fn transfer(
        s: &mut SqliteStore,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
        wait_secs: i64,
    ) {
        s.transfer(&TransferRecord {
            call_id: id.into(),
            requested_at: at,
            requested_by: by.into(),
            reason: reason.into(),
            queue: Some("general".into()),
            agent: Some("alice".into()),
            answered_at: Some(at + Span::seconds(wait_secs)),
            ended_at: Some(at + Span::seconds(wait_secs + 60)),
            outcome: "completed".into(),
        })
        .unwrap();
    }

    /// A: bin call with a recording and a hand-off in progress (event only);
    /// B: council tax, distress, flagged; C: caller number with `_`, handed
    /// off for a human; D: refused.
    fn history(dir: &Path) -> SqliteStore {
        let mut s = SqliteStore::open(dir).unwrap();
        let t = t0();
        start(&mut s, "A", "07700900111", t);
        s.call_answered("A", t + Span::seconds(1), "PCMU", Some("/rec/A.wav"))
            .unwrap();
        turn(
            &mut s,
            "A",
            t + Span::seconds(5),
            "my bin was missed on Tuesday",
            Some("bin_missed"),
            "none",
        );
        s.call_event(
            "A",
            t + Span::seconds(20),
            "transfer",
            r#"{"reason":"emergency","queue":"general","summary":"x","transcript":[]}"#,
        )
        .unwrap();
        end(&mut s, "A", t + Span::seconds(90), Some(200));

        let t = t0() + Span::hours(1);
        start(&mut s, "B", "07700900222", t);
        s.call_answered("B", t + Span::seconds(1), "PCMU", None)
            .unwrap();
        turn(
            &mut s,
            "B",
            t + Span::seconds(5),
            "I can't cope with 50% of the bill",
            Some("council_tax"),
            "distress",
        );
        turn(
            &mut s,
            "B",
            t + Span::seconds(9),
            "the council tax bill",
            Some("council_tax"),
            "distress",
        );
        s.supervisor_action("B", t + Span::seconds(30), "sam", "flagged", "check")
            .unwrap();
        end(&mut s, "B", t + Span::seconds(60), Some(200));

        let t = t0() + Span::hours(2);
        start(&mut s, "C", "0800_123", t);
        s.call_answered("C", t + Span::seconds(1), "PCMU", None)
            .unwrap();
        turn(
            &mut s,
            "C",
            t + Span::seconds(5),
            "I want to pay 500 pounds",
            Some("payment"),
            "none",
        );
        turn(
            &mut s,
            "C",
            t + Span::seconds(8),
            "let me talk to a person",
            Some("agent"),
            "human_request",
        );
        transfer(&mut s, "C", "ai", "human_request", t + Span::seconds(9), 10);
        end(&mut s, "C", t + Span::seconds(120), Some(200));

        let t = t0() + Span::hours(3);
        start(&mut s, "D", "07700900444", t);
        end(&mut s, "D", t + Span::seconds(2), Some(486));
        s
    }

    fn ids(found: &[CallSummary]) -> Vec<&str> {
        found.iter().map(|c| c.id.as_str()).collect()
    }

    fn search(q: &SqliteQueries, f: impl FnOnce(&mut CallSearch)) -> Vec<CallSummary> {
        let mut query = CallSearch::default();
        f(&mut query);
        q.search_calls(&query).unwrap()
    }

    #[test]
    fn search_filters_combine_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = history(dir.path());
        let q = SqliteQueries::open(dir.path()).unwrap();
        assert_eq!(q.text_search(), TextSearch::Fts5);

        assert_eq!(ids(&search(&q, |_| {})), ["D", "C", "B", "A"]);
        let window = search(&q, |s| {
            s.from = Some(t0() + Span::minutes(30));
            s.to = Some(t0() + Span::hours(2));
        });
        assert_eq!(ids(&window), ["B"], "from is inclusive, to exclusive");
        assert_eq!(
            ids(&search(&q, |s| s.from = Some(t0() + Span::hours(2)))),
            ["D", "C"]
        );

        assert_eq!(
            ids(&search(&q, |s| s.number = Some("900111".into()))),
            ["A"]
        );
        assert_eq!(
            ids(&search(&q, |s| s.number = Some("2640000".into()))).len(),
            4
        );
        // Wildcards typed by the user are literal characters.
        assert_eq!(ids(&search(&q, |s| s.number = Some("_".into()))), ["C"]);
        assert!(search(&q, |s| s.number = Some("%".into())).is_empty());
        assert_eq!(ids(&search(&q, |s| s.number = Some("  ".into()))).len(), 4);

        assert_eq!(
            ids(&search(&q, |s| s.intent = Some("council_tax".into()))),
            ["B"]
        );
        assert_eq!(
            ids(&search(&q, |s| s.escalation = Some("distress".into()))),
            ["B"]
        );
        assert_eq!(
            ids(&search(&q, |s| s.escalation = Some("human_request".into()))),
            ["C"]
        );
        // Only the in-progress hand-off event of A carries this reason.
        assert_eq!(
            ids(&search(&q, |s| s.escalation = Some("emergency".into()))),
            ["A"]
        );
        assert_eq!(
            ids(&search(&q, |s| s.escalation = Some("any".into()))),
            ["C", "B", "A"]
        );
        assert!(search(&q, |s| s.escalation = Some("safeguarding".into())).is_empty());

        let both = search(&q, |s| {
            s.intent = Some("council_tax".into());
            s.number = Some("900111".into());
        });
        assert!(both.is_empty(), "filters combine with AND");
    }

    #[test]
    fn search_pages_are_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = history(dir.path());
        let q = SqliteQueries::open(dir.path()).unwrap();
        let page = search(&q, |s| {
            s.limit = 2;
            s.offset = 1;
        });
        assert_eq!(ids(&page), ["C", "B"]);
        assert_eq!(search(&q, |s| s.limit = usize::MAX).len(), 4);
        assert!(search(&q, |s| s.offset = usize::MAX).is_empty());
        assert_eq!(clamp_limit(0), DEFAULT_SEARCH_LIMIT);
        assert_eq!(clamp_limit(7), 7);
        assert_eq!(clamp_limit(100_000), MAX_SEARCH_LIMIT);
    }

    #[test]
    fn search_summaries_are_filled() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = history(dir.path());
        let q = SqliteQueries::open(dir.path()).unwrap();
        let all = search(&q, |_| {});
        let by_id = |id: &str| all.iter().find(|c| c.id == id).unwrap();
        let a = by_id("A");
        assert_eq!(a.intents, ["bin_missed"]);
        assert!(a.escalations.is_empty(), "`none` is not an escalation");
        assert!(a.transferred && a.has_recording && !a.flagged);
        assert_eq!(a.duration_secs, Some(90.0));
        let b = by_id("B");
        assert_eq!(b.intents, ["council_tax"]);
        assert_eq!(b.escalations, ["distress"]);
        assert!(b.flagged && !b.transferred && !b.has_recording);
        let c = by_id("C");
        assert_eq!(c.intents, ["payment", "agent"]);
        assert_eq!(c.escalations, ["human_request"]);
        assert!(c.transferred);
        let d = by_id("D");
        assert!(d.intents.is_empty());
        assert_eq!(d.duration_secs, Some(2.0));
        assert_eq!(d.caller, "07700900444");
        assert_eq!(d.end_reason.as_deref(), Some("caller hung up"));
    }

    #[test]
    fn word_search_with_the_full_text_index() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = history(dir.path());
        let q = SqliteQueries::open(dir.path()).unwrap();
        let words = |w: &str| ids(&search(&q, |s| s.words = Some(w.into()))).join(",");
        assert_eq!(words("missed"), "A");
        assert_eq!(words("MISSED tuesday"), "A");
        assert_eq!(words("bins"), "A", "stemmed");
        // Words may come from different turns of the same call.
        assert_eq!(words("cope council"), "B");
        assert_eq!(words("cope missed"), "");
        assert_eq!(
            words("50%"),
            "B",
            "`50%` is the word 50, not a prefix of 500"
        );
        assert_eq!(words("500"), "C");
        // FTS5 syntax typed by a user is taken as plain words.
        assert_eq!(words("missed*"), "A");
        assert_eq!(words("\"bill"), "B");
        assert_eq!(words("missed OR"), "");
        assert_eq!(words("NEAR(bin)"), "");
        // Nothing searchable typed: no word filter at all.
        assert_eq!(words("%"), "D,C,B,A");
    }

    #[test]
    fn word_search_with_like_escapes_wildcards() {
        let dir = tempfile::tempdir().unwrap();
        let _writer = history(dir.path());
        let q = SqliteQueries::open(dir.path())
            .unwrap()
            .with_text_search(TextSearch::Like);
        let words = |w: &str| ids(&search(&q, |s| s.words = Some(w.into()))).join(",");
        assert_eq!(words("missed"), "A");
        assert_eq!(words("MISSED tuesday"), "A");
        assert_eq!(words("cope council"), "B");
        assert_eq!(words("50%"), "B", "% is literal");
        assert_eq!(words("5_0"), "", "_ is literal");
        assert_eq!(words("500"), "C");
        assert_eq!(words("can't"), "B");
    }

    #[test]
    fn call_detail_is_complete_and_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = history(dir.path());
        let t = t0() + Span::hours(2);
        // Written out of order (a late final transcript, an audit entry for
        // an earlier decision): the detail is still in time order.
        turn(
            &mut s,
            "C",
            t + Span::seconds(2),
            "hello",
            Some("greeting"),
            "none",
        );
        s.audit(&AuditEntry {
            at: t + Span::seconds(7),
            actor: "ai".into(),
            action: "escalate".into(),
            call_id: Some("C".into()),
            detail: "human_request".into(),
        })
        .unwrap();
        s.audit(&AuditEntry {
            at: t + Span::seconds(3),
            actor: "ai".into(),
            action: "intent".into(),
            call_id: Some("C".into()),
            detail: "greeting".into(),
        })
        .unwrap();
        s.call_event("C", t + Span::seconds(50), "hold", "sendonly")
            .unwrap();
        s.call_event("C", t + Span::seconds(40), "dtmf", "1")
            .unwrap();
        s.request(&RequestRecord {
            call_id: "C".into(),
            at: t + Span::seconds(6),
            reference: "FD-1".into(),
            kind: "payment".into(),
            details_json: "{}".into(),
        })
        .unwrap();
        transfer(&mut s, "C", "sam", "supervisor", t + Span::seconds(100), 3);

        let q = SqliteQueries::open(dir.path()).unwrap();
        let detail = q.call_detail("C").unwrap().unwrap();
        assert_eq!(detail.call.id, "C");
        assert_eq!(detail.call.caller, "0800_123");
        let texts: Vec<&str> = detail.turns.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "hello",
                "I want to pay 500 pounds",
                "let me talk to a person"
            ]
        );
        let events: Vec<&str> = detail.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(events, ["dtmf", "hold"]);
        let audit: Vec<&str> = detail.audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(audit, ["intent", "escalate"]);
        assert_eq!(detail.requests.len(), 1);
        assert_eq!(detail.requests[0].reference, "FD-1");
        let reasons: Vec<&str> = detail.transfers.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(reasons, ["human_request", "supervisor"]);
        assert_eq!(detail.transfers[0].answered_at, Some(t + Span::seconds(19)));
        assert!(q.call_detail("nope").unwrap().is_none());
    }

    #[test]
    fn kpis_on_a_crafted_day() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let day = t0();
        let answered = |s: &mut SqliteStore, id: &str, at: DateTime<Utc>, after: i64| {
            start(s, id, "07700900000", at);
            s.call_answered(id, at + Span::seconds(after), "PCMU", None)
                .unwrap();
        };
        // Contained: answered in 2 s, no hand-off; a `none` turn.
        answered(&mut s, "a", day, 2);
        turn(
            &mut s,
            "a",
            day + Span::seconds(5),
            "bins",
            Some("bin_missed"),
            "none",
        );
        end(&mut s, "a", day + Span::seconds(60), Some(200));
        // Distress on two turns (counted once), handed off by the AI, 10 s wait.
        answered(&mut s, "b", day + Span::minutes(10), 4);
        turn(
            &mut s,
            "b",
            day + Span::minutes(11),
            "help",
            None,
            "distress",
        );
        turn(
            &mut s,
            "b",
            day + Span::minutes(12),
            "please",
            None,
            "distress",
        );
        transfer(&mut s, "b", "ai", "distress", day + Span::minutes(12), 10);
        end(&mut s, "b", day + Span::minutes(20), Some(200));
        // A supervisor take-over, 20 s wait.
        answered(&mut s, "c", day + Span::hours(3), 6);
        transfer(
            &mut s,
            "c",
            "sam",
            "supervisor",
            day + Span::hours(3) + Span::minutes(1),
            20,
        );
        end(
            &mut s,
            "c",
            day + Span::hours(3) + Span::minutes(5),
            Some(200),
        );
        // A hand-off still ringing an agent: only its event exists.
        answered(&mut s, "g", day + Span::hours(5), 8);
        s.call_event(
            "g",
            day + Span::hours(5) + Span::seconds(30),
            "transfer",
            "{}",
        )
        .unwrap();
        // Refused (busy) and one still ringing: not handled.
        start(&mut s, "d", "07700900000", day + Span::hours(6));
        end(
            &mut s,
            "d",
            day + Span::hours(6) + Span::seconds(1),
            Some(486),
        );
        start(&mut s, "e", "07700900000", day + Span::hours(7));
        // Outside the range on both sides.
        answered(&mut s, "before", day - Span::seconds(1), 1);
        answered(&mut s, "after", day + Span::days(1), 1);

        let q = SqliteQueries::open(dir.path()).unwrap();
        let k = q.kpis(day, day + Span::days(1)).unwrap();
        assert_eq!(k.calls_handled, 4);
        assert_eq!(k.contained, 1);
        assert_eq!(k.deflection_rate, 0.25);
        assert_eq!(
            k.escalations_by_reason,
            [("distress".to_string(), 1), ("supervisor".to_string(), 1)]
        );
        assert_eq!(k.transfers, 2);
        assert!((k.avg_agent_wait_secs.unwrap() - 15.0).abs() < 1e-3);
        assert!((k.avg_time_to_answer_secs.unwrap() - 5.0).abs() < 1e-3);
        assert_eq!(k.refused, 1);
        let mut hours = vec![0u64; 24];
        for start in [
            day,
            day + Span::minutes(10),
            day + Span::hours(3),
            day + Span::hours(5),
            day + Span::hours(6),
            day + Span::hours(7),
        ] {
            hours[start.with_timezone(&Local).hour() as usize] += 1;
        }
        assert_eq!(k.calls_by_hour, hours);

        let empty = q.kpis(day + Span::days(2), day + Span::days(3)).unwrap();
        assert_eq!(empty.calls_handled, 0);
        assert_eq!(empty.deflection_rate, 0.0);
        assert_eq!(empty.avg_agent_wait_secs, None);
        assert_eq!(empty.calls_by_hour, vec![0; 24]);
    }

    #[tokio::test]
    async fn reader_sees_what_the_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StoreHandle::spawn(SqliteStore::open(dir.path()).unwrap());
        let reader = StoreReader::open_sqlite(dir.path()).unwrap();
        assert!(
            reader
                .search_calls(CallSearch::default())
                .await
                .unwrap()
                .is_empty()
        );
        writer
            .call_started(NewCall {
                id: "w".into(),
                sip_call_id: "w@pbx".into(),
                caller: "07700900999".into(),
                callee: "01332640000".into(),
                route: None,
                source: "192.0.2.1:5060".into(),
                node: "node-a".into(),
                started_at: Utc::now(),
            })
            .await;
        writer
            .turn(TurnRecord {
                call_id: "w".into(),
                at: Utc::now(),
                speaker: "caller".into(),
                text: "pothole on Station Road".into(),
                intent: Some("pothole".into()),
                confidence: Some(0.7),
                escalation: Some("none".into()),
                reason: None,
            })
            .await;
        writer
            .supervisor_action("w", "sam", "flagged", "listen again")
            .await;
        writer.flush().await;
        let found = reader
            .search_calls(CallSearch {
                words: Some("pothole".into()),
                ..CallSearch::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&found), ["w"]);
        assert!(found[0].flagged);
        let detail = reader.call_detail("w").await.unwrap().unwrap();
        assert_eq!(detail.turns.len(), 1);
        assert_eq!(detail.audit[0].actor, "sam");
        // Reader connections cannot write.
        let q = SqliteQueries::open(dir.path()).unwrap();
        let refused = q.with_conn(|c| Ok(c.execute("DELETE FROM turns", [])?));
        assert!(refused.is_err());
    }

    #[test]
    fn reader_needs_the_database_to_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SqliteQueries::open(dir.path()).is_err());
    }

    /// The schema as the engine created it before transfers, retention
    /// columns and the full-text index.
    const OLD_SCHEMA: &str = r#"
        CREATE TABLE calls (
            id TEXT PRIMARY KEY, sip_call_id TEXT NOT NULL, caller TEXT NOT NULL,
            callee TEXT NOT NULL, route TEXT, source TEXT, node TEXT NOT NULL,
            state TEXT NOT NULL, started_at TEXT NOT NULL, answered_at TEXT, ended_at TEXT,
            end_reason TEXT, hangup_by TEXT, sip_status INTEGER, codec TEXT,
            rtp_packets_rx INTEGER, rtp_packets_tx INTEGER, rtp_lost INTEGER,
            rtp_jitter_ms REAL, recording_path TEXT
        );
        CREATE INDEX calls_started ON calls(started_at);
        CREATE INDEX calls_state ON calls(state, node);
        CREATE TABLE call_events (call_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL,
            detail TEXT NOT NULL);
        CREATE INDEX call_events_call ON call_events(call_id);
        CREATE TABLE turns (call_id TEXT NOT NULL, at TEXT NOT NULL, speaker TEXT NOT NULL,
            text TEXT NOT NULL, intent TEXT, confidence REAL, escalation TEXT, reason TEXT);
        CREATE INDEX turns_call ON turns(call_id);
        CREATE TABLE requests (call_id TEXT NOT NULL, at TEXT NOT NULL,
            reference TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, details_json TEXT NOT NULL);
        CREATE TABLE audit_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL, call_id TEXT, detail TEXT NOT NULL);
        CREATE INDEX audit_call ON audit_log(call_id);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        INSERT INTO calls (id, sip_call_id, caller, callee, node, state, started_at, ended_at,
                           answered_at, recording_path)
            VALUES ('old', 'old@pbx', '07700900555', '01332640000', 'node-a', 'ended',
                    '2025-01-06T10:00:00.000Z', '2025-01-06T10:05:00.000Z',
                    '2025-01-06T10:00:01.000Z', '/rec/old.wav');
        INSERT INTO turns (call_id, at, speaker, text, intent, escalation)
            VALUES ('old', '2025-01-06T10:00:05.000Z', 'caller', 'streetlight is broken',
                    'streetlight', 'none');
        INSERT INTO audit_log (at, actor, action, call_id, detail)
            VALUES ('2025-01-06T10:00:05.000Z', 'ai', 'intent', 'old', 'streetlight');
    "#;

    #[test]
    fn an_old_database_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(OLD_SCHEMA).unwrap();
        }
        let mut s = SqliteStore::open(dir.path()).unwrap();
        // Twice: a second start-up finds nothing left to migrate.
        drop(s);
        s = SqliteStore::open(dir.path()).unwrap();
        transfer(&mut s, "old", "ai", "complexity", t0(), 5);

        let q = SqliteQueries::open(dir.path()).unwrap();
        assert_eq!(q.text_search(), TextSearch::Fts5);
        // Turns written before the index existed are searchable.
        let found = search(&q, |s| s.words = Some("streetlight".into()));
        assert_eq!(ids(&found), ["old"]);
        assert!(found[0].transferred && found[0].has_recording);
        assert_eq!(found[0].escalations, ["complexity"]);

        let cutoff = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let purged = s.purge_before(Some(cutoff), Some(cutoff)).unwrap();
        assert_eq!(purged.turns_deleted, 1);
        assert_eq!(purged.recordings, ["/rec/old.wav"]);
        // The delete reached the index too.
        assert!(search(&q, |s| s.words = Some("streetlight".into())).is_empty());
        let detail = q.call_detail("old").unwrap().unwrap();
        assert_eq!(detail.audit.len(), 1, "the audit trail survives the purge");
    }
}
