//! Live call events: what supervisors watch (the dashboard) and what later
//! nodes would share. Publishing never blocks a call: the bus is a bounded
//! broadcast channel, and a subscriber that falls behind loses the oldest
//! events (it is told how many) rather than slowing calls down.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// One thing that happened on a call.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    Started {
        call_id: String,
        caller: String,
        callee: String,
        route: String,
        at: DateTime<Utc>,
    },
    Answered {
        call_id: String,
        codec: String,
        at: DateTime<Utc>,
    },
    /// Words heard or spoken. `is_final` is false for partial results.
    Transcript {
        call_id: String,
        speaker: String,
        text: String,
        is_final: bool,
        at: DateTime<Utc>,
    },
    /// A decision of the assistant: intent, escalation and why.
    Decision {
        call_id: String,
        intent: Option<String>,
        confidence: f32,
        escalation: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The call's state for the live board: `assistant`, `queued`,
    /// `ringing_agent`, `with_agent`.
    State {
        call_id: String,
        state: String,
        at: DateTime<Utc>,
    },
    Ended {
        call_id: String,
        reason: String,
        hangup_by: String,
        at: DateTime<Utc>,
    },
}

impl CallEvent {
    pub fn call_id(&self) -> &str {
        match self {
            CallEvent::Started { call_id, .. }
            | CallEvent::Answered { call_id, .. }
            | CallEvent::Transcript { call_id, .. }
            | CallEvent::Decision { call_id, .. }
            | CallEvent::State { call_id, .. }
            | CallEvent::Ended { call_id, .. } => call_id,
        }
    }
}

/// Events kept for slow subscribers before the oldest are dropped.
const CAPACITY: usize = 4096;

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<CallEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus { tx }
    }

    /// Publishes to whoever listens; nobody listening is fine.
    pub fn publish(&self, event: CallEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_publishing_never_blocks() {
        let bus = EventBus::new();
        bus.publish(CallEvent::State {
            call_id: "nobody-listens".into(),
            state: "assistant".into(),
            at: Utc::now(),
        });
        let mut rx = bus.subscribe();
        for i in 0..3 {
            bus.publish(CallEvent::Transcript {
                call_id: "a".into(),
                speaker: "caller".into(),
                text: format!("{i}"),
                is_final: true,
                at: Utc::now(),
            });
        }
        for i in 0..3 {
            let e = rx.recv().await.unwrap();
            match &*e {
                CallEvent::Transcript { text, .. } => assert_eq!(text, &i.to_string()),
                other => panic!("{other:?}"),
            }
        }
        let json = serde_json::to_string(&*Arc::new(CallEvent::Ended {
            call_id: "a".into(),
            reason: "caller hung up".into(),
            hangup_by: "caller".into(),
            at: Utc::now(),
        }))
        .unwrap();
        assert!(json.contains("\"type\":\"ended\""), "{json}");
    }
}
