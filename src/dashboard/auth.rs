//! Dashboard authentication (placeholder for the auth helper).

use axum::Router;
use thiserror::Error;

use crate::config::DashboardSection;
use crate::http::AppState;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("dashboard user {user}: {reason}")]
    User { user: String, reason: String },
}

/// Users, sessions and login throttling.
pub struct Auth {}

impl Auth {
    pub fn from_config(_cfg: &DashboardSection) -> Result<Auth, AuthError> {
        Ok(Auth {})
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
}
