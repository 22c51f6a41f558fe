//! Retention: transcripts and recordings older than the configured number of
//! days are purged, and every purge run is itself audited.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::GovernanceError;
use crate::config::GovernanceSection;
use crate::store::{AuditEntry, StoreHandle};

/// What one purge run did; also the detail of its `retention_purge` audit
/// entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Transcripts older than this were purged; `None`: kept forever.
    pub transcripts_before: Option<DateTime<Utc>>,
    /// Recordings older than this were deleted; `None`: kept forever.
    pub recordings_before: Option<DateTime<Utc>>,
    pub turns_deleted: usize,
    /// Transfer summaries and request details cleared.
    pub details_cleared: usize,
    pub recordings_deleted: usize,
    /// Recording files already gone (deleted by hand, never written).
    pub recordings_missing: usize,
    /// Recording files not deleted: outside the recordings directory, or
    /// the file system refused. Each is logged.
    pub recordings_failed: usize,
}

/// The moment before which data kept `days` days is purged; `None` for 0
/// (keep forever) or for a period reaching past the calendar.
pub fn cutoff(now: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    if days == 0 {
        return None;
    }
    TimeDelta::try_days(i64::from(days)).and_then(|age| now.checked_sub_signed(age))
}

/// Purges what is past retention at `now`: records through the store,
/// then the recording files it names (only inside `recordings_dir`). The
/// run is audited (actor `system`, action `retention_purge`) whatever it
/// found, failures included, and the audit is written before this returns.
pub async fn purge_once(
    store: &StoreHandle,
    recordings_dir: &Path,
    cfg: &GovernanceSection,
    now: DateTime<Utc>,
) -> Result<PurgeReport, GovernanceError> {
    let mut report = PurgeReport {
        transcripts_before: cutoff(now, cfg.transcript_retention_days),
        recordings_before: cutoff(now, cfg.recording_retention_days),
        ..PurgeReport::default()
    };
    let purged = if report.transcripts_before.is_none() && report.recordings_before.is_none() {
        Ok(crate::store::PurgeResult::default())
    } else {
        store
            .purge_before(report.transcripts_before, report.recordings_before)
            .await
    };
    let purged = match purged {
        Ok(purged) => purged,
        Err(error) => {
            let detail = serde_json::json!({
                "transcripts_before": report.transcripts_before,
                "recordings_before": report.recordings_before,
                "error": error.to_string(),
            });
            audit(store, detail.to_string()).await;
            return Err(error.into());
        }
    };
    report.turns_deleted = purged.turns_deleted;
    report.details_cleared = purged.details_cleared;
    if !purged.recordings.is_empty() {
        let dir = recordings_dir.to_path_buf();
        let files = purged.recordings;
        let named = files.len();
        // File system work off the async runtime: a slow disk must not
        // stall calls.
        let deleted = tokio::task::spawn_blocking(move || delete_recordings(&dir, &files)).await;
        match deleted {
            Ok(Ok(outcome)) => {
                report.recordings_deleted = outcome.deleted;
                report.recordings_missing = outcome.missing;
                report.recordings_failed = outcome.failed;
            }
            Ok(Err(error)) => {
                warn!(%error, "recordings past retention could not be deleted");
                report.recordings_failed = named;
            }
            Err(error) => {
                warn!(%error, "the recording deletion task failed");
                report.recordings_failed = named;
            }
        }
    }
    let detail = serde_json::to_string(&report).unwrap_or_default();
    audit(store, detail).await;
    Ok(report)
}

async fn audit(store: &StoreHandle, detail: String) {
    store
        .audit(AuditEntry {
            at: Utc::now(),
            actor: "system".into(),
            action: "retention_purge".into(),
            call_id: None,
            detail,
        })
        .await;
    store.flush().await;
}

#[derive(Debug, Default)]
struct Deleted {
    deleted: usize,
    missing: usize,
    failed: usize,
}

/// Deletes the recordings named by the store. A path is resolved against
/// `recordings_dir` when relative and canonicalised, and only a regular file
/// inside the (canonical) recordings directory is deleted: a tampered or
/// stale record can never make the purge remove anything else.
fn delete_recordings(recordings_dir: &Path, files: &[String]) -> Result<Deleted, GovernanceError> {
    let dir = recordings_dir
        .canonicalize()
        .map_err(|source| GovernanceError::RecordingsDir {
            path: recordings_dir.to_path_buf(),
            source,
        })?;
    let mut outcome = Deleted::default();
    for file in files {
        let path = Path::new(file);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            recordings_dir.join(path)
        };
        let canonical = match path.canonicalize() {
            Ok(canonical) => canonical,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                outcome.missing += 1;
                continue;
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot resolve a recording past retention");
                outcome.failed += 1;
                continue;
            }
        };
        if !canonical.starts_with(&dir) || !canonical.is_file() {
            warn!(
                path = %canonical.display(),
                recordings_dir = %dir.display(),
                "refusing to delete a file outside the recordings directory"
            );
            outcome.failed += 1;
            continue;
        }
        match std::fs::remove_file(&canonical) {
            Ok(()) => outcome.deleted += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => outcome.missing += 1,
            Err(error) => {
                warn!(path = %canonical.display(), %error, "cannot delete a recording past retention");
                outcome.failed += 1;
            }
        }
    }
    Ok(outcome)
}

/// Runs [`purge_once`] at start-up and then every `purge_interval_mins`
/// (0: at start-up only). With both retention periods 0 everything is kept
/// forever and nothing runs.
pub fn spawn_retention(
    store: StoreHandle,
    recordings_dir: PathBuf,
    cfg: GovernanceSection,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if cfg.transcript_retention_days == 0 && cfg.recording_retention_days == 0 {
            info!("retention: transcripts and recordings are kept forever");
            return;
        }
        let every = (cfg.purge_interval_mins > 0)
            .then(|| Duration::from_secs(cfg.purge_interval_mins.saturating_mul(60)));
        let mut ticker = every.map(|every| {
            let mut ticker = tokio::time::interval(every);
            // After a suspend, one catch-up run is enough.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        loop {
            if let Some(ticker) = ticker.as_mut() {
                // The first tick completes at once: the start-up run.
                ticker.tick().await;
            }
            match purge_once(&store, &recordings_dir, &cfg, Utc::now()).await {
                Ok(report) => info!(
                    turns_deleted = report.turns_deleted,
                    details_cleared = report.details_cleared,
                    recordings_deleted = report.recordings_deleted,
                    recordings_failed = report.recordings_failed,
                    "retention purge done"
                ),
                Err(error) => {
                    warn!(%error, "retention purge failed; retrying at the next interval")
                }
            }
            if ticker.is_none() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallEnd, HangupBy, NewCall, SqliteStore, TurnRecord};

    fn governance(transcript_days: u32, recording_days: u32) -> GovernanceSection {
        GovernanceSection {
            transcript_retention_days: transcript_days,
            recording_retention_days: recording_days,
            ..GovernanceSection::default()
        }
    }

    /// A finished call started `age_days` ago, with one caller turn and
    /// (optionally) a recording at `recording`.
    async fn past_call(store: &StoreHandle, id: &str, age_days: i64, recording: Option<&Path>) {
        let started_at = Utc::now() - TimeDelta::days(age_days);
        store
            .call_started(NewCall {
                id: id.into(),
                sip_call_id: format!("{id}@test"),
                caller: "sip:caller@test".into(),
                callee: "sip:frontdoor@test".into(),
                route: Some("assistant".into()),
                source: "127.0.0.1:5060".into(),
                node: "test".into(),
                started_at,
            })
            .await;
        store
            .call_answered(id, "PCMU", recording.map(|p| p.display().to_string()))
            .await;
        store
            .turn(TurnRecord {
                call_id: id.into(),
                at: started_at,
                speaker: "caller".into(),
                text: "my bin was not collected".into(),
                intent: Some("missed_bin".into()),
                confidence: Some(0.9),
                escalation: Some("none".into()),
                reason: Some("test".into()),
            })
            .await;
        store
            .call_ended(
                id,
                CallEnd {
                    ended_at: started_at + TimeDelta::minutes(2),
                    reason: "caller_hangup".into(),
                    hangup_by: HangupBy::Caller,
                    sip_status: Some(200),
                    stats: None,
                },
            )
            .await;
    }

    /// The `retention_purge` audit details, oldest first.
    fn purge_audits(data_dir: &Path) -> Vec<(String, serde_json::Value)> {
        let conn = rusqlite::Connection::open(data_dir.join("frontdoor.db")).expect("open db");
        let mut stmt = conn
            .prepare(
                "SELECT actor, detail FROM audit_log WHERE action = 'retention_purge' ORDER BY seq",
            )
            .expect("prepare");
        stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .expect("query")
        .map(|row| {
            let (actor, detail) = row.expect("row");
            (
                actor,
                serde_json::from_str(&detail).expect("detail is JSON"),
            )
        })
        .collect()
    }

    fn count(data_dir: &Path, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(data_dir.join("frontdoor.db")).expect("open db");
        conn.query_row(sql, [], |row| row.get(0)).expect("count")
    }

    #[test]
    fn zero_days_keeps_forever() {
        let now = Utc::now();
        assert_eq!(cutoff(now, 0), None);
        assert_eq!(cutoff(now, 30), Some(now - TimeDelta::days(30)));
        // Past the calendar: nothing can be that old.
        assert_eq!(cutoff(now, u32::MAX), None);
    }

    #[tokio::test]
    async fn purge_deletes_old_recordings_inside_the_directory_only_and_audits() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().join("data");
        let recordings = data_dir.join("recordings");
        std::fs::create_dir_all(&recordings).expect("recordings dir");
        let store = StoreHandle::spawn(SqliteStore::open(&data_dir).expect("store"));

        let old = recordings.join("old.wav");
        let recent = recordings.join("recent.wav");
        let outside = temp.path().join("outside.wav");
        for file in [&old, &recent, &outside] {
            std::fs::write(file, b"RIFF").expect("write recording");
        }
        past_call(&store, "old-call", 100, Some(&old)).await;
        past_call(&store, "sneaky-call", 100, Some(&outside)).await;
        past_call(&store, "gone-call", 100, Some(&recordings.join("gone.wav"))).await;
        past_call(&store, "recent-call", 1, Some(&recent)).await;

        let now = Utc::now();
        let report = purge_once(&store, &recordings, &governance(90, 30), now)
            .await
            .expect("purge");
        assert_eq!(report.transcripts_before, Some(now - TimeDelta::days(90)));
        assert_eq!(report.recordings_before, Some(now - TimeDelta::days(30)));
        assert_eq!(report.turns_deleted, 3, "{report:?}");
        assert_eq!(report.recordings_deleted, 1, "{report:?}");
        assert_eq!(report.recordings_missing, 1, "{report:?}");
        assert_eq!(report.recordings_failed, 1, "{report:?}");
        assert!(!old.exists(), "an old recording is deleted");
        assert!(recent.exists(), "a recent recording stays");
        assert!(
            outside.exists(),
            "nothing outside the recordings directory is deleted"
        );
        assert_eq!(count(&data_dir, "SELECT count(*) FROM turns"), 1);

        let audits = purge_audits(&data_dir);
        assert_eq!(audits.len(), 1);
        let (actor, detail) = &audits[0];
        assert_eq!(actor, "system");
        assert_eq!(detail["turns_deleted"], 3);
        assert_eq!(detail["recordings_deleted"], 1);
        assert!(detail["transcripts_before"].is_string(), "{detail}");

        // A second run finds nothing, and is audited all the same.
        let again = purge_once(&store, &recordings, &governance(90, 30), Utc::now())
            .await
            .expect("second purge");
        assert_eq!(again.turns_deleted, 0);
        assert_eq!(again.recordings_deleted, 0);
        let audits = purge_audits(&data_dir);
        assert_eq!(audits.len(), 2);
        assert_eq!(audits[1].1["turns_deleted"], 0);
    }

    #[tokio::test]
    async fn keep_forever_purges_nothing_but_is_audited() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().to_path_buf();
        let recordings = data_dir.join("recordings");
        std::fs::create_dir_all(&recordings).expect("recordings dir");
        let store = StoreHandle::spawn(SqliteStore::open(&data_dir).expect("store"));
        let ancient = recordings.join("ancient.wav");
        std::fs::write(&ancient, b"RIFF").expect("write recording");
        past_call(&store, "ancient-call", 5000, Some(&ancient)).await;

        let report = purge_once(&store, &recordings, &governance(0, 0), Utc::now())
            .await
            .expect("purge");
        assert_eq!(
            report,
            PurgeReport::default(),
            "0 days keeps everything forever"
        );
        assert!(ancient.exists());
        assert_eq!(count(&data_dir, "SELECT count(*) FROM turns"), 1);
        let audits = purge_audits(&data_dir);
        assert_eq!(audits.len(), 1);
        assert!(audits[0].1["transcripts_before"].is_null());
    }

    #[tokio::test]
    async fn spawned_task_purges_at_start_up() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().to_path_buf();
        let recordings = data_dir.join("recordings");
        std::fs::create_dir_all(&recordings).expect("recordings dir");
        let store = StoreHandle::spawn(SqliteStore::open(&data_dir).expect("store"));
        let old = recordings.join("old.wav");
        std::fs::write(&old, b"RIFF").expect("write recording");
        past_call(&store, "old-call", 40, Some(&old)).await;
        store.flush().await;

        let task = spawn_retention(store.clone(), recordings.clone(), governance(90, 30));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while purge_audits(&data_dir).is_empty() {
            assert!(std::time::Instant::now() < deadline, "no start-up purge");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert!(!old.exists());
        // Transcripts are kept 90 days: the 40-day-old turn stays.
        assert_eq!(count(&data_dir, "SELECT count(*) FROM turns"), 1);
    }
}
