//! The supervisor dashboard (placeholder; see auth.rs and views.rs).

pub mod auth;
pub mod live;
pub mod views;

use axum::Router;

use crate::http::AppState;

/// Every dashboard route, login included.
pub fn router() -> Router<AppState> {
    auth::routes().merge(views::routes())
}
