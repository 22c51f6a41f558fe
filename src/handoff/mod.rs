//! Human hand-off (issue 5): agents, queues and transfers with context.
//!
//! - [`directory`]: agent state (offline, available, ringing, on a call,
//!   wrap-up) behind the [`AgentDirectory`] trait.
//! - [`queue`]: ring strategies and priority ordering, as plain functions.
//! - [`config`]: the `[handoff]` configuration section.
//! - [`transfer`]: [`Handoff`], which queues a caller, rings agents over
//!   SIP, gives the agent a spoken summary and bridges the two legs
//!   (Frontdoor stays in the middle as a B2BUA, recording both sides), or
//!   hands the call away by REFER.
//!
//! - [`feature`]: feature codes agents dial to change their own state.
//!
//! The registrar (digest REGISTER) lives in [`crate::sip::auth`]; this
//! module only consumes its events.

pub mod config;
pub mod directory;
pub mod feature;
pub mod queue;
pub mod transfer;

pub use config::{AgentSpec, FeatureCodes, HandoffSection, QueueSpec, RingStrategy, TransferMode};
pub use directory::{
    AgentContact, AgentDirectory, AgentState, AgentStatus, DirectoryFuture, InMemoryDirectory,
};
pub use transfer::{
    AgentStateError, Announcer, Handoff, HandoffDeps, HandoffError, SpeechFuture, TransferOrder,
    TransferOutcome, TransferRequest,
};
