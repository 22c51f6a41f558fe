//! Supervisor control of live calls (placeholder: the live-control helper
//! replaces this file; the public API below is the contract).

use std::sync::Arc;

use parking_lot::RwLock;
use std::collections::HashMap;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

/// Where a supervisor sends a call they take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOverTarget {
    /// A hand-off agent id (the supervisor's own phone for "to me").
    Agent(String),
    /// A hand-off queue name.
    Queue(String),
}

/// What a person can make a live call do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorCommand {
    /// Hang the call up; `by` is the dashboard user.
    Hangup { by: String },
    /// Stop the assistant and transfer the caller.
    TakeOver { by: String, target: TakeOverTarget },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no such live call")]
    NotFound,
    #[error("the call is busy; try again")]
    Busy,
    #[error("the call cannot do that now: {0}")]
    NotNow(String),
}

/// 20 ms of a live call for listen-in: 160 caller samples then 160 samples
/// of the other side (Frontdoor or the agent), 8 kHz, signed 16-bit.
pub type ListenFrame = Arc<[i16]>;

struct Entry {
    commands: mpsc::Sender<SupervisorCommand>,
    listen: broadcast::Sender<ListenFrame>,
}

/// The live calls on this node that a supervisor can act on.
#[derive(Clone, Default)]
pub struct LiveCalls {
    inner: Arc<RwLock<HashMap<String, Entry>>>,
}

impl LiveCalls {
    pub fn new() -> LiveCalls {
        LiveCalls::default()
    }

    /// Sends `cmd` to the call's task.
    pub fn command(&self, call_id: &str, cmd: SupervisorCommand) -> Result<(), ControlError> {
        let calls = self.inner.read();
        let entry = calls.get(call_id).ok_or(ControlError::NotFound)?;
        entry.commands.try_send(cmd).map_err(|_| ControlError::Busy)
    }

    /// Subscribes to the call's audio; `None` when the call is not live here.
    pub fn listen(&self, call_id: &str) -> Option<broadcast::Receiver<ListenFrame>> {
        self.inner.read().get(call_id).map(|e| e.listen.subscribe())
    }

    /// Ids of the live calls on this node.
    pub fn ids(&self) -> Vec<String> {
        self.inner.read().keys().cloned().collect()
    }
}
