//! Frontdoor: a voice-first contact-centre engine.
//!
//! The crate is laid out by architecture layer:
//! - [`sip`]: SIP message parsing, the sans-IO transaction/dialog core and its UDP/TCP shell.
//! - [`media`]: SDP offer/answer, RTP/RTCP, jitter buffer, G.711, DTMF, prompts and recordings.
//! - [`call`]: what a call looks like to the rest of the engine (audio + DTMF), independent of SIP.
//! - [`dialplan`]: routing files (`dialplans/*.toml`).
//! - [`answer`]: the intent-and-answer engine and safeguarding escalation.
//! - [`store`]: durable call records (SQLite by default) behind a trait.
//! - [`engine`]: orchestration: SIP events → dialplan → per-call tasks.
//! - [`http`]: health, metrics and (later) the supervisor dashboard.
pub mod answer;
pub mod asr;
pub mod call;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod dialplan;
pub mod engine;
pub mod events;
pub mod governance;
pub mod handoff;
pub mod http;
pub mod media;
pub mod metrics;
pub mod models;
pub mod sip;
pub mod speech;
pub mod store;
pub mod telemetry;
