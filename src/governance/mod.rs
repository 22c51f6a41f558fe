//! PII redaction and data retention (placeholder: the governance helper
//! replaces this; the public API below is the contract).

use std::borrow::Cow;

use thiserror::Error;

use crate::config::GovernanceSection;

#[derive(Debug, Error)]
pub enum GovernanceError {
    #[error(
        "unknown redaction kind {0:?} (known: card, sort_code, account_number, ni_number, phone, email)"
    )]
    UnknownKind(String),
}

/// Redacts personal data from text before it is stored or logged.
#[derive(Debug, Clone, Default)]
pub struct Redactor {}

impl Redactor {
    pub fn from_config(_cfg: &GovernanceSection) -> Result<Redactor, GovernanceError> {
        Ok(Redactor {})
    }

    /// A redactor that changes nothing (tests, tools).
    pub fn none() -> Redactor {
        Redactor {}
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(text)
    }
}
