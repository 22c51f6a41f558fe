//! The live board's state, kept from the event bus (placeholder for the
//! views helper; `start` and the snapshot type are the contract).

use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::events::EventBus;

/// One call on the live board.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LiveCall {
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub route: String,
    pub state: String,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub intent: Option<String>,
    pub confidence: Option<f32>,
    pub flags: Vec<String>,
    pub last_text: Option<String>,
}

/// Calls in progress on this node, as the board shows them.
#[derive(Clone, Default)]
pub struct LiveBoard {
    calls: Arc<RwLock<Vec<LiveCall>>>,
}

impl LiveBoard {
    /// Starts following `events` (spawns a task on the current runtime).
    pub fn start(events: &EventBus) -> LiveBoard {
        let _ = events;
        LiveBoard::default()
    }

    pub fn calls(&self) -> Vec<LiveCall> {
        self.calls.read().clone()
    }
}
