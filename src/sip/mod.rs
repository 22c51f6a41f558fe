//! SIP signalling: parsing, the sans-IO transaction and user-agent core,
//! and the async UDP/TCP shell the engine talks to.
//!
//! Layers, bottom up, each usable on its own:
//! - [`message`] / [`parse`]: the message model, a strict-but-safe parser
//!   and TCP stream framing.
//! - [`transaction`]: RFC 3261 transactions, driven by messages and `Instant`s.
//! - [`ua`]: dialogs and the automatic answers (OPTIONS, CANCEL, BYE, 481...).
//! - [`auth`]: digest authentication and the registrar agents' phones use.
//! - [`transport`]: sockets and timers around the core; [`start`] returns
//!   the [`SipHandle`] and the [`SipEvent`] stream the engine uses.

use std::net::SocketAddr;

use thiserror::Error;

pub mod auth;
pub mod message;
pub mod parse;
pub mod peer;
pub mod transaction;
pub mod transport;
pub mod ua;

pub use auth::{
    AgentAccount, DigestAlgorithm, RegistrarConfig, RegistrationEvent, Secret, UnregisterReason,
};
pub use message::{Method, Request, Response, SipMessage};
pub use parse::{ParseError, parse_message};
pub use peer::Transport;
pub use transaction::TimerConfig;
pub use transport::{OutboundCall, SipCallError};
pub use transport::{SipHandle, start};
pub use ua::{
    CallKey, DialogEvent, IncomingInvite, OutboundEvent, OutgoingInvite, ReferEvent, SipEvent,
};

/// Listener and identity settings for [`start`].
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// Host for Contact and Via; defaults to the bound address (or, when
    /// bound to a wildcard address, the default route's interface).
    pub advertised_host: Option<String>,
    pub user_agent: String,
    pub timers: TimerConfig,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp: Some(SocketAddr::from(([0, 0, 0, 0], 5060))),
            tcp: Some(SocketAddr::from(([0, 0, 0, 0], 5060))),
            advertised_host: None,
            user_agent: "Frontdoor".to_owned(),
            timers: TimerConfig::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum SipError {
    #[error("no UDP or TCP listener configured")]
    NoListener,
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("socket error: {0}")]
    Io(std::io::Error),
}
