//! Media layer: everything between a UDP socket carrying G.711 RTP and 20 ms frames of
//! 8 kHz PCM the rest of the engine works with.
//!
//! Layout follows the sans-IO rule from `shared/STYLE.md`: every protocol piece is a plain
//! state machine fed with bytes and `Instant`s and tested with a fake clock
//! ([`g711`], [`sdp`], [`rtp`], [`jitter`], [`dtmf`], [`rtcp`], [`session`]); only
//! [`stream`] (tick groups: one tokio task per group of calls) and [`ports`] touch sockets and timers, and
//! [`audio`] touches files.
pub mod audio;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod ports;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod stream;

/// The only clock rate G.711 and RFC 4733 events use in this engine.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at [`SAMPLE_RATE`]: the unit of pacing, jitter buffering and recording.
pub const FRAME_SAMPLES: usize = 160;
/// One 20 ms frame of 8 kHz mono linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];
/// Frame duration as the tick period of every stream.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

pub use audio::{AudioError, CallRecorder, load_prompt};
pub use ports::{PortAllocator, PortLease};
pub use sdp::{
    Codec, Direction, MediaCapabilities, Negotiated, OfferedStream, SdpError, build_answer,
    build_offer, negotiate,
};
pub use session::RtpStats;
pub use stream::{MediaConfig, MediaEvent, MediaHandle, MediaStream};
