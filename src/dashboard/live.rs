//! The live board's state, kept from the event bus.
//!
//! One task per engine follows [`EventBus`] and folds call events into a
//! small in-memory picture of every call in progress: what the board lists
//! and what a call's page shows when a supervisor opens it mid-call (the
//! recent transcript, partial and final, and the assistant's decisions).
//! Memory is bounded per call (lines, decisions, text length) and in calls.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::events::{CallEvent, EventBus};

/// Transcript lines kept per live call (older ones are in the store).
pub const TRANSCRIPT_LINES: usize = 50;
/// Decisions kept per live call.
pub const DECISIONS: usize = 20;
/// Longest text kept for one line; a runaway ASR result cannot grow the board.
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Calls the board follows at most; far above any node's call limit, it only
/// stops a stream of starts without ends (lost events) from growing forever.
pub const MAX_CALLS: usize = 10_000;

/// The escalations that are shown as flags (anything else, e.g. `none`, is not).
pub const FLAG_KINDS: [&str; 5] = [
    "distress",
    "safeguarding",
    "emergency",
    "human_request",
    "complexity",
];

/// One call on the live board.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
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

/// A line of a live call's transcript.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveLine {
    pub speaker: String,
    pub text: String,
    pub is_final: bool,
    pub at: String,
}

/// One decision of the assistant on a live call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveDecision {
    pub intent: Option<String>,
    pub confidence: f32,
    pub escalation: String,
    pub reason: String,
    pub at: String,
}

/// A live call with its recent history, for the call's page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveCallDetail {
    pub call: LiveCall,
    pub transcript: Vec<LiveLine>,
    pub decisions: Vec<LiveDecision>,
}

#[derive(Debug)]
struct Tracked {
    call: LiveCall,
    transcript: VecDeque<LiveLine>,
    decisions: VecDeque<LiveDecision>,
}

#[derive(Debug, Default)]
struct BoardState {
    calls: HashMap<String, Tracked>,
}

/// Calls in progress on this node, as the board shows them.
#[derive(Clone, Default)]
pub struct LiveBoard {
    state: Arc<RwLock<BoardState>>,
    /// Set when the follower missed events: ends may have been lost, so the
    /// board should be reconciled with the calls that are really live.
    lagged: Arc<AtomicBool>,
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Cuts `text` to [`MAX_TEXT_CHARS`] on a character boundary.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

impl LiveBoard {
    /// Starts following `events` (spawns a task on the current runtime).
    pub fn start(events: &EventBus) -> LiveBoard {
        let board = LiveBoard::default();
        let mut rx = events.subscribe();
        let follower = board.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => follower.apply(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "live board fell behind the event bus");
                        follower.lagged.store(true, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        board
    }

    /// Folds one event into the board.
    pub fn apply(&self, event: &CallEvent) {
        let mut state = self.state.write();
        match event {
            CallEvent::Started {
                call_id,
                caller,
                callee,
                route,
                at,
            } => {
                if !state.calls.contains_key(call_id) && state.calls.len() >= MAX_CALLS {
                    evict_oldest(&mut state.calls);
                }
                let tracked = state
                    .calls
                    .entry(call_id.clone())
                    .or_insert_with(|| Tracked {
                        call: LiveCall {
                            id: call_id.clone(),
                            state: "assistant".into(),
                            ..LiveCall::default()
                        },
                        transcript: VecDeque::new(),
                        decisions: VecDeque::new(),
                    });
                tracked.call.caller = bounded(caller);
                tracked.call.callee = bounded(callee);
                tracked.call.route = bounded(route);
                tracked.call.started_at = timestamp(at);
            }
            CallEvent::Answered { call_id, at, .. } => {
                if let Some(t) = state.calls.get_mut(call_id) {
                    t.call.answered_at = Some(timestamp(at));
                }
            }
            CallEvent::State {
                call_id,
                state: call_state,
                ..
            } => {
                if let Some(t) = state.calls.get_mut(call_id) {
                    t.call.state = bounded(call_state);
                }
            }
            CallEvent::Decision {
                call_id,
                intent,
                confidence,
                escalation,
                reason,
                at,
            } => {
                if let Some(t) = state.calls.get_mut(call_id) {
                    if intent.is_some() {
                        t.call.intent = intent.as_deref().map(bounded);
                        t.call.confidence = Some(*confidence);
                    }
                    if let Some(flag) = FLAG_KINDS.iter().find(|k| **k == escalation.as_str())
                        && !t.call.flags.iter().any(|f| f == flag)
                    {
                        t.call.flags.push((*flag).to_string());
                    }
                    if t.decisions.len() >= DECISIONS {
                        t.decisions.pop_front();
                    }
                    t.decisions.push_back(LiveDecision {
                        intent: intent.as_deref().map(bounded),
                        confidence: *confidence,
                        escalation: bounded(escalation),
                        reason: bounded(reason),
                        at: timestamp(at),
                    });
                }
            }
            CallEvent::Transcript {
                call_id,
                speaker,
                text,
                is_final,
                at,
            } => {
                if let Some(t) = state.calls.get_mut(call_id) {
                    let line = LiveLine {
                        speaker: bounded(speaker),
                        text: bounded(text),
                        is_final: *is_final,
                        at: timestamp(at),
                    };
                    if *is_final {
                        t.call.last_text = Some(line.text.clone());
                    }
                    push_line(&mut t.transcript, line);
                }
            }
            CallEvent::Ended { call_id, .. } => {
                state.calls.remove(call_id);
            }
        }
    }

    /// The calls in progress, oldest first.
    pub fn calls(&self) -> Vec<LiveCall> {
        let state = self.state.read();
        let mut calls: Vec<LiveCall> = state.calls.values().map(|t| t.call.clone()).collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        calls
    }

    /// One live call with its recent transcript and decisions.
    pub fn call(&self, id: &str) -> Option<LiveCallDetail> {
        let state = self.state.read();
        state.calls.get(id).map(|t| LiveCallDetail {
            call: t.call.clone(),
            transcript: t.transcript.iter().cloned().collect(),
            decisions: t.decisions.iter().cloned().collect(),
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.state.read().calls.contains_key(id)
    }

    /// After the follower missed events, drops calls that are no longer live
    /// on this node (their `Ended` may be among the missed events). Does
    /// nothing when no events were missed, so a caller may run it on every
    /// snapshot cheaply.
    pub fn reconcile(&self, live_ids: &[String]) {
        if !self.lagged.swap(false, Ordering::Relaxed) {
            return;
        }
        let live: HashSet<&str> = live_ids.iter().map(String::as_str).collect();
        self.state
            .write()
            .calls
            .retain(|id, _| live.contains(id.as_str()));
    }
}

/// Appends a transcript line. A partial result replaces the speaker's
/// previous partial, and a final one replaces the partial it completes, so
/// the kept lines are what was said rather than every intermediate guess.
fn push_line(lines: &mut VecDeque<LiveLine>, line: LiveLine) {
    let open_partial = lines
        .iter()
        .rposition(|l| l.speaker == line.speaker && !l.is_final);
    if let Some(index) = open_partial {
        // Only the speaker's latest line can be an open partial; a final
        // from them since then would have closed it.
        lines.remove(index);
    }
    if lines.len() >= TRANSCRIPT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

fn evict_oldest(calls: &mut HashMap<String, Tracked>) {
    let oldest = calls
        .iter()
        .min_by(|a, b| a.1.call.started_at.cmp(&b.1.call.started_at))
        .map(|(id, _)| id.clone());
    if let Some(id) = oldest {
        calls.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn started(id: &str) -> CallEvent {
        CallEvent::Started {
            call_id: id.into(),
            caller: "+441234".into(),
            callee: "100".into(),
            route: "council".into(),
            at: Utc::now(),
        }
    }

    fn said(id: &str, speaker: &str, text: &str, is_final: bool) -> CallEvent {
        CallEvent::Transcript {
            call_id: id.into(),
            speaker: speaker.into(),
            text: text.into(),
            is_final,
            at: Utc::now(),
        }
    }

    fn decision(id: &str, intent: Option<&str>, escalation: &str) -> CallEvent {
        CallEvent::Decision {
            call_id: id.into(),
            intent: intent.map(str::to_string),
            confidence: 0.8,
            escalation: escalation.into(),
            reason: "because".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn a_call_is_listed_from_start_to_end_with_its_state_intent_and_flags() {
        let board = LiveBoard::default();
        board.apply(&started("c1"));
        board.apply(&CallEvent::Answered {
            call_id: "c1".into(),
            codec: "PCMU".into(),
            at: Utc::now(),
        });
        board.apply(&CallEvent::State {
            call_id: "c1".into(),
            state: "queued".into(),
            at: Utc::now(),
        });
        board.apply(&decision("c1", Some("bins"), "none"));
        board.apply(&decision("c1", None, "distress"));
        board.apply(&decision("c1", None, "distress"));
        board.apply(&decision("c1", None, "complexity"));

        let calls = board.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.caller, "+441234");
        assert_eq!(call.route, "council");
        assert_eq!(call.state, "queued");
        assert!(call.answered_at.is_some());
        // A decision without an intent keeps the last known one.
        assert_eq!(call.intent.as_deref(), Some("bins"));
        assert_eq!(call.flags, vec!["distress", "complexity"]);
        assert_eq!(board.call("c1").map(|d| d.decisions.len()), Some(4));

        board.apply(&CallEvent::Ended {
            call_id: "c1".into(),
            reason: "bye".into(),
            hangup_by: "caller".into(),
            at: Utc::now(),
        });
        assert!(board.calls().is_empty());
        assert!(board.call("c1").is_none());
    }

    #[test]
    fn events_for_unknown_calls_do_not_create_ghost_entries() {
        let board = LiveBoard::default();
        board.apply(&said("late", "caller", "hello", true));
        board.apply(&decision("late", Some("x"), "distress"));
        assert!(board.calls().is_empty());
    }

    #[test]
    fn partials_are_replaced_and_finals_kept_per_speaker() {
        let board = LiveBoard::default();
        board.apply(&started("c"));
        board.apply(&said("c", "caller", "my bin", false));
        board.apply(&said("c", "assistant", "Hello", false));
        board.apply(&said("c", "caller", "my bin was not", false));
        board.apply(&said("c", "caller", "my bin was not collected", true));
        board.apply(&said("c", "assistant", "Hello, how can I help?", true));
        board.apply(&said("c", "caller", "it is", false));

        let detail = board.call("c").expect("live");
        let lines: Vec<(&str, &str, bool)> = detail
            .transcript
            .iter()
            .map(|l| (l.speaker.as_str(), l.text.as_str(), l.is_final))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("caller", "my bin was not collected", true),
                ("assistant", "Hello, how can I help?", true),
                ("caller", "it is", false),
            ]
        );
        assert_eq!(
            detail.call.last_text.as_deref(),
            Some("Hello, how can I help?")
        );
    }

    #[test]
    fn memory_per_call_is_bounded() {
        let board = LiveBoard::default();
        board.apply(&started("c"));
        for i in 0..(TRANSCRIPT_LINES * 3) {
            board.apply(&said("c", "caller", &format!("line {i}"), true));
        }
        for _ in 0..(DECISIONS * 3) {
            board.apply(&decision("c", Some("x"), "none"));
        }
        board.apply(&said("c", "caller", &"é".repeat(MAX_TEXT_CHARS * 2), true));
        let detail = board.call("c").expect("live");
        assert_eq!(detail.transcript.len(), TRANSCRIPT_LINES);
        assert_eq!(detail.decisions.len(), DECISIONS);
        let last = detail.transcript.last().expect("a line");
        assert_eq!(last.text.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(
            detail.transcript[0].text,
            format!("line {}", TRANSCRIPT_LINES * 2 + 1)
        );
    }

    #[test]
    fn reconcile_only_prunes_after_missed_events() {
        let board = LiveBoard::default();
        board.apply(&started("a"));
        board.apply(&started("b"));
        board.reconcile(&["a".to_string()]);
        assert_eq!(board.calls().len(), 2, "no lag: nothing pruned");
        board.lagged.store(true, Ordering::Relaxed);
        board.reconcile(&["a".to_string()]);
        let ids: Vec<String> = board.calls().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["a"]);
    }

    #[tokio::test]
    async fn start_follows_the_bus() {
        let bus = EventBus::new();
        let board = LiveBoard::start(&bus);
        bus.publish(started("x"));
        bus.publish(said("x", "caller", "hello", true));
        let mut seen = false;
        for _ in 0..100 {
            if board.call("x").is_some_and(|d| d.transcript.len() == 1) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "board never saw the call");
    }
}
