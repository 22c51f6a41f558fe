//! Data governance: personal data redaction before anything is stored or
//! logged ([`Redactor`]), and retention of transcripts and recordings
//! ([`retention`]).

mod redact;
pub mod retention;

use thiserror::Error;

pub use redact::{PiiKind, Redactor};
pub use retention::{PurgeReport, purge_once, spawn_retention};

#[derive(Debug, Error)]
pub enum GovernanceError {
    #[error(
        "unknown redaction kind {0:?} (known: card, sort_code, account_number, ni_number, phone, email)"
    )]
    UnknownKind(String),
    #[error("retention purge failed: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("recordings directory {path}: {source}")]
    RecordingsDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
