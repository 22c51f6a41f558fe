//! A small in-process switchboard for the hand-off tests: Frontdoor's SIP
//! stack, media streams and [`Handoff`], answering calls and transferring
//! them the way the engine's call task does, with real peers (baresip
//! agents that register, SIPp and baresip callers) on loopback.
#![allow(dead_code)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use frontdoor::answer::{Priority, TransferReason};
use frontdoor::call::CallMedia;
use frontdoor::call::assistant::CallLog;
use frontdoor::events::EventBus;
use frontdoor::handoff::{
    Announcer, Handoff, HandoffDeps, HandoffSection, SpeechFuture, TransferOutcome, TransferRequest,
};
use frontdoor::media::{
    self, CallRecorder, MediaCapabilities, MediaConfig, MediaStream, PortAllocator,
};
use frontdoor::sip::{self, CallKey, SipEvent, SipHandle, TimerConfig};
use frontdoor::store::{AuditEntry, CallStore, SqliteStore, StoreHandle};
use tokio::sync::mpsc;

pub use super::common::baresip::Baresip;
use super::common::free_range;

pub const LOCALHOST: &str = "127.0.0.1";

/// A fixed tone stands in for Piper: tests must not need the speech models.
pub struct ToneAnnouncer;

impl Announcer for ToneAnnouncer {
    fn speak<'a>(&'a self, _text: &'a str) -> SpeechFuture<'a> {
        Box::pin(async {
            let samples: Vec<i16> = (0..8000)
                .map(|i| {
                    ((i as f32 * 2.0 * std::f32::consts::PI * 600.0 / 8000.0).sin() * 4000.0) as i16
                })
                .collect();
            Some(Arc::from(samples))
        })
    }
}

/// What the switchboard does with each answered call.
#[derive(Clone)]
pub enum Plan {
    Bridged(TransferRequest),
    /// REFER to this target, bridged fallback with the request.
    Blind(String, TransferRequest),
}

pub fn request(reason: TransferReason, priority: Priority) -> TransferRequest {
    TransferRequest {
        call_id: String::new(),
        reason,
        priority,
        queue: None,
        summary: "The caller says they cannot cope and is alone at home.".into(),
        transcript: vec!["caller: I can't cope any more".into()],
        safety_message: Some("If you are in danger now, call 999.".into()),
    }
}

pub struct Switchboard {
    pub sip: SipHandle,
    pub port: u16,
    pub handoff: Handoff,
    pub store: StoreHandle,
    pub data: tempfile::TempDir,
    pub outcomes: mpsc::UnboundedReceiver<(String, TransferOutcome)>,
}

impl Switchboard {
    pub async fn start(section_toml: &str, plan: Plan) -> Switchboard {
        let (port, _) = free_range(1, true);
        let addr = format!("{LOCALHOST}:{port}").parse().unwrap();
        let (sip, mut events) = sip::start(sip::SipConfig {
            udp: Some(addr),
            tcp: Some(addr),
            advertised_host: Some(LOCALHOST.into()),
            user_agent: "Frontdoor-test".into(),
            timers: TimerConfig {
                t1: Duration::from_millis(100),
                ..TimerConfig::default()
            },
        })
        .await
        .expect("SIP starts");
        let data = tempfile::tempdir().unwrap();
        let recordings = data.path().join("recordings");
        fs::create_dir_all(&recordings).unwrap();
        let store = StoreHandle::spawn(SqliteStore::open(data.path()).unwrap());
        let section: HandoffSection = toml::from_str(section_toml).expect("handoff section");
        let (rtp_low, rtp_high) = free_range(40, false);
        let ports = PortAllocator::new(rtp_low, rtp_high);
        let caps = MediaCapabilities::default();
        let handoff = Handoff::start(
            section,
            HandoffDeps {
                sip: sip.clone(),
                ports: ports.clone(),
                media: MediaConfig::default(),
                caps: caps.clone(),
                local_ip: LOCALHOST.parse().unwrap(),
                recordings_dir: Some(recordings.clone()),
            },
        )
        .expect("handoff starts");
        let (outcome_tx, outcomes) = mpsc::unbounded_channel();
        let board_sip = sip.clone();
        let board_store = store.clone();
        let board_handoff = handoff.clone();
        tokio::spawn(async move {
            let bus = EventBus::new();
            let mut calls: std::collections::HashMap<CallKey, mpsc::Sender<SipEvent>> =
                Default::default();
            let mut n = 0;
            while let Some(event) = events.recv().await {
                match event {
                    SipEvent::IncomingCall { call, invite } => {
                        n += 1;
                        let (tx, rx) = mpsc::channel(16);
                        calls.insert(call, tx);
                        let id = format!("call{n}");
                        tokio::spawn(run_call(
                            board_sip.clone(),
                            board_handoff.clone(),
                            board_store.clone(),
                            bus.clone(),
                            ports.clone(),
                            caps.clone(),
                            recordings.clone(),
                            id,
                            call,
                            invite.sdp.unwrap_or_default(),
                            rx,
                            plan.clone(),
                            outcome_tx.clone(),
                        ));
                    }
                    other => {
                        let key = match &other {
                            SipEvent::Acked { call }
                            | SipEvent::Cancelled { call }
                            | SipEvent::RemoteHangup { call }
                            | SipEvent::HangupComplete { call, .. }
                            | SipEvent::CallFailed { call, .. }
                            | SipEvent::ReOffer { call, .. } => *call,
                            SipEvent::IncomingCall { call, .. } => *call,
                        };
                        if let Some(tx) = calls.get(&key) {
                            let _ = tx.try_send(other);
                        }
                    }
                }
            }
        });
        Switchboard {
            sip,
            port,
            handoff,
            store,
            data,
            outcomes,
        }
    }

    pub async fn next_outcome(&mut self, within: Duration) -> (String, TransferOutcome) {
        tokio::time::timeout(within, self.outcomes.recv())
            .await
            .expect("a transfer outcome in time")
            .expect("switchboard running")
    }

    /// The audit log of a call, read back from the database.
    pub async fn audit(&self, call_id: &str) -> Vec<AuditEntry> {
        self.store.flush().await;
        let mut store = SqliteStore::open(self.data.path()).unwrap();
        store.audit_for_call(call_id).unwrap()
    }

    pub fn recording(&self, name: &str) -> PathBuf {
        self.data.path().join("recordings").join(name)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_call(
    sip: SipHandle,
    handoff: Handoff,
    store: StoreHandle,
    bus: EventBus,
    ports: PortAllocator,
    caps: MediaCapabilities,
    recordings: PathBuf,
    id: String,
    key: CallKey,
    offer: String,
    mut signals: mpsc::Receiver<SipEvent>,
    plan: Plan,
    outcomes: mpsc::UnboundedSender<(String, TransferOutcome)>,
) {
    let negotiated = media::sdp::negotiate(&offer, &caps).expect("usable offer");
    let ip: IpAddr = LOCALHOST.parse().unwrap();
    let stream = MediaStream::bind(ip, ports.allocate().unwrap(), MediaConfig::default())
        .await
        .unwrap();
    sip.answer(
        key,
        media::sdp::build_answer(&negotiated, ip, stream.local_rtp_port(), 1, 1),
    );
    let recorder = CallRecorder::create(recordings.join(format!("{id}.wav"))).unwrap();
    let (handle, events) = stream.start(negotiated, Some(recorder));
    let mut media = CallMedia {
        handle: handle.clone(),
        events,
    };
    // As on a real call, the transfer comes after the dialog is confirmed
    // (REFER needs the caller's ACK).
    let acked = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(signal) = signals.recv().await {
            if matches!(signal, SipEvent::Acked { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(acked, Ok(true)), "the caller ACKed our 200");
    let redactor = frontdoor::governance::Redactor::none();
    let log = CallLog {
        store: &store,
        events: &bus,
        call_id: &id,
        redactor: &redactor,
        recent: Default::default(),
    };
    let announcer = ToneAnnouncer;
    let work = async {
        match plan {
            Plan::Bridged(mut request) => {
                request.call_id = id.clone();
                handoff
                    .transfer(&mut media, request, &log, Some(&announcer))
                    .await
            }
            Plan::Blind(target, mut request) => {
                request.call_id = id.clone();
                handoff
                    .blind_transfer(key, &target, &mut media, request, &log, Some(&announcer))
                    .await
            }
        }
    };
    // Leaving this block drops the transfer, as the call task does when the
    // caller hangs up: the agent leg is cleaned up by the hand-off itself.
    let outcome = {
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                signal = signals.recv() => match signal {
                    Some(SipEvent::RemoteHangup { .. }) | None => break TransferOutcome::CallerGone,
                    _ => {}
                }
            }
        }
    };
    if outcome != TransferOutcome::CallerGone {
        sip.hangup(key);
    }
    let _ = handle.stop().await;
    let _ = outcomes.send((id.clone(), outcome));
}

/// Silence, then `speech`, then silence, as 8 kHz mono 16-bit.
pub fn write_wav(dst: &Path, lead_ms: u32, speech: &[f32], tail_ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dst, spec).unwrap();
    for _ in 0..lead_ms * 8 {
        w.write_sample(0i16).unwrap();
    }
    for s in speech {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    for _ in 0..tail_ms * 8 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
}
