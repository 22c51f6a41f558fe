//! Who the agents are, whether they can take a call, and where their
//! phones are. Behind a trait so that several engine nodes can later share
//! one PostgreSQL-backed directory; claiming an agent is a compare-and-set
//! (`UPDATE ... WHERE state = 'available'`), which is what makes two nodes
//! never ring the same agent for two callers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use crate::sip::peer::Peer;

/// A boxed future, so the trait stays object-safe for `Arc<dyn AgentDirectory>`.
pub type DirectoryFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Offline,
    Available,
    Ringing,
    OnCall,
    /// Just finished a call: writing notes, not yet offered another.
    WrapUp,
    /// Registered but taking no calls, by the agent's or a supervisor's
    /// choice (a break, training); only a person makes them available again.
    Break,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Available => "available",
            AgentState::Ringing => "ringing",
            AgentState::OnCall => "on_call",
            AgentState::WrapUp => "wrap_up",
            AgentState::Break => "break",
        }
    }

    /// A state a person may choose (dashboard, feature code); the others
    /// follow calls and registrations.
    pub fn parse_chosen(text: &str) -> Option<AgentState> {
        match text {
            "available" => Some(AgentState::Available),
            "offline" => Some(AgentState::Offline),
            "wrap_up" => Some(AgentState::WrapUp),
            "break" => Some(AgentState::Break),
            _ => None,
        }
    }
}

/// Where to send an agent's INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentContact {
    /// Request-URI: the registered Contact or the configured address.
    pub uri: String,
    pub destination: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub id: String,
    pub state: AgentState,
    pub contact: Option<AgentContact>,
    /// When the agent entered `state`; longest-idle ringing uses it.
    pub since: DateTime<Utc>,
}

pub trait AgentDirectory: Send + Sync {
    /// The agent's phone registered (or refreshed) at `contact`. An agent
    /// that was offline becomes available; one on a call stays on it.
    fn registered(&self, agent: &str, contact: AgentContact) -> DirectoryFuture<'_, ()>;
    /// The registration ended: offline now, or after the current call.
    fn unregistered(&self, agent: &str) -> DirectoryFuture<'_, ()>;
    /// The given agents' current status, in the order asked (unknown
    /// agents are left out).
    fn statuses<'a>(&'a self, agents: &'a [String]) -> DirectoryFuture<'a, Vec<AgentStatus>>;
    /// Moves the agent from `from` to `to` only if it is in `from`;
    /// true when it moved.
    fn transition<'a>(
        &'a self,
        agent: &'a str,
        from: AgentState,
        to: AgentState,
    ) -> DirectoryFuture<'a, bool>;
    /// Sets the state unconditionally (an agent's own change, e.g. from the
    /// dashboard). Going `Available` without a contact means `Offline`.
    fn set_state<'a>(&'a self, agent: &'a str, to: AgentState) -> DirectoryFuture<'a, ()>;
}

#[derive(Debug)]
struct Entry {
    state: AgentState,
    contact: Option<AgentContact>,
    since: DateTime<Utc>,
    /// Configured addresses (a PBX, a hunt group) need no registration.
    fixed_contact: bool,
    /// A person signed the agent out (offline or break): the phone's
    /// next registration refresh must not make them available again.
    signed_out: bool,
}

/// The single-node directory: a mutex-guarded map, never held across an await.
#[derive(Debug, Default)]
pub struct InMemoryDirectory {
    agents: Mutex<HashMap<String, Entry>>,
}

impl InMemoryDirectory {
    pub fn new() -> InMemoryDirectory {
        InMemoryDirectory::default()
    }

    /// Declares an agent; one with a fixed contact (external address) is
    /// available at once, others wait for their phone to register.
    pub fn add_agent(&self, agent: &str, fixed_contact: Option<AgentContact>) {
        let fixed = fixed_contact.is_some();
        self.agents.lock().insert(
            agent.to_owned(),
            Entry {
                state: if fixed {
                    AgentState::Available
                } else {
                    AgentState::Offline
                },
                contact: fixed_contact,
                since: Utc::now(),
                fixed_contact: fixed,
                signed_out: false,
            },
        );
    }

    /// Declares an external agent whose address is not known yet (its
    /// host name has not resolved): offline, and registrations under its
    /// name never bind, until [`Self::set_external_contact`].
    pub fn add_external_agent(&self, agent: &str) {
        self.agents.lock().insert(
            agent.to_owned(),
            Entry {
                state: AgentState::Offline,
                contact: None,
                since: Utc::now(),
                fixed_contact: true,
                signed_out: false,
            },
        );
    }

    /// Sets where an external agent is reached. The first address makes it
    /// available (unless a person signed it out); later ones only move it.
    pub fn set_external_contact(&self, agent: &str, contact: AgentContact) {
        let mut agents = self.agents.lock();
        if let Some(entry) = agents.get_mut(agent)
            && entry.fixed_contact
        {
            let first = entry.contact.is_none();
            entry.contact = Some(contact);
            if first && entry.state == AgentState::Offline && !entry.signed_out {
                set(entry, AgentState::Available);
            }
        }
    }

    pub fn state(&self, agent: &str) -> Option<AgentState> {
        self.agents.lock().get(agent).map(|e| e.state)
    }
}

/// Moves an agent to `requested` on a person's or a call's behalf. Only
/// people ask for offline or break, and that choice outlives registration
/// refreshes; asking for available clears it (the agent goes offline
/// instead while their phone is not registered).
fn request(entry: &mut Entry, requested: AgentState) {
    match requested {
        AgentState::Offline | AgentState::Break => entry.signed_out = true,
        AgentState::Available => entry.signed_out = false,
        _ => {}
    }
    let to = if requested == AgentState::Available && entry.contact.is_none() {
        AgentState::Offline
    } else {
        requested
    };
    set(entry, to);
}

fn set(entry: &mut Entry, state: AgentState) {
    if entry.state != state {
        entry.state = state;
        entry.since = Utc::now();
    }
}

impl AgentDirectory for InMemoryDirectory {
    fn registered(&self, agent: &str, contact: AgentContact) -> DirectoryFuture<'_, ()> {
        let mut agents = self.agents.lock();
        if let Some(entry) = agents.get_mut(agent)
            && !entry.fixed_contact
        {
            entry.contact = Some(contact);
            if entry.state == AgentState::Offline && !entry.signed_out {
                set(entry, AgentState::Available);
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn unregistered(&self, agent: &str) -> DirectoryFuture<'_, ()> {
        let mut agents = self.agents.lock();
        if let Some(entry) = agents.get_mut(agent)
            && !entry.fixed_contact
        {
            entry.contact = None;
            if matches!(entry.state, AgentState::Available | AgentState::WrapUp) {
                set(entry, AgentState::Offline);
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn statuses<'a>(&'a self, agents: &'a [String]) -> DirectoryFuture<'a, Vec<AgentStatus>> {
        let table = self.agents.lock();
        let out = agents
            .iter()
            .filter_map(|id| {
                table.get(id).map(|e| AgentStatus {
                    id: id.clone(),
                    state: e.state,
                    contact: e.contact.clone(),
                    since: e.since,
                })
            })
            .collect();
        Box::pin(std::future::ready(out))
    }

    fn transition<'a>(
        &'a self,
        agent: &'a str,
        from: AgentState,
        to: AgentState,
    ) -> DirectoryFuture<'a, bool> {
        let mut agents = self.agents.lock();
        let moved = match agents.get_mut(agent) {
            Some(entry) if entry.state == from => {
                request(entry, to);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(moved))
    }

    fn set_state<'a>(&'a self, agent: &'a str, to: AgentState) -> DirectoryFuture<'a, ()> {
        let mut agents = self.agents.lock();
        if let Some(entry) = agents.get_mut(agent) {
            request(entry, to);
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> AgentContact {
        AgentContact {
            uri: "sip:a1@192.0.2.5:5090".into(),
            destination: Peer::udp("192.0.2.5:5090".parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn registration_drives_availability_and_claims_are_exclusive() {
        let dir = InMemoryDirectory::new();
        dir.add_agent("a1", None);
        assert_eq!(dir.state("a1"), Some(AgentState::Offline));
        // Nobody can claim an offline agent.
        assert!(
            !dir.transition("a1", AgentState::Available, AgentState::Ringing)
                .await
        );
        dir.registered("a1", contact()).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Available));
        assert!(
            dir.transition("a1", AgentState::Available, AgentState::Ringing)
                .await
        );
        assert!(
            !dir.transition("a1", AgentState::Available, AgentState::Ringing)
                .await,
            "second claim loses"
        );
        dir.set_state("a1", AgentState::OnCall).await;
        // Unregistering mid-call keeps the call; finishing it goes offline.
        dir.unregistered("a1").await;
        assert_eq!(dir.state("a1"), Some(AgentState::OnCall));
        dir.set_state("a1", AgentState::Available).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Offline));
        let statuses = dir.statuses(&["a1".into(), "ghost".into()]).await;
        assert_eq!(statuses.len(), 1);
        assert!(statuses[0].contact.is_none());
    }

    #[tokio::test]
    async fn a_persons_sign_out_survives_registration_refreshes() {
        let dir = InMemoryDirectory::new();
        dir.add_agent("a1", None);
        dir.registered("a1", contact()).await;
        dir.set_state("a1", AgentState::Break).await;
        dir.registered("a1", contact()).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Break));
        assert!(
            dir.transition("a1", AgentState::Break, AgentState::Offline)
                .await
        );
        dir.registered("a1", contact()).await;
        assert_eq!(
            dir.state("a1"),
            Some(AgentState::Offline),
            "still signed out"
        );
        dir.set_state("a1", AgentState::Available).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Available));
        // Signed back in without a phone: offline until it registers.
        dir.unregistered("a1").await;
        dir.set_state("a1", AgentState::Available).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Offline));
        dir.registered("a1", contact()).await;
        assert_eq!(dir.state("a1"), Some(AgentState::Available));
        assert_eq!(AgentState::parse_chosen("break"), Some(AgentState::Break));
        assert_eq!(AgentState::parse_chosen("on_call"), None);
    }

    #[tokio::test]
    async fn fixed_contacts_are_available_without_registration() {
        let dir = InMemoryDirectory::new();
        dir.add_agent("pbx", Some(contact()));
        assert_eq!(dir.state("pbx"), Some(AgentState::Available));
        dir.unregistered("pbx").await;
        assert_eq!(dir.state("pbx"), Some(AgentState::Available));
    }
}
