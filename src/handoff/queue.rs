//! Queue decisions as plain functions and data: whom to ring next and
//! which waiting caller goes first. No I/O, so priorities are tested
//! without a single call.

use std::collections::HashMap;

use super::config::RingStrategy;
use super::directory::{AgentState, AgentStatus};
use crate::answer::Priority;

/// Lower ranks are served first: risk calls jump the queue.
pub fn priority_rank(priority: Priority) -> u8 {
    match priority {
        Priority::Urgent => 0,
        Priority::High => 1,
        Priority::Normal => 2,
    }
}

/// The agents to ring for one attempt, in order (for `RingAll`, all at
/// once). `cursor` is the round-robin position: the member index rung last.
pub fn ring_order(
    strategy: RingStrategy,
    members: &[String],
    statuses: &[AgentStatus],
    cursor: usize,
    skip: &[String],
) -> Vec<String> {
    let by_id: HashMap<&str, &AgentStatus> = statuses.iter().map(|s| (s.id.as_str(), s)).collect();
    let available = |id: &str| {
        by_id
            .get(id)
            .is_some_and(|s| s.state == AgentState::Available && s.contact.is_some())
            && !skip.iter().any(|s| s == id)
    };
    match strategy {
        RingStrategy::LongestIdle => {
            let mut idle: Vec<&AgentStatus> = members
                .iter()
                .filter(|m| available(m))
                .filter_map(|m| by_id.get(m.as_str()).copied())
                .collect();
            idle.sort_by_key(|s| s.since);
            idle.into_iter().map(|s| s.id.clone()).collect()
        }
        RingStrategy::RoundRobin => {
            let n = members.len();
            (1..=n)
                .map(|step| &members[(cursor + step) % n])
                .filter(|m| available(m))
                .cloned()
                .collect()
        }
        RingStrategy::RingAll => members.iter().filter(|m| available(m)).cloned().collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    rank: u8,
    ticket: u64,
    /// Ringing an agent now: callers behind may try other agents.
    ringing: bool,
}

/// The callers waiting in one queue, in service order: priority first,
/// then arrival.
#[derive(Debug, Default)]
pub struct WaitingList {
    waiters: Vec<Waiter>,
    next_ticket: u64,
}

impl WaitingList {
    pub fn join(&mut self, priority: Priority) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let rank = priority_rank(priority);
        let at = self
            .waiters
            .iter()
            .position(|w| w.rank > rank)
            .unwrap_or(self.waiters.len());
        self.waiters.insert(
            at,
            Waiter {
                rank,
                ticket,
                ringing: false,
            },
        );
        ticket
    }

    pub fn leave(&mut self, ticket: u64) {
        self.waiters.retain(|w| w.ticket != ticket);
    }

    /// 1-based place in the queue, for announcements.
    pub fn position(&self, ticket: u64) -> Option<usize> {
        self.waiters
            .iter()
            .position(|w| w.ticket == ticket)
            .map(|i| i + 1)
    }

    /// A caller may ring agents when everyone ahead is already ringing one,
    /// so a free agent always goes to the most urgent caller not yet served.
    pub fn may_ring(&self, ticket: u64) -> bool {
        for waiter in &self.waiters {
            if waiter.ticket == ticket {
                return true;
            }
            if !waiter.ringing {
                return false;
            }
        }
        false
    }

    pub fn set_ringing(&mut self, ticket: u64, ringing: bool) {
        if let Some(w) = self.waiters.iter_mut().find(|w| w.ticket == ticket) {
            w.ringing = ringing;
        }
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::directory::AgentContact;
    use crate::sip::peer::Peer;
    use chrono::{TimeZone, Utc};

    fn status(id: &str, state: AgentState, since_secs: i64) -> AgentStatus {
        AgentStatus {
            id: id.into(),
            state,
            contact: Some(AgentContact {
                uri: format!("sip:{id}@192.0.2.1"),
                destination: Peer::udp("192.0.2.1:5060".parse().unwrap()),
            }),
            since: Utc.timestamp_opt(since_secs, 0).unwrap(),
        }
    }

    fn members() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn strategies_pick_the_right_agents() {
        let statuses = vec![
            status("a", AgentState::Available, 300),
            status("b", AgentState::OnCall, 100),
            status("c", AgentState::Available, 200),
        ];
        assert_eq!(
            ring_order(RingStrategy::LongestIdle, &members(), &statuses, 0, &[]),
            vec!["c", "a"]
        );
        assert_eq!(
            ring_order(RingStrategy::RoundRobin, &members(), &statuses, 0, &[]),
            vec!["c", "a"],
            "after a comes b (busy), then c"
        );
        assert_eq!(
            ring_order(RingStrategy::RoundRobin, &members(), &statuses, 2, &[]),
            vec!["a", "c"]
        );
        assert_eq!(
            ring_order(
                RingStrategy::RingAll,
                &members(),
                &statuses,
                0,
                &["a".into()]
            ),
            vec!["c"]
        );
        let mut offline = status("a", AgentState::Available, 0);
        offline.contact = None;
        assert!(ring_order(RingStrategy::RingAll, &["a".into()], &[offline], 0, &[]).is_empty());
    }

    #[test]
    fn risk_calls_jump_the_queue_and_ringing_callers_let_others_through() {
        let mut list = WaitingList::default();
        let routine1 = list.join(Priority::Normal);
        let routine2 = list.join(Priority::Normal);
        let urgent = list.join(Priority::Urgent);
        let high = list.join(Priority::High);
        assert_eq!(list.position(urgent), Some(1));
        assert_eq!(list.position(high), Some(2));
        assert_eq!(list.position(routine1), Some(3));
        assert_eq!(list.position(routine2), Some(4));
        assert!(list.may_ring(urgent));
        assert!(!list.may_ring(high));
        list.set_ringing(urgent, true);
        assert!(list.may_ring(high));
        assert!(!list.may_ring(routine1));
        list.leave(urgent);
        list.leave(high);
        assert!(list.may_ring(routine1));
        assert_eq!(list.len(), 2);
        assert!(!list.may_ring(999));
    }
}
