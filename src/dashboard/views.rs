//! Dashboard pages and APIs (placeholder for the views helper).

use axum::Router;

use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
