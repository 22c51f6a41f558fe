//! Reading what the engine stored, straight from its SQLite database.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Row};

/// The engine's database, read-only so a test can never change what it checks.
pub fn open_read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db")
}

/// Every row `sql` returns, each mapped by `row`.
pub fn query_rows<T>(
    db: &Path,
    sql: &str,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    rows_of(&open_read_only(db), sql, row)
}

/// Every row `sql` returns on an open connection, each mapped by `row`.
pub fn rows_of<T>(
    db: &Connection,
    sql: &str,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut stmt = db
        .prepare(sql)
        .unwrap_or_else(|e| panic!("prepare {sql:?}: {e}"));
    stmt.query_map([], row)
        .unwrap_or_else(|e| panic!("query {sql:?}: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("rows of {sql:?}: {e}"))
}

/// A stored RFC 3339 timestamp.
pub fn timestamp(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {rfc3339:?}: {e}"))
        .to_utc()
}
