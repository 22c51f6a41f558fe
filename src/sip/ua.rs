//! Sans-IO user-agent core: dialogs on top of the transaction layer.
//!
//! It answers what needs no application decision (OPTIONS, unknown methods,
//! requests for unknown dialogs, CANCEL, BYE, malformed requests) and reports
//! the rest as [`SipEvent`]s. Like the transaction layer it never reads the
//! clock or touches a socket, so a whole call runs in a unit test in
//! microseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use super::auth::{Registrar, RegistrationEvent};
use super::message::{
    Method, NameAddr, Request, Response, SipMessage, Uri, default_reason, is_token_byte, with_tag,
};
use super::parse::parse_message;
use super::peer::{Peer, Transmit, Transport};
use super::transaction::{TimerConfig, TransactionLayer, TxEvent, TxId, response_peer};

/// Identifies one call for the lifetime of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// What the application needs to route a new call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingInvite {
    pub request_uri_user: Option<String>,
    pub to_user: Option<String>,
    pub from_user: Option<String>,
    pub from_display: Option<String>,
    pub from_uri: String,
    pub call_id: String,
    pub source: SocketAddr,
    pub transport: Transport,
    pub sdp: Option<String>,
    pub headers: Vec<(String, String)>,
}

// Events are rare next to packets, and the engine matches on this exact shape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    IncomingCall {
        call: CallKey,
        invite: IncomingInvite,
    },
    Acked {
        call: CallKey,
    },
    /// The caller cancelled; 487 already sent.
    Cancelled {
        call: CallKey,
    },
    /// The far end sent BYE; 200 already sent.
    RemoteHangup {
        call: CallKey,
    },
    /// re-INVITE or UPDATE with (or, for re-INVITE, asking for) an SDP
    /// offer; answer with `answer_reoffer` or `reject_reoffer`.
    ReOffer {
        call: CallKey,
        sdp: Option<String>,
    },
    /// Final response to our BYE (`None`: it timed out).
    HangupComplete {
        call: CallKey,
        status: Option<u16>,
    },
    /// The call cannot continue (e.g. our 2xx was never ACKed); hang up.
    CallFailed {
        call: CallKey,
        reason: String,
    },
}

/// Progress of calls we placed with [`UserAgent::invite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    Progress {
        call: CallKey,
        status: u16,
    },
    Answered {
        call: CallKey,
        sdp: Option<String>,
    },
    /// Final failure; `None` when no final response came (timer B).
    Failed {
        call: CallKey,
        status: Option<u16>,
    },
    /// After answer: the far end sent BYE (200 already sent).
    RemoteHangup {
        call: CallKey,
    },
    /// Final response to our BYE or CANCEL-then-BYE (`None`: timed out).
    HangupComplete {
        call: CallKey,
        status: Option<u16>,
    },
    /// The far end re-INVITEd or UPDATEd with an offer; answer it with
    /// `answer_reoffer` or `reject_reoffer` as for an incoming call.
    ReOffer {
        call: CallKey,
        sdp: Option<String>,
    },
}

/// Progress of a REFER we sent on a call ([`UserAgent::refer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferEvent {
    /// Final response to the REFER itself (202: the far end will try).
    /// `None`: no response came.
    Answered { call: CallKey, status: Option<u16> },
    /// A NOTIFY: the status line of the sipfrag body (the transfer
    /// target's answer, e.g. 100, 180, 200, 486) and whether the
    /// subscription ended.
    Notified {
        call: CallKey,
        status: Option<u16>,
        terminated: bool,
    },
}

/// In-dialog happenings of calls that some caller watches
/// ([`UserAgent::poll_dialog_event`]), kept apart from [`SipEvent`] so that
/// code matching every `SipEvent` is not affected by them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// The ACK for a 2xx that carried our SDP offer (late offer, or an
    /// offerless re-INVITE): its body, the answer (RFC 3264), or `None`
    /// when the ACK came without one. Reported before [`SipEvent::Acked`].
    OfferAnswered { call: CallKey, sdp: Option<String> },
    /// A DTMF digit sent with SIP INFO (application/dtmf-relay or
    /// application/dtmf); 200 already sent.
    InfoDtmf {
        call: CallKey,
        digit: char,
        duration_ms: u32,
    },
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct OutgoingInvite {
    pub target: Uri,
    pub from_user: String,
    pub from_display: Option<String>,
    pub sdp: String,
    /// Where to send it; DNS resolution is the caller's job.
    pub destination: Peer,
    pub extra_headers: Vec<(String, String)>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UaError {
    #[error("too many calls")]
    TooManyCalls,
    #[error("the call is not established")]
    NotEstablished,
    #[error("transaction error: {0}")]
    Transaction(#[from] super::transaction::TxError),
}

#[derive(Debug, Clone)]
pub struct UaConfig {
    pub user_agent: String,
    pub timers: TimerConfig,
    /// Host written into Contact and Via.
    pub advertised_host: String,
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    /// New INVITEs beyond this are answered 503.
    pub max_calls: usize,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            user_agent: "Frontdoor".to_owned(),
            timers: TimerConfig::default(),
            advertised_host: "127.0.0.1".to_owned(),
            udp_port: Some(5060),
            tcp_port: None,
            max_calls: 10_000,
        }
    }
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// INFO bodies we understand: the two legacy DTMF formats (no Info
/// Package, RFC 6086 section 2).
const ACCEPT_INFO: &str = "application/dtmf-relay, application/dtmf";

/// Longest DTMF duration believed from an INFO body; a stuck key is not a
/// reason to hold anything for minutes.
const MAX_INFO_DTMF_MS: u32 = 10_000;
/// Duration assumed when an INFO body gives none (a typical key press).
const DEFAULT_INFO_DTMF_MS: u32 = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// UAS: INVITE received, no final response yet.
    Offered,
    /// UAS: 2xx sent, waiting for ACK.
    AwaitingAck,
    Confirmed,
    /// UAC: INVITE sent, no final response yet.
    Calling,
    /// Our BYE is in flight.
    Terminating,
}

#[derive(Debug)]
struct Pending2xx {
    payload: Bytes,
    cseq: u32,
    interval: Duration,
    next: Instant,
    give_up: Instant,
    initial: bool,
    /// The 2xx carried our offer, so the ACK must carry the answer.
    carries_offer: bool,
}

#[derive(Debug)]
struct PendingReoffer {
    tx: TxId,
    request: Request,
}

#[derive(Debug)]
struct Call {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    /// Our side's name-addr, with our tag.
    local_party: String,
    /// The far side's name-addr, with its tag (once known).
    remote_party: String,
    local_cseq: u32,
    remote_cseq: u32,
    route_set: Vec<String>,
    remote_target: Uri,
    peer: Peer,
    /// Whether to send in-dialog requests to `peer` rather than the Contact
    /// (a caller behind NAT that asked for rport and gave a private Contact).
    use_source_address: bool,
    state: CallState,
    invite: Option<(TxId, Request)>,
    invite_cseq: u32,
    pending_2xx: Option<Pending2xx>,
    reoffer: Option<PendingReoffer>,
    bye: Option<TxId>,
    client_invite: Option<TxId>,
    /// The ACK for our INVITE's 2xx, resent when the 2xx is retransmitted.
    ack: Option<Bytes>,
    hangup_pending: bool,
    /// Reason header (RFC 3326) for our BYE, when the hang-up has a cause
    /// the far end should see.
    bye_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPurpose {
    Invite,
    Reoffer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPurpose {
    Bye,
    Invite,
    Refer,
}

/// The user-agent core. Feed it with [`UserAgent::handle_datagram`],
/// [`UserAgent::handle_timeout`] and the call commands; drain it with
/// [`UserAgent::poll_transmit`] and [`UserAgent::poll_event`].
pub struct UserAgent {
    config: UaConfig,
    tx: TransactionLayer,
    calls: HashMap<CallKey, Call>,
    by_call_id: HashMap<String, CallKey>,
    server_txs: HashMap<TxId, (CallKey, ServerPurpose)>,
    client_txs: HashMap<TxId, (CallKey, ClientPurpose)>,
    retransmit_wakeups: BinaryHeap<Reverse<(Instant, CallKey)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SipEvent>,
    dialog_events: VecDeque<DialogEvent>,
    outbound_events: VecDeque<OutboundEvent>,
    refer_events: VecDeque<ReferEvent>,
    /// Answers REGISTER when set; without it REGISTER gets 405.
    registrar: Option<Registrar>,
    rng_state: u64,
    next_call: u64,
}

impl UserAgent {
    pub fn new(config: UaConfig) -> Self {
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Self::with_seed(config, seed)
    }

    /// Deterministic tags and branches, for tests and benchmarks.
    pub fn with_seed(mut config: UaConfig, seed: u64) -> Self {
        config.timers = config.timers.clamped();
        UserAgent {
            tx: TransactionLayer::new(config.timers),
            config,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            retransmit_wakeups: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dialog_events: VecDeque::new(),
            outbound_events: VecDeque::new(),
            refer_events: VecDeque::new(),
            registrar: None,
            rng_state: seed,
            next_call: 1,
        }
    }

    pub fn config(&self) -> &UaConfig {
        &self.config
    }

    /// Live calls (any state).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Calls whose BYE is still waiting for a final response.
    pub fn pending_hangups(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state == CallState::Terminating)
            .count()
    }

    pub fn call_id(&self, call: CallKey) -> Option<&str> {
        self.calls.get(&call).map(|c| c.call_id.as_str())
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits
            .pop_front()
            .or_else(|| self.tx.poll_transmit())
    }

    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    pub fn poll_dialog_event(&mut self) -> Option<DialogEvent> {
        self.dialog_events.pop_front()
    }

    pub fn poll_outbound_event(&mut self) -> Option<OutboundEvent> {
        self.outbound_events.pop_front()
    }

    pub fn poll_refer_event(&mut self) -> Option<ReferEvent> {
        self.refer_events.pop_front()
    }

    /// Registrations, expiries and refused REGISTERs.
    pub fn poll_registration_event(&mut self) -> Option<RegistrationEvent> {
        self.registrar.as_mut().and_then(Registrar::poll_event)
    }

    /// Starts (or, with `None`, stops) answering REGISTER. Replacing the
    /// registrar forgets its bindings; phones re-register on their own.
    pub fn set_registrar(&mut self, registrar: Option<Registrar>) {
        self.registrar = registrar;
    }

    pub fn registrar(&self) -> Option<&Registrar> {
        self.registrar.as_ref()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let ours = self.retransmit_wakeups.peek().map(|Reverse((at, _))| *at);
        let registrations = self.registrar.as_ref().and_then(Registrar::poll_timeout);
        [ours, self.tx.poll_timeout(), registrations]
            .into_iter()
            .flatten()
            .min()
    }

    fn random_hex(&mut self) -> String {
        // SplitMix64: tags and branches must be unique, not secret.
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
    }

    fn contact_for(&self, transport: Transport) -> String {
        let (port, suffix) = match transport {
            Transport::Udp => (self.config.udp_port, ""),
            Transport::Tcp => (self.config.tcp_port, ";transport=tcp"),
        };
        match port {
            Some(port) => format!(
                "<sip:frontdoor@{}:{port}{suffix}>",
                self.config.advertised_host
            ),
            None => format!("<sip:frontdoor@{}{suffix}>", self.config.advertised_host),
        }
    }

    fn via_for(&mut self, transport: Transport) -> String {
        let port = match transport {
            Transport::Udp => self.config.udp_port,
            Transport::Tcp => self.config.tcp_port,
        };
        let branch = self.random_hex();
        match port {
            Some(port) => format!(
                "SIP/2.0/{} {}:{port};branch=z9hG4bK{branch};rport",
                transport.via_name(),
                self.config.advertised_host
            ),
            None => format!(
                "SIP/2.0/{} {};branch=z9hG4bK{branch};rport",
                transport.via_name(),
                self.config.advertised_host
            ),
        }
    }

    /// Feeds one datagram or one framed stream message from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8], peer: Peer) {
        match parse_message(data) {
            Ok(SipMessage::Request(mut request)) => {
                request.stamp_via_source(peer.addr);
                self.tx.receive_request(now, request, peer);
            }
            Ok(SipMessage::Response(response)) => self.tx.receive_response(now, response, peer),
            Err(error) => {
                let tag = self.random_hex();
                match error.bad_request(&tag) {
                    Some(response) => {
                        tracing::debug!(call_id = error.call_id(), %error, "answering malformed request with 400");
                        let to = match error.top_via() {
                            Some(mut via) if !peer.transport.is_reliable() => {
                                via.stamp_source(peer.addr);
                                Peer {
                                    addr: via.response_target(peer.addr),
                                    ..peer
                                }
                            }
                            _ => peer,
                        };
                        self.transmits.push_back(Transmit {
                            peer: to,
                            payload: Bytes::from(response.to_bytes()),
                        });
                    }
                    None => {
                        tracing::debug!(%error, source = %peer.addr, "dropping malformed message")
                    }
                }
            }
        }
        self.process_tx_events(now);
    }

    /// Feeds an already-parsed message (tests, benchmarks).
    pub fn handle_message(&mut self, now: Instant, message: SipMessage, peer: Peer) {
        match message {
            SipMessage::Request(mut request) => {
                request.stamp_via_source(peer.addr);
                self.tx.receive_request(now, request, peer);
            }
            SipMessage::Response(response) => self.tx.receive_response(now, response, peer),
        }
        self.process_tx_events(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        if let Some(registrar) = self.registrar.as_mut() {
            registrar.handle_timeout(now);
        }
        while let Some(Reverse((at, call))) = self.retransmit_wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.retransmit_wakeups.pop();
            self.fire_2xx_retransmit(now, call, at);
        }
        self.process_tx_events(now);
    }

    fn process_tx_events(&mut self, now: Instant) {
        while let Some(event) = self.tx.poll_event() {
            match event {
                TxEvent::Request { id, request, peer } => self.on_request(now, id, request, peer),
                TxEvent::Ack { request, .. } => self.on_ack(now, &request),
                TxEvent::Response { id, response } => self.on_response(now, id, response),
                TxEvent::StrayInviteSuccess { response, .. } => self.on_stray_2xx(&response),
                TxEvent::Timeout { id } => self.on_tx_timeout(id),
            }
        }
    }

    /// Responds within a server transaction; a failure means the transaction
    /// is already gone, which only loses a response the peer stopped awaiting.
    fn respond(&mut self, now: Instant, id: TxId, response: &Response) {
        if let Err(error) = self.tx.respond(now, id, response) {
            tracing::debug!(%error, status = response.status, "response not sent");
        }
    }

    fn respond_simple(&mut self, now: Instant, id: TxId, request: &Request, status: u16) {
        let tag = self.random_hex();
        let mut response =
            Response::for_request(request, status, default_reason(status), Some(&tag));
        self.decorate(&mut response);
        if status == 405 || status == 501 {
            response.headers.push("Allow", ALLOW);
        }
        self.respond(now, id, &response);
    }

    fn decorate(&self, response: &mut Response) {
        response
            .headers
            .push("Server", self.config.user_agent.clone());
    }

    fn find_dialog(
        &self,
        request_or_response_call_id: Option<&str>,
        local_tag: Option<&str>,
        remote_tag: Option<&str>,
    ) -> Option<CallKey> {
        let key = *self.by_call_id.get(request_or_response_call_id?)?;
        let call = self.calls.get(&key)?;
        let local_ok = local_tag == Some(call.local_tag.as_str());
        let remote_ok = remote_tag.unwrap_or_default() == call.remote_tag;
        (local_ok && remote_ok).then_some(key)
    }

    fn on_request(&mut self, now: Instant, id: TxId, request: Request, peer: Peer) {
        let method = request.method.clone();
        if method == Method::Register {
            return self.on_register(now, id, &request, peer);
        }
        match method {
            Method::Invite
            | Method::Bye
            | Method::Cancel
            | Method::Options
            | Method::Update
            | Method::Info
            | Method::Notify => {}
            Method::Other(_) => return self.respond_simple(now, id, &request, 501),
            _ => return self.respond_simple(now, id, &request, 405),
        }
        if method == Method::Options {
            let tag = self.random_hex();
            let mut response = Response::for_request(&request, 200, "OK", Some(&tag));
            self.decorate(&mut response);
            response.headers.push("Allow", ALLOW);
            response.headers.push("Accept", "application/sdp");
            return self.respond(now, id, &response);
        }
        if method == Method::Cancel {
            return self.on_cancel(now, id, &request);
        }
        let to_tag = request
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_owned));
        if to_tag.is_none() {
            return match method {
                Method::Invite => self.on_new_invite(now, id, request, peer),
                _ => self.respond_simple(now, id, &request, 481),
            };
        }
        let from_tag = request
            .headers
            .from()
            .and_then(|f| f.tag().map(str::to_owned));
        let Some(call_key) = self.find_dialog(
            request.headers.call_id(),
            to_tag.as_deref(),
            from_tag.as_deref(),
        ) else {
            return self.respond_simple(now, id, &request, 481);
        };
        let seq = request.headers.cseq().map_or(0, |c| c.seq);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        // RFC 3261 12.2.2: a lower CSeq is out of order.
        if seq <= call.remote_cseq && call.remote_cseq != 0 {
            return self.respond_simple(now, id, &request, 500);
        }
        call.remote_cseq = seq;
        match method {
            Method::Bye => self.on_bye(now, call_key, id, &request),
            Method::Info => self.on_info(now, call_key, id, &request),
            Method::Notify => self.on_notify(now, call_key, id, &request),
            Method::Invite | Method::Update => self.on_reoffer(now, call_key, id, request),
            _ => self.respond_simple(now, id, &request, 501),
        }
    }

    /// INFO inside a dialog (RFC 6086). We announce no Info Packages, so
    /// only legacy INFO is accepted: empty (a keep-alive some PBXs send) or
    /// a DTMF body, which becomes a [`DialogEvent::InfoDtmf`].
    fn on_info(&mut self, now: Instant, call_key: CallKey, id: TxId, request: &Request) {
        if request.headers.get("Info-Package").is_some() {
            // RFC 6086 4.2.2: 469 listing the packages we do take: none.
            let tag = self.random_hex();
            let mut response = Response::for_request(request, 469, "Bad Info Package", Some(&tag));
            self.decorate(&mut response);
            response.headers.push("Recv-Info", "");
            return self.respond(now, id, &response);
        }
        if request.body.is_empty() {
            return self.respond_simple(now, id, request, 200);
        }
        let media_type = request
            .headers
            .content_type()
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let body = std::str::from_utf8(&request.body).unwrap_or("");
        let parsed = match media_type.as_str() {
            "application/dtmf-relay" | "application/dtmf" => parse_info_dtmf(body),
            _ => {
                let tag = self.random_hex();
                let mut response =
                    Response::for_request(request, 415, default_reason(415), Some(&tag));
                self.decorate(&mut response);
                response.headers.push("Accept", ACCEPT_INFO);
                return self.respond(now, id, &response);
            }
        };
        let Some((digit, duration_ms)) = parsed else {
            let tag = self.random_hex();
            let mut response = Response::for_request(
                request,
                400,
                "Bad Request (unreadable DTMF body)",
                Some(&tag),
            );
            self.decorate(&mut response);
            return self.respond(now, id, &response);
        };
        self.respond_simple(now, id, request, 200);
        tracing::debug!(call_id = %self.call_id(call_key).unwrap_or_default(), %digit, duration_ms, "DTMF by SIP INFO");
        self.dialog_events.push_back(DialogEvent::InfoDtmf {
            call: call_key,
            digit,
            duration_ms,
        });
    }

    fn on_register(&mut self, now: Instant, id: TxId, request: &Request, peer: Peer) {
        let Some(registrar) = self.registrar.as_mut() else {
            return self.respond_simple(now, id, request, 405);
        };
        let mut response = registrar.handle_register(now, request, peer);
        if response.status >= 200 {
            let tag = self.random_hex();
            if let Some(to) = response.headers.get_mut("To")
                && !to.contains(";tag=")
            {
                *to = with_tag(to, &tag);
            }
        }
        self.decorate(&mut response);
        self.respond(now, id, &response);
    }

    /// NOTIFY for the implicit subscription of a REFER we sent (RFC 3515 2.4.4).
    fn on_notify(&mut self, now: Instant, call_key: CallKey, id: TxId, request: &Request) {
        let is_refer = request.headers.get("Event").is_some_and(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("refer")
        });
        if !is_refer {
            return self.respond_simple(now, id, request, 489);
        }
        self.respond_simple(now, id, request, 200);
        let terminated = request.headers.get("Subscription-State").is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        });
        // The body is a message/sipfrag: its first line is a status line.
        let status = std::str::from_utf8(&request.body)
            .ok()
            .and_then(|body| body.lines().next())
            .and_then(|line| line.strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        self.refer_events.push_back(ReferEvent::Notified {
            call: call_key,
            status,
            terminated,
        });
    }

    fn on_new_invite(&mut self, now: Instant, id: TxId, request: Request, peer: Peer) {
        if !request.uri.is_sip() {
            return self.respond_simple(now, id, &request, 416);
        }
        if let Some(required) = request.headers.get("Require") {
            let tag = self.random_hex();
            let mut response =
                Response::for_request(&request, 420, default_reason(420), Some(&tag));
            self.decorate(&mut response);
            response.headers.push("Unsupported", required.to_owned());
            return self.respond(now, id, &response);
        }
        let has_foreign_body = !request.body.is_empty()
            && request
                .headers
                .content_type()
                .is_some_and(|t| !t.to_ascii_lowercase().starts_with("application/sdp"));
        if has_foreign_body {
            let tag = self.random_hex();
            let mut response =
                Response::for_request(&request, 415, default_reason(415), Some(&tag));
            self.decorate(&mut response);
            response.headers.push("Accept", "application/sdp");
            return self.respond(now, id, &response);
        }
        let (Some(call_id), Some(from), Some(to), Some(cseq)) = (
            request.headers.call_id().map(str::to_owned),
            request.headers.from(),
            request.headers.to(),
            request.headers.cseq(),
        ) else {
            return self.respond_simple(now, id, &request, 400);
        };
        // A second INVITE with a live Call-ID but no To tag arrived by another
        // path (RFC 3261 8.2.2.2) or is a collision: refuse it.
        if self.by_call_id.contains_key(&call_id) {
            return self.respond_simple(now, id, &request, 482);
        }
        if self.calls.len() >= self.config.max_calls {
            let tag = self.random_hex();
            let mut response =
                Response::for_request(&request, 503, default_reason(503), Some(&tag));
            self.decorate(&mut response);
            response.headers.push("Retry-After", "5");
            return self.respond(now, id, &response);
        }
        let Some(contact) = request.headers.contact() else {
            let tag = self.random_hex();
            let response = Response::for_request(
                &request,
                400,
                "Bad Request (missing Contact header)",
                Some(&tag),
            );
            return self.respond(now, id, &response);
        };
        let local_tag = self.random_hex();
        let remote_tag = from.tag().unwrap_or_default().to_owned();
        let use_source_address = wants_symmetric_routing(&request, &contact.uri, peer.addr);
        let key = CallKey(self.next_call);
        self.next_call += 1;
        let invite = IncomingInvite {
            request_uri_user: request.uri.user.clone(),
            to_user: to.uri.user.clone(),
            from_user: from.uri.user.clone(),
            from_display: from.display.clone(),
            from_uri: from.uri.as_str().to_owned(),
            call_id: call_id.clone(),
            source: peer.addr,
            transport: peer.transport,
            sdp: request.body_text(),
            headers: request.headers.to_pairs(),
        };
        let call = Call {
            call_id: call_id.clone(),
            local_party: with_tag(request.headers.get("To").unwrap_or_default(), &local_tag),
            remote_party: request.headers.get("From").unwrap_or_default().to_owned(),
            local_tag,
            remote_tag,
            local_cseq: 0,
            remote_cseq: cseq.seq,
            route_set: request.headers.record_route(),
            remote_target: contact.uri,
            peer: response_peer(&request, peer),
            use_source_address,
            state: CallState::Offered,
            invite_cseq: cseq.seq,
            invite: Some((id, request)),
            pending_2xx: None,
            reoffer: None,
            bye: None,
            client_invite: None,
            ack: None,
            hangup_pending: false,
            bye_reason: None,
        };
        tracing::info!(call_id = %call_id, source = %peer.addr, "incoming call");
        self.calls.insert(key, call);
        self.by_call_id.insert(call_id, key);
        self.server_txs.insert(id, (key, ServerPurpose::Invite));
        self.events
            .push_back(SipEvent::IncomingCall { call: key, invite });
    }

    fn on_cancel(&mut self, now: Instant, id: TxId, cancel: &Request) {
        let Some(invite_tx) = self.tx.matching_invite(cancel) else {
            return self.respond_simple(now, id, cancel, 481);
        };
        self.respond_simple(now, id, cancel, 200);
        let Some(&(call_key, ServerPurpose::Invite)) = self.server_txs.get(&invite_tx) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        if call.state != CallState::Offered {
            // Already answered: CANCEL has no effect (RFC 3261 9.2).
            return;
        }
        if let Some((invite_id, invite)) = call.invite.take() {
            let local_tag = call.local_tag.clone();
            let mut response =
                Response::for_request(&invite, 487, default_reason(487), Some(&local_tag));
            self.decorate(&mut response);
            self.respond(now, invite_id, &response);
        }
        tracing::info!(call_id = %self.call_id(call_key).unwrap_or_default(), "caller cancelled");
        self.remove_call(call_key);
        self.events
            .push_back(SipEvent::Cancelled { call: call_key });
    }

    fn on_bye(&mut self, now: Instant, call_key: CallKey, id: TxId, bye: &Request) {
        self.respond_simple(now, id, bye, 200);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        if call.state == CallState::Terminating {
            // Our BYE crossed theirs; HangupComplete will follow for ours.
            return;
        }
        let unanswered_invite = if call.state == CallState::Offered {
            call.invite.take()
        } else {
            None
        };
        let reoffer = call.reoffer.take();
        let local_tag = call.local_tag.clone();
        if let Some((invite_id, invite)) = unanswered_invite {
            let response =
                Response::for_request(&invite, 487, default_reason(487), Some(&local_tag));
            self.respond(now, invite_id, &response);
        }
        if let Some(reoffer) = reoffer {
            let response =
                Response::for_request(&reoffer.request, 487, default_reason(487), Some(&local_tag));
            self.respond(now, reoffer.tx, &response);
        }
        tracing::info!(call_id = %self.call_id(call_key).unwrap_or_default(), "remote hangup");
        self.remove_call(call_key);
        self.events
            .push_back(SipEvent::RemoteHangup { call: call_key });
    }

    fn on_reoffer(&mut self, now: Instant, call_key: CallKey, id: TxId, request: Request) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let busy = call.reoffer.is_some()
            || call.pending_2xx.is_some()
            || !matches!(call.state, CallState::Confirmed)
            || call.client_invite.is_some();
        if busy {
            return self.respond_simple(now, id, &request, 491);
        }
        // Target refresh (RFC 3261 12.2.2).
        if let Some(contact) = request.headers.contact() {
            call.remote_target = contact.uri;
        }
        if request.method == Method::Update && request.body.is_empty() {
            // A session refresh without an offer needs no application answer.
            let Some(call) = self.calls.get(&call_key) else {
                return;
            };
            let response = self.dialog_response(call, &request, 200);
            return self.respond(now, id, &response);
        }
        let sdp = request.body_text();
        call.reoffer = Some(PendingReoffer { tx: id, request });
        self.server_txs
            .insert(id, (call_key, ServerPurpose::Reoffer));
        self.events.push_back(SipEvent::ReOffer {
            call: call_key,
            sdp,
        });
    }

    fn on_ack(&mut self, now: Instant, ack: &Request) {
        let to_tag = ack.headers.to().and_then(|t| t.tag().map(str::to_owned));
        let from_tag = ack.headers.from().and_then(|f| f.tag().map(str::to_owned));
        let Some(call_key) = self.find_dialog(
            ack.headers.call_id(),
            to_tag.as_deref(),
            from_tag.as_deref(),
        ) else {
            return;
        };
        let seq = ack.headers.cseq().map_or(0, |c| c.seq);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(pending) = &call.pending_2xx else {
            return;
        };
        if pending.cseq != seq {
            return;
        }
        let initial = pending.initial;
        let carries_offer = pending.carries_offer;
        call.pending_2xx = None;
        if call.state == CallState::AwaitingAck {
            call.state = CallState::Confirmed;
        }
        if carries_offer {
            // Only the application can judge the answer; a missing or
            // unusable one means it hangs up (RFC 3261 13.3.1.4 and 14.2).
            self.dialog_events.push_back(DialogEvent::OfferAnswered {
                call: call_key,
                sdp: ack.body_text(),
            });
        }
        if initial {
            self.events.push_back(SipEvent::Acked { call: call_key });
        }
        if call.hangup_pending {
            self.send_bye(now, call_key);
        }
    }

    fn on_response(&mut self, now: Instant, id: TxId, response: Response) {
        let Some(&(call_key, purpose)) = self.client_txs.get(&id) else {
            // A retransmitted 2xx for an INVITE we already ACKed.
            if response.is_success() && response.cseq().is_some_and(|c| c.method == Method::Invite)
            {
                self.on_stray_2xx(&response);
            }
            return;
        };
        match purpose {
            ClientPurpose::Bye => {
                if response.is_provisional() {
                    return;
                }
                self.client_txs.remove(&id);
                self.remove_call(call_key);
                self.events.push_back(SipEvent::HangupComplete {
                    call: call_key,
                    status: Some(response.status),
                });
            }
            ClientPurpose::Invite => self.on_invite_response(now, id, call_key, response),
            ClientPurpose::Refer => {
                if response.is_provisional() {
                    return;
                }
                self.client_txs.remove(&id);
                self.refer_events.push_back(ReferEvent::Answered {
                    call: call_key,
                    status: Some(response.status),
                });
            }
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        id: TxId,
        call_key: CallKey,
        response: Response,
    ) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let remote_tag = response
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_owned));
        if response.is_provisional() {
            if response.status > 100
                && let Some(tag) = remote_tag
            {
                call.remote_tag = tag;
            }
            self.outbound_events.push_back(OutboundEvent::Progress {
                call: call_key,
                status: response.status,
            });
            return;
        }
        self.client_txs.remove(&id);
        call.client_invite = None;
        if !response.is_success() {
            self.remove_call(call_key);
            self.outbound_events.push_back(OutboundEvent::Failed {
                call: call_key,
                status: Some(response.status),
            });
            return;
        }
        if call.state != CallState::Calling {
            return;
        }
        // Establish the dialog (RFC 3261 12.1.2): the route set is the
        // Record-Route list reversed.
        call.remote_tag = remote_tag.unwrap_or_default();
        call.remote_party = response.headers.get("To").unwrap_or_default().to_owned();
        call.route_set = response.headers.record_route().into_iter().rev().collect();
        if let Some(contact) = response.headers.contact() {
            call.remote_target = contact.uri;
        }
        call.state = CallState::Confirmed;
        let ack = self.build_in_dialog_request(call_key, Method::Ack);
        if let Some((ack, peer)) = ack {
            let payload = Bytes::from(ack.to_bytes());
            if let Some(call) = self.calls.get_mut(&call_key) {
                call.ack = Some(payload.clone());
            }
            self.transmits.push_back(Transmit { peer, payload });
        }
        let sdp = (!response.body.is_empty())
            .then(|| String::from_utf8_lossy(&response.body).into_owned());
        self.outbound_events.push_back(OutboundEvent::Answered {
            call: call_key,
            sdp,
        });
        let hangup = self.calls.get(&call_key).is_some_and(|c| c.hangup_pending);
        if hangup {
            self.send_bye(now, call_key);
        }
    }

    fn on_stray_2xx(&mut self, response: &Response) {
        let to_tag = response
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_owned));
        let from_tag = response
            .headers
            .from()
            .and_then(|f| f.tag().map(str::to_owned));
        // For our own INVITE the From tag is ours and the To tag theirs.
        let Some(call_key) = self.find_dialog(
            response.headers.call_id(),
            from_tag.as_deref(),
            to_tag.as_deref(),
        ) else {
            return;
        };
        if let Some(call) = self.calls.get(&call_key)
            && let Some(ack) = call.ack.clone()
        {
            let peer = call.peer;
            self.transmits.push_back(Transmit { peer, payload: ack });
        }
    }

    fn on_tx_timeout(&mut self, id: TxId) {
        let Some((call_key, purpose)) = self.client_txs.remove(&id) else {
            return;
        };
        if purpose == ClientPurpose::Refer {
            // A lost REFER leaves the call as it was.
            self.refer_events.push_back(ReferEvent::Answered {
                call: call_key,
                status: None,
            });
            return;
        }
        self.remove_call(call_key);
        match purpose {
            ClientPurpose::Bye => self.events.push_back(SipEvent::HangupComplete {
                call: call_key,
                status: None,
            }),
            ClientPurpose::Invite => self.outbound_events.push_back(OutboundEvent::Failed {
                call: call_key,
                status: None,
            }),
            ClientPurpose::Refer => {}
        }
    }

    fn fire_2xx_retransmit(&mut self, now: Instant, call_key: CallKey, at: Instant) {
        let t2 = self.config.timers.t2;
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(pending) = call.pending_2xx.as_mut() else {
            return;
        };
        if pending.next != at {
            return;
        }
        if now >= pending.give_up {
            call.pending_2xx = None;
            // Treat the dialog as confirmed so that a hangup sends BYE (RFC 3261 13.3.1.4).
            if call.state == CallState::AwaitingAck {
                call.state = CallState::Confirmed;
            }
            tracing::warn!(call_id = %call.call_id, "no ACK for our 2xx");
            if call.hangup_pending {
                self.send_bye(now, call_key);
            } else {
                self.events.push_back(SipEvent::CallFailed {
                    call: call_key,
                    reason: "no ACK received for 200 OK".to_owned(),
                });
            }
            return;
        }
        let payload = pending.payload.clone();
        pending.interval = pending.interval.saturating_mul(2).min(t2);
        pending.next = (now + pending.interval).min(pending.give_up);
        let next = pending.next;
        let peer = call.peer;
        self.retransmit_wakeups.push(Reverse((next, call_key)));
        self.transmits.push_back(Transmit { peer, payload });
    }

    fn remove_call(&mut self, call_key: CallKey) {
        let Some(call) = self.calls.remove(&call_key) else {
            return;
        };
        if self.by_call_id.get(&call.call_id) == Some(&call_key) {
            self.by_call_id.remove(&call.call_id);
        }
        if let Some((id, _)) = call.invite {
            self.server_txs.remove(&id);
        }
        if let Some(reoffer) = call.reoffer {
            self.server_txs.remove(&reoffer.tx);
        }
        if let Some(id) = call.bye {
            self.client_txs.remove(&id);
        }
        if let Some(id) = call.client_invite {
            self.client_txs.remove(&id);
        }
    }

    fn start_2xx_retransmission(
        &mut self,
        now: Instant,
        call_key: CallKey,
        payload: Bytes,
        cseq: u32,
        initial: bool,
        carries_offer: bool,
    ) {
        let timers = self.config.timers;
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let next = now + timers.t1;
        call.pending_2xx = Some(Pending2xx {
            payload,
            cseq,
            interval: timers.t1,
            next,
            give_up: now + timers.transaction_timeout(),
            initial,
            carries_offer,
        });
        self.retransmit_wakeups.push(Reverse((next, call_key)));
    }

    /// A 1xx/2xx that creates the dialog: To tag, Contact, Record-Route copy.
    fn dialog_response(&self, call: &Call, request: &Request, status: u16) -> Response {
        let mut response = Response::for_request(
            request,
            status,
            default_reason(status),
            Some(&call.local_tag),
        );
        for record_route in request.headers.get_all("Record-Route") {
            response.headers.push("Record-Route", record_route);
        }
        response
            .headers
            .push("Contact", self.contact_for(call.peer.transport));
        self.decorate(&mut response);
        response
    }

    /// 180 Ringing for an offered call.
    pub fn ringing(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let (CallState::Offered, Some((id, invite))) = (call.state, call.invite.as_ref()) else {
            return;
        };
        let response = self.dialog_response(call, invite, 180);
        let id = *id;
        self.respond(now, id, &response);
    }

    /// 200 OK with our SDP; retransmitted until ACKed. For an INVITE
    /// without a body (late offer) `sdp` is our offer and the answer comes
    /// in the ACK as [`DialogEvent::OfferAnswered`].
    pub fn answer(&mut self, now: Instant, call_key: CallKey, sdp: String) {
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let (CallState::Offered, Some((id, invite))) = (call.state, call.invite.as_ref()) else {
            return;
        };
        let id = *id;
        let carries_offer = invite.body.is_empty();
        let mut response = self.dialog_response(call, invite, 200);
        response.headers.push("Allow", ALLOW);
        response.set_body("application/sdp", sdp);
        let payload = Bytes::from(response.to_bytes());
        let cseq = call.invite_cseq;
        self.respond(now, id, &response);
        if let Some(call) = self.calls.get_mut(&call_key) {
            call.state = CallState::AwaitingAck;
            call.invite = None;
        }
        self.server_txs.remove(&id);
        self.start_2xx_retransmission(now, call_key, payload, cseq, true, carries_offer);
    }

    /// Final failure response for an offered call.
    pub fn reject(
        &mut self,
        now: Instant,
        call_key: CallKey,
        status: u16,
        reason: Option<String>,
        extra_headers: Vec<(String, String)>,
    ) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let (CallState::Offered, Some((id, invite))) = (call.state, call.invite.take()) else {
            return;
        };
        let status = if (300..700).contains(&status) {
            status
        } else {
            500
        };
        let reason = reason.unwrap_or_else(|| default_reason(status).to_owned());
        let mut response = Response::for_request(&invite, status, &reason, Some(&call.local_tag));
        for (name, value) in extra_headers {
            if is_safe_extra_header(&name, &value) {
                response.headers.push(name, value);
            } else {
                tracing::warn!(header = %name, "refusing unsafe extra header");
            }
        }
        self.decorate(&mut response);
        self.respond(now, id, &response);
        self.remove_call(call_key);
    }

    /// Ends the call like [`Self::hangup`], telling the far end why with a
    /// Reason header on the BYE (RFC 3326), e.g. `SIP;cause=488;text="..."`.
    pub fn hangup_with_reason(&mut self, now: Instant, call_key: CallKey, cause: u16, text: &str) {
        if let Some(call) = self.calls.get_mut(&call_key) {
            call.bye_reason = Some(reason_header(cause, text));
        }
        self.hangup(now, call_key);
    }

    /// Ends the call whatever its state.
    pub fn hangup(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        match call.state {
            CallState::Offered => {
                self.reject(now, call_key, 480, None, Vec::new());
                self.events.push_back(SipEvent::HangupComplete {
                    call: call_key,
                    status: None,
                });
            }
            // RFC 3261 15: no BYE before the ACK (or its timeout).
            CallState::AwaitingAck => call.hangup_pending = true,
            CallState::Confirmed => self.send_bye(now, call_key),
            CallState::Calling => {
                call.hangup_pending = true;
                if let Some(invite_tx) = call.client_invite {
                    // Fails while no provisional response came; the BYE then
                    // follows a 2xx, a failure simply ends the call.
                    let _ = self.tx.cancel(now, invite_tx);
                }
            }
            CallState::Terminating => {}
        }
    }

    pub fn answer_reoffer(&mut self, now: Instant, call_key: CallKey, sdp: String) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(reoffer) = call.reoffer.take() else {
            return;
        };
        self.server_txs.remove(&reoffer.tx);
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let mut response = self.dialog_response(call, &reoffer.request, 200);
        response.set_body("application/sdp", sdp);
        let payload = Bytes::from(response.to_bytes());
        self.respond(now, reoffer.tx, &response);
        if reoffer.request.method == Method::Invite {
            let cseq = reoffer.request.headers.cseq().map_or(0, |c| c.seq);
            // An offerless re-INVITE asked for an offer (RFC 3261 14.2):
            // this 2xx is one, and the ACK brings the answer.
            let carries_offer = reoffer.request.body.is_empty();
            self.start_2xx_retransmission(now, call_key, payload, cseq, false, carries_offer);
        }
    }

    pub fn reject_reoffer(&mut self, now: Instant, call_key: CallKey, status: u16) {
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        let Some(reoffer) = call.reoffer.take() else {
            return;
        };
        self.server_txs.remove(&reoffer.tx);
        let status = if (300..700).contains(&status) {
            status
        } else {
            488
        };
        let local_tag = call.local_tag.clone();
        let mut response = Response::for_request(
            &reoffer.request,
            status,
            default_reason(status),
            Some(&local_tag),
        );
        self.decorate(&mut response);
        self.respond(now, reoffer.tx, &response);
    }

    /// Builds an in-dialog request (RFC 3261 12.2.1.1) and where to send it.
    fn build_in_dialog_request(
        &mut self,
        call_key: CallKey,
        method: Method,
    ) -> Option<(Request, Peer)> {
        let via_transport = self.calls.get(&call_key)?.peer.transport;
        let via = self.via_for(via_transport);
        let user_agent = self.config.user_agent.clone();
        let call = self.calls.get_mut(&call_key)?;
        let seq = if method == Method::Ack {
            call.invite_cseq
        } else {
            call.local_cseq = call.local_cseq.saturating_add(1).min((1 << 31) - 1);
            call.local_cseq
        };
        let first_route = call.route_set.first().and_then(|r| NameAddr::parse(r).ok());
        let (request_uri, routes): (Uri, Vec<String>) = match &first_route {
            Some(route) if !route.uri.is_loose_router() => {
                // Strict router: it becomes the Request-URI (RFC 3261 12.2.1.1).
                let mut routes: Vec<String> = call.route_set[1..].to_vec();
                routes.push(format!("<{}>", call.remote_target));
                (route.uri.clone(), routes)
            }
            _ => (call.remote_target.clone(), call.route_set.clone()),
        };
        let next_hop = first_route.as_ref().map_or(&call.remote_target, |r| &r.uri);
        let peer = next_hop_peer(
            next_hop,
            call.peer,
            call.use_source_address && call.route_set.is_empty(),
        );
        let mut request = Request::new(method.clone(), request_uri);
        request.headers.push("Via", via);
        request.headers.push("Max-Forwards", "70");
        request.headers.push("From", call.local_party.clone());
        request.headers.push("To", call.remote_party.clone());
        request.headers.push("Call-ID", call.call_id.clone());
        request.headers.push("CSeq", format!("{seq} {method}"));
        for route in routes {
            request.headers.push("Route", route);
        }
        request.headers.push("User-Agent", user_agent);
        Some((request, peer))
    }

    fn send_bye(&mut self, now: Instant, call_key: CallKey) {
        let reason = self
            .calls
            .get_mut(&call_key)
            .and_then(|c| c.bye_reason.take());
        let Some((mut bye, peer)) = self.build_in_dialog_request(call_key, Method::Bye) else {
            return;
        };
        if let Some(reason) = reason {
            bye.headers.push("Reason", reason);
        }
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        call.state = CallState::Terminating;
        call.pending_2xx = None;
        call.hangup_pending = false;
        tracing::info!(call_id = %call.call_id, "sending BYE");
        match self.tx.send_request(now, bye, peer) {
            Ok(id) => {
                call.bye = Some(id);
                self.client_txs.insert(id, (call_key, ClientPurpose::Bye));
            }
            Err(error) => {
                tracing::warn!(%error, "BYE not sent");
                self.remove_call(call_key);
                self.events.push_back(SipEvent::HangupComplete {
                    call: call_key,
                    status: None,
                });
            }
        }
    }

    /// Asks the far end of an established call to call `refer_to` instead
    /// (blind transfer, RFC 3515). Progress comes from
    /// [`Self::poll_refer_event`]; the call itself is untouched, so a
    /// refused REFER leaves it up for a fallback.
    pub fn refer(
        &mut self,
        now: Instant,
        call_key: CallKey,
        refer_to: &Uri,
        referred_by: Option<&str>,
    ) -> Result<(), UaError> {
        let confirmed = self
            .calls
            .get(&call_key)
            .is_some_and(|c| c.state == CallState::Confirmed);
        if !confirmed {
            return Err(UaError::NotEstablished);
        }
        let Some((mut refer, peer)) = self.build_in_dialog_request(call_key, Method::Refer) else {
            return Err(UaError::NotEstablished);
        };
        refer.headers.push("Refer-To", format!("<{refer_to}>"));
        if let Some(by) = referred_by.filter(|b| is_safe_extra_header("Referred-By", b)) {
            refer.headers.push("Referred-By", by.to_owned());
        }
        refer
            .headers
            .push("Contact", self.contact_for(peer.transport));
        let id = self.tx.send_request(now, refer, peer)?;
        self.client_txs.insert(id, (call_key, ClientPurpose::Refer));
        Ok(())
    }

    /// Places a call (UAC). Progress comes from [`Self::poll_outbound_event`].
    pub fn invite(&mut self, now: Instant, outgoing: OutgoingInvite) -> Result<CallKey, UaError> {
        if self.calls.len() >= self.config.max_calls {
            return Err(UaError::TooManyCalls);
        }
        let peer = outgoing.destination;
        let local_tag = self.random_hex();
        let call_id = format!("{}@{}", self.random_hex(), self.config.advertised_host);
        let local_party = {
            let uri = format!("sip:{}@{}", outgoing.from_user, self.config.advertised_host);
            match &outgoing.from_display {
                Some(display) => format!(
                    "\"{}\" <{uri}>;tag={local_tag}",
                    display.replace(['"', '\\'], "")
                ),
                None => format!("<{uri}>;tag={local_tag}"),
            }
        };
        let remote_party = format!("<{}>", outgoing.target);
        let mut request = Request::new(Method::Invite, outgoing.target.clone());
        request.headers.push("Via", self.via_for(peer.transport));
        request.headers.push("Max-Forwards", "70");
        request.headers.push("From", local_party.clone());
        request.headers.push("To", remote_party.clone());
        request.headers.push("Call-ID", call_id.clone());
        request.headers.push("CSeq", "1 INVITE");
        request
            .headers
            .push("Contact", self.contact_for(peer.transport));
        request.headers.push("Allow", ALLOW);
        request
            .headers
            .push("User-Agent", self.config.user_agent.clone());
        for (name, value) in outgoing.extra_headers {
            if is_safe_extra_header(&name, &value) {
                request.headers.push(name, value);
            }
        }
        request.headers.push("Content-Type", "application/sdp");
        request.body = Bytes::from(outgoing.sdp);
        let id = self.tx.send_request(now, request, peer)?;
        let key = CallKey(self.next_call);
        self.next_call += 1;
        self.calls.insert(
            key,
            Call {
                call_id: call_id.clone(),
                local_tag,
                remote_tag: String::new(),
                local_party,
                remote_party,
                local_cseq: 1,
                remote_cseq: 0,
                route_set: Vec::new(),
                remote_target: outgoing.target,
                peer,
                use_source_address: false,
                state: CallState::Calling,
                invite: None,
                invite_cseq: 1,
                pending_2xx: None,
                reoffer: None,
                bye: None,
                client_invite: Some(id),
                ack: None,
                hangup_pending: false,
                bye_reason: None,
            },
        );
        self.by_call_id.insert(call_id, key);
        self.client_txs.insert(id, (key, ClientPurpose::Invite));
        Ok(key)
    }
}

/// A Reason header value (RFC 3326) for a SIP status `cause`; the text is
/// reduced to what a quoted-string can carry without escapes.
pub fn reason_header(cause: u16, text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(120)
        .collect();
    format!("SIP;cause={cause};text=\"{text}\"")
}

/// The digit and duration of a legacy DTMF INFO body: application/dtmf-relay
/// (`Signal=5` and `Duration=160` lines) or application/dtmf (just the
/// signal). Signals are `0-9 * # A-D` or their RFC 4733 event codes 0-15.
fn parse_info_dtmf(body: &str) -> Option<(char, u32)> {
    if !body.contains('=') {
        return Some((dtmf_signal(body)?, DEFAULT_INFO_DTMF_MS));
    }
    let mut signal = None;
    let mut duration_ms = DEFAULT_INFO_DTMF_MS;
    for line in body.lines().take(16) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("signal") {
            signal = Some(dtmf_signal(value)?);
        } else if key.eq_ignore_ascii_case("duration") {
            // A garbled duration does not make the digit less real.
            if let Ok(ms) = value.trim().parse::<u32>() {
                duration_ms = ms.min(MAX_INFO_DTMF_MS);
            }
        }
    }
    signal.map(|digit| (digit, duration_ms))
}

fn dtmf_signal(value: &str) -> Option<char> {
    const EVENTS: &[u8; 16] = b"0123456789*#ABCD";
    let value = value.trim();
    if let Ok(code) = value.parse::<usize>() {
        return EVENTS.get(code).map(|&b| char::from(b));
    }
    let mut chars = value.chars();
    let signal = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(signal, '*' | '#' | 'A'..='D')).then_some(signal)
}

/// Extra headers from the application must not break framing or the
/// headers the stack owns.
fn is_safe_extra_header(name: &str, value: &str) -> bool {
    const OWNED: [&str; 7] = [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Content-Length",
        "Max-Forwards",
    ];
    !name.is_empty()
        && name.bytes().all(is_token_byte)
        && !value.contains(['\r', '\n', '\0'])
        && !OWNED
            .iter()
            .any(|owned| super::message::header_name_is(name, owned))
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// A caller behind NAT that asked for `rport` and whose Contact is a
/// private address other than where it really sent from can only be
/// reached at that source address.
fn wants_symmetric_routing(invite: &Request, contact: &Uri, source: SocketAddr) -> bool {
    let asked_rport = invite.top_via().is_some_and(|v| v.rport().is_some());
    let contact_ip = contact.socket_addr(5060).map(|a| a.ip());
    asked_rport
        && !invite.headers.contains("Record-Route")
        && contact_ip.is_some_and(|ip| is_private(ip) && ip != source.ip())
}

/// Where an in-dialog request goes. Without DNS, a host name falls back to
/// the address the dialog's peer used.
fn next_hop_peer(next_hop: &Uri, dialog_peer: Peer, prefer_source: bool) -> Peer {
    if prefer_source {
        return dialog_peer;
    }
    let transport = match next_hop.param("transport").and_then(|t| t.as_deref()) {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
        _ => dialog_peer.transport,
    };
    let default_port = if next_hop.scheme == "sips" {
        5061
    } else {
        5060
    };
    let addr = next_hop
        .socket_addr(default_port)
        .unwrap_or(dialog_peer.addr);
    let connection = (transport == dialog_peer.transport && addr == dialog_peer.addr)
        .then_some(dialog_peer.connection)
        .flatten();
    Peer {
        transport,
        addr,
        connection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);

    fn caller() -> Peer {
        Peer::udp("192.0.2.10:5062".parse().unwrap())
    }

    fn invite_text(call_id: &str, branch: &str) -> String {
        format!(
            "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=caller1\r\n\
To: <sip:1000@192.0.2.1>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5062>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\r\nv=0\r\no=x\r\n"
        )
    }

    fn in_dialog(
        method: &str,
        call_id: &str,
        to_tag: &str,
        cseq: u32,
        branch: &str,
        body: &str,
    ) -> String {
        format!(
            "{method} sip:frontdoor@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=caller1\r\n\
To: <sip:1000@192.0.2.1>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@192.0.2.10:5062>\r\n\
Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn responses(ua: &mut UserAgent) -> Vec<Response> {
        std::iter::from_fn(|| ua.poll_transmit())
            .filter_map(|t| match parse_message(&t.payload) {
                Ok(SipMessage::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn requests(ua: &mut UserAgent) -> Vec<(Request, Peer)> {
        std::iter::from_fn(|| ua.poll_transmit())
            .filter_map(|t| match parse_message(&t.payload) {
                Ok(SipMessage::Request(r)) => Some((r, t.peer)),
                _ => None,
            })
            .collect()
    }

    fn statuses(ua: &mut UserAgent) -> Vec<u16> {
        responses(ua).iter().map(|r| r.status).collect()
    }

    fn ua() -> UserAgent {
        UserAgent::with_seed(
            UaConfig {
                advertised_host: "192.0.2.1".to_owned(),
                ..UaConfig::default()
            },
            7,
        )
    }

    /// Delivers an INVITE and returns the call and our To tag (after 180).
    fn offered_call(ua: &mut UserAgent, now: Instant, call_id: &str) -> (CallKey, String) {
        ua.handle_datagram(now, invite_text(call_id, "z9hG4bKinv").as_bytes(), caller());
        assert_eq!(statuses(ua), vec![100]);
        let Some(SipEvent::IncomingCall { call, invite }) = ua.poll_event() else {
            panic!("no IncomingCall")
        };
        assert_eq!(invite.request_uri_user.as_deref(), Some("1000"));
        assert_eq!(invite.from_user.as_deref(), Some("alice"));
        assert_eq!(invite.from_display.as_deref(), Some("Alice"));
        assert_eq!(invite.call_id, call_id);
        assert_eq!(invite.sdp.as_deref(), Some("v=0\r\no=x\r\n"));
        ua.ringing(now, call);
        let ringing = responses(ua);
        assert_eq!(ringing[0].status, 180);
        let tag = ringing[0].headers.to().unwrap().tag().unwrap().to_owned();
        assert!(ringing[0].headers.contact().is_some());
        (call, tag)
    }

    fn answered_call(ua: &mut UserAgent, now: Instant, call_id: &str) -> (CallKey, String) {
        let (call, tag) = offered_call(ua, now, call_id);
        ua.answer(now, call, "v=0 answer".to_owned());
        let ok = responses(ua);
        assert_eq!(ok[0].status, 200);
        assert_eq!(&ok[0].body[..], b"v=0 answer");
        assert_eq!(ok[0].headers.content_type(), Some("application/sdp"));
        ua.handle_datagram(
            now,
            in_dialog("ACK", call_id, &tag, 1, "z9hG4bKack", "").as_bytes(),
            caller(),
        );
        assert_eq!(ua.poll_event(), Some(SipEvent::Acked { call }));
        assert!(ua.poll_transmit().is_none(), "ACK is never answered");
        (call, tag)
    }

    #[test]
    fn full_uas_call_with_remote_hangup() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = answered_call(&mut ua, now, "c1");
        ua.handle_datagram(
            now,
            in_dialog("BYE", "c1", &tag, 2, "z9hG4bKbye", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![200]);
        assert_eq!(ua.poll_event(), Some(SipEvent::RemoteHangup { call }));
        assert_eq!(ua.call_count(), 0);
        // A retransmitted BYE gets the same 200 from the transaction layer.
        ua.handle_datagram(
            now,
            in_dialog("BYE", "c1", &tag, 2, "z9hG4bKbye", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![200]);
        assert!(ua.poll_event().is_none());
    }

    #[test]
    fn responses_follow_rport_to_the_source() {
        let mut ua = ua();
        let nat_source = Peer::udp("203.0.113.5:34567".parse().unwrap());
        ua.handle_datagram(
            Instant::now(),
            invite_text("nat", "z9hG4bKn").as_bytes(),
            nat_source,
        );
        let transmit = ua.poll_transmit().unwrap();
        assert_eq!(transmit.peer.addr, nat_source.addr);
        let SipMessage::Response(trying) = parse_message(&transmit.payload).unwrap() else {
            panic!()
        };
        let via = trying.headers.top_via().unwrap();
        assert_eq!(via.received(), Some("203.0.113.5"));
        assert_eq!(via.rport(), Some(Some(34567)));
    }

    #[test]
    fn our_hangup_sends_bye_within_the_dialog() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = answered_call(&mut ua, now, "c2");
        ua.hangup(now, call);
        let sent = requests(&mut ua);
        let (bye, peer) = &sent[0];
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.uri.as_str(), "sip:alice@192.0.2.10:5062");
        assert_eq!(peer.addr, "192.0.2.10:5062".parse().unwrap());
        assert_eq!(bye.headers.from().unwrap().tag(), Some(tag.as_str()));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("caller1"));
        assert_eq!(bye.headers.cseq().unwrap().method, Method::Bye);
        let ok = Response::for_request(bye, 200, "OK", None);
        ua.handle_datagram(now, &ok.to_bytes(), caller());
        assert_eq!(
            ua.poll_event(),
            Some(SipEvent::HangupComplete {
                call,
                status: Some(200)
            })
        );
        assert_eq!(ua.call_count(), 0);
    }

    #[test]
    fn bye_honours_record_route() {
        let mut ua = ua();
        let now = Instant::now();
        let text = invite_text("rr", "z9hG4bKrr").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:192.0.2.50:5070;lr>, <sip:proxy2.example;lr>\r\n",
        );
        ua.handle_datagram(now, text.as_bytes(), caller());
        let Some(SipEvent::IncomingCall { call, .. }) = ua.poll_event() else {
            panic!()
        };
        ua.answer(now, call, "v=0".to_owned());
        let ok = responses(&mut ua).pop().unwrap();
        assert_eq!(
            ok.headers.get_list("Record-Route").count(),
            2,
            "Record-Route mirrored in 2xx"
        );
        let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
        ua.handle_datagram(
            now,
            in_dialog("ACK", "rr", &tag, 1, "z9hG4bKa2", "").as_bytes(),
            caller(),
        );
        ua.poll_event();
        ua.hangup(now, call);
        let (bye, peer) = requests(&mut ua).pop().unwrap();
        assert_eq!(bye.uri.as_str(), "sip:alice@192.0.2.10:5062");
        let routes: Vec<&str> = bye.headers.get_list("Route").collect();
        assert_eq!(
            routes,
            vec!["<sip:192.0.2.50:5070;lr>", "<sip:proxy2.example;lr>"]
        );
        assert_eq!(peer.addr, "192.0.2.50:5070".parse().unwrap());
    }

    #[test]
    fn hangup_before_ack_waits_for_ack() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = offered_call(&mut ua, now, "c3");
        ua.answer(now, call, "v=0".to_owned());
        responses(&mut ua);
        ua.hangup(now, call);
        assert!(requests(&mut ua).is_empty(), "no BYE before the ACK");
        ua.handle_datagram(
            now,
            in_dialog("ACK", "c3", &tag, 1, "z9hG4bKack3", "").as_bytes(),
            caller(),
        );
        assert_eq!(ua.poll_event(), Some(SipEvent::Acked { call }));
        let sent = requests(&mut ua);
        assert_eq!(sent[0].0.method, Method::Bye);
    }

    #[test]
    fn unacked_2xx_is_retransmitted_then_call_fails() {
        let mut ua = ua();
        let start = Instant::now();
        let (call, _) = offered_call(&mut ua, start, "c4");
        ua.answer(start, call, "v=0".to_owned());
        responses(&mut ua);
        let mut retransmits = Vec::new();
        while let Some(at) = ua.poll_timeout() {
            if at > start + 40 * T1 * 2 {
                break;
            }
            ua.handle_timeout(at);
            for r in responses(&mut ua) {
                assert_eq!(r.status, 200);
                retransmits.push((at - start).as_millis());
            }
            if let Some(event) = ua.poll_event() {
                assert!(matches!(event, SipEvent::CallFailed { call: c, .. } if c == call));
                assert_eq!((at - start), 64 * T1);
                break;
            }
        }
        assert_eq!(&retransmits[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(*retransmits.last().unwrap(), 31500);
        // The application then hangs up: BYE goes out.
        ua.hangup(start + 64 * T1, call);
        assert_eq!(requests(&mut ua)[0].0.method, Method::Bye);
    }

    #[test]
    fn cancel_before_answer_gets_200_and_487() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, _) = offered_call(&mut ua, now, "c5");
        let cancel = invite_text("c5", "z9hG4bKinv")
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("1 INVITE", "1 CANCEL")
            .replace(
                "Content-Length: 10\r\n\r\nv=0\r\no=x\r\n",
                "Content-Length: 0\r\n\r\n",
            );
        ua.handle_datagram(now, cancel.as_bytes(), caller());
        let got = responses(&mut ua);
        let summary: Vec<(u16, Method)> = got
            .iter()
            .map(|r| (r.status, r.cseq().unwrap().method))
            .collect();
        assert_eq!(summary, vec![(200, Method::Cancel), (487, Method::Invite)]);
        assert_eq!(ua.poll_event(), Some(SipEvent::Cancelled { call }));
        // Unknown CANCEL: 481.
        let stray = cancel.replace("z9hG4bKinv", "z9hG4bKnope");
        ua.handle_datagram(now, stray.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![481]);
    }

    #[test]
    fn options_and_unsupported_methods() {
        let mut ua = ua();
        let now = Instant::now();
        let options = invite_text("o1", "z9hG4bKo")
            .replace("INVITE sip:", "OPTIONS sip:")
            .replace("1 INVITE", "1 OPTIONS");
        ua.handle_datagram(now, options.as_bytes(), caller());
        let ok = responses(&mut ua).pop().unwrap();
        assert_eq!(ok.status, 200);
        assert!(ok.headers.get("Allow").unwrap().contains("INVITE"));
        assert_eq!(ok.headers.get("Accept"), Some("application/sdp"));

        let register = options
            .replace("OPTIONS", "REGISTER")
            .replace("z9hG4bKo", "z9hG4bKr");
        ua.handle_datagram(now, register.as_bytes(), caller());
        let resp = responses(&mut ua).pop().unwrap();
        assert_eq!(resp.status, 405);
        assert!(resp.headers.get("Allow").is_some());

        let custom = options
            .replace("OPTIONS", "FROB")
            .replace("z9hG4bKo", "z9hG4bKf");
        ua.handle_datagram(now, custom.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![501]);
        assert!(ua.poll_event().is_none());
    }

    #[test]
    fn requests_for_unknown_dialogs_get_481() {
        let mut ua = ua();
        let now = Instant::now();
        for (i, method) in ["BYE", "INVITE", "UPDATE", "INFO"].iter().enumerate() {
            let text = in_dialog(method, "nope", "unknown", 5, &format!("z9hG4bKu{i}"), "");
            ua.handle_datagram(now, text.as_bytes(), caller());
            let expected = if *method == "INVITE" {
                vec![100, 481]
            } else {
                vec![481]
            };
            assert_eq!(statuses(&mut ua), expected, "{method}");
        }
        // BYE without a To tag cannot belong to a dialog either.
        let text = in_dialog("BYE", "nope", "x", 5, "z9hG4bKnotag", "").replace(";tag=x", "");
        ua.handle_datagram(now, text.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![481]);
        assert!(ua.poll_event().is_none());
    }

    #[test]
    fn reinvite_is_reported_answered_and_glare_gets_491() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = answered_call(&mut ua, now, "c6");
        ua.handle_datagram(
            now,
            in_dialog("INVITE", "c6", &tag, 2, "z9hG4bKre", "v=1").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![100]);
        assert_eq!(
            ua.poll_event(),
            Some(SipEvent::ReOffer {
                call,
                sdp: Some("v=1".to_owned())
            })
        );
        // Overlapping UPDATE while the re-INVITE is pending.
        ua.handle_datagram(
            now,
            in_dialog("UPDATE", "c6", &tag, 3, "z9hG4bKup", "v=2").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![491]);
        ua.answer_reoffer(now, call, "v=answer".to_owned());
        let ok = responses(&mut ua).pop().unwrap();
        assert_eq!((ok.status, &ok.body[..]), (200, &b"v=answer"[..]));
        ua.handle_datagram(
            now,
            in_dialog("ACK", "c6", &tag, 2, "z9hG4bKack6", "").as_bytes(),
            caller(),
        );
        assert!(ua.poll_event().is_none(), "re-INVITE ACK raises no event");
        // Retransmission stopped.
        ua.handle_timeout(now + T1 * 3);
        assert!(statuses(&mut ua).is_empty());
        // UPDATE with SDP then rejected.
        ua.handle_datagram(
            now,
            in_dialog("UPDATE", "c6", &tag, 4, "z9hG4bKup2", "v=3").as_bytes(),
            caller(),
        );
        assert_eq!(
            ua.poll_event(),
            Some(SipEvent::ReOffer {
                call,
                sdp: Some("v=3".to_owned())
            })
        );
        ua.reject_reoffer(now, call, 488);
        assert_eq!(statuses(&mut ua), vec![488]);
        // UPDATE without SDP (session refresh) is answered directly.
        ua.handle_datagram(
            now,
            in_dialog("UPDATE", "c6", &tag, 5, "z9hG4bKup3", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![200]);
        assert!(ua.poll_event().is_none());
        // Out-of-order CSeq.
        ua.handle_datagram(
            now,
            in_dialog("INFO", "c6", &tag, 1, "z9hG4bKold", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![500]);
    }

    #[test]
    fn malformed_requests_get_400_or_are_dropped() {
        let mut ua = ua();
        let now = Instant::now();
        let bad_length =
            invite_text("m1", "z9hG4bKm").replace("Content-Length: 10", "Content-Length: 99");
        ua.handle_datagram(now, bad_length.as_bytes(), caller());
        let resp = responses(&mut ua).pop().unwrap();
        assert_eq!(resp.status, 400);
        assert!(resp.reason.contains("Content-Length"), "{}", resp.reason);
        let no_call_id = invite_text("m2", "z9hG4bKm").replace("Call-ID: m2\r\n", "");
        ua.handle_datagram(now, no_call_id.as_bytes(), caller());
        assert!(ua.poll_transmit().is_none());
        ua.handle_datagram(now, b"\x00\x01garbage", caller());
        assert!(ua.poll_transmit().is_none());
        assert!(ua.poll_event().is_none());
        assert_eq!(ua.call_count(), 0);
    }

    #[test]
    fn invites_we_cannot_take_are_refused() {
        let mut ua = ua();
        let now = Instant::now();
        let tel = invite_text("t1", "z9hG4bKt1")
            .replace("INVITE sip:1000@192.0.2.1", "INVITE tel:+441632960000");
        ua.handle_datagram(now, tel.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![100, 416]);
        let require = invite_text("t2", "z9hG4bKt2").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: 100rel\r\n",
        );
        ua.handle_datagram(now, require.as_bytes(), caller());
        let got = responses(&mut ua);
        assert_eq!(got[1].status, 420);
        assert_eq!(got[1].headers.get("Unsupported"), Some("100rel"));
        let no_contact =
            invite_text("t3", "z9hG4bKt3").replace("Contact: <sip:alice@192.0.2.10:5062>\r\n", "");
        ua.handle_datagram(now, no_contact.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![100, 400]);
        assert!(ua.poll_event().is_none());
        // Same Call-ID twice without a To tag: 482.
        let _ = offered_call(&mut ua, now, "dup");
        ua.handle_datagram(now, invite_text("dup", "z9hG4bKother").as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![100, 482]);
    }

    #[test]
    fn reject_sends_final_with_extra_headers_and_refuses_injection() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, _) = offered_call(&mut ua, now, "c7");
        ua.reject(
            now,
            call,
            503,
            Some("Busy Council".to_owned()),
            vec![
                ("Retry-After".to_owned(), "30".to_owned()),
                ("X-Evil".to_owned(), "a\r\nVia: x".to_owned()),
                ("CSeq".to_owned(), "9 BYE".to_owned()),
            ],
        );
        let resp = responses(&mut ua).pop().unwrap();
        assert_eq!((resp.status, resp.reason.as_str()), (503, "Busy Council"));
        assert_eq!(resp.headers.get("Retry-After"), Some("30"));
        assert!(resp.headers.get("X-Evil").is_none());
        assert_eq!(resp.headers.cseq().unwrap().seq, 1);
        assert_eq!(ua.call_count(), 0);
    }

    #[test]
    fn hangup_of_unanswered_call_rejects_it() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, _) = offered_call(&mut ua, now, "c8");
        ua.hangup(now, call);
        assert_eq!(statuses(&mut ua), vec![480]);
        assert_eq!(
            ua.poll_event(),
            Some(SipEvent::HangupComplete { call, status: None })
        );
    }

    #[test]
    fn bye_timeout_reports_hangup_complete_without_status() {
        let mut ua = ua();
        let start = Instant::now();
        let (call, _) = answered_call(&mut ua, start, "c9");
        ua.hangup(start, call);
        while let Some(at) = ua.poll_timeout() {
            ua.handle_timeout(at);
            while ua.poll_transmit().is_some() {}
            if let Some(event) = ua.poll_event() {
                assert_eq!(event, SipEvent::HangupComplete { call, status: None });
                assert_eq!(at - start, 64 * T1);
                return;
            }
        }
        panic!("no HangupComplete");
    }

    #[test]
    fn uac_invite_answer_ack_and_bye() {
        let mut ua = ua();
        let now = Instant::now();
        let agent = Peer::udp("192.0.2.77:5090".parse().unwrap());
        let call = ua
            .invite(
                now,
                OutgoingInvite {
                    target: Uri::parse("sip:agent1@192.0.2.77:5090").unwrap(),
                    from_user: "frontdoor".to_owned(),
                    from_display: Some("Council".to_owned()),
                    sdp: "v=0 offer".to_owned(),
                    destination: agent,
                    extra_headers: vec![],
                },
            )
            .unwrap();
        let (invite, peer) = requests(&mut ua).pop().unwrap();
        assert_eq!(peer, agent);
        let mut ringing = Response::for_request(&invite, 180, "Ringing", Some("agenttag"));
        ringing
            .headers
            .push("Contact", "<sip:agent1@192.0.2.77:5090>");
        ua.handle_datagram(now, &ringing.to_bytes(), agent);
        assert_eq!(
            ua.poll_outbound_event(),
            Some(OutboundEvent::Progress { call, status: 180 })
        );
        let mut ok = Response::for_request(&invite, 200, "OK", Some("agenttag"));
        ok.headers.push("Contact", "<sip:agent1@192.0.2.77:5090>");
        ok.set_body("application/sdp", "v=0 answer");
        ua.handle_datagram(now, &ok.to_bytes(), agent);
        assert_eq!(
            ua.poll_outbound_event(),
            Some(OutboundEvent::Answered {
                call,
                sdp: Some("v=0 answer".to_owned())
            })
        );
        let (ack, _) = requests(&mut ua).pop().unwrap();
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.headers.cseq().unwrap().seq, 1);
        assert_eq!(ack.headers.to().unwrap().tag(), Some("agenttag"));
        assert_ne!(
            ack.top_via().unwrap().branch(),
            invite.top_via().unwrap().branch()
        );
        // A retransmitted 2xx is ACKed again.
        ua.handle_datagram(now, &ok.to_bytes(), agent);
        assert_eq!(requests(&mut ua).pop().unwrap().0.method, Method::Ack);
        ua.hangup(now, call);
        let (bye, _) = requests(&mut ua).pop().unwrap();
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.headers.cseq().unwrap().seq, 2);
        assert_eq!(bye.headers.to().unwrap().tag(), Some("agenttag"));
    }

    #[test]
    fn uac_invite_failure_is_reported() {
        let mut ua = ua();
        let now = Instant::now();
        let agent = Peer::udp("192.0.2.77:5090".parse().unwrap());
        let call = ua
            .invite(
                now,
                OutgoingInvite {
                    target: Uri::parse("sip:agent1@192.0.2.77:5090").unwrap(),
                    from_user: "frontdoor".to_owned(),
                    from_display: None,
                    sdp: "v=0".to_owned(),
                    destination: agent,
                    extra_headers: vec![],
                },
            )
            .unwrap();
        let (invite, _) = requests(&mut ua).pop().unwrap();
        ua.handle_datagram(
            now,
            &Response::for_request(&invite, 486, "Busy Here", Some("t")).to_bytes(),
            agent,
        );
        assert_eq!(
            ua.poll_outbound_event(),
            Some(OutboundEvent::Failed {
                call,
                status: Some(486)
            })
        );
        assert_eq!(requests(&mut ua).pop().unwrap().0.method, Method::Ack);
        assert_eq!(ua.call_count(), 0);
    }

    #[test]
    fn register_is_405_without_registrar_and_challenged_with_one() {
        let mut ua = ua();
        let now = Instant::now();
        let register = "REGISTER sip:192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.50:5090;branch=z9hG4bKreg1;rport\r\n\
From: <sip:agent1@192.0.2.1>;tag=r1\r\n\
To: <sip:agent1@192.0.2.1>\r\n\
Call-ID: reg-ua-1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:agent1@192.0.2.50:5090>\r\n\
Content-Length: 0\r\n\r\n";
        let phone = Peer::udp("192.0.2.50:5090".parse().unwrap());
        ua.handle_datagram(now, register.as_bytes(), phone);
        assert_eq!(statuses(&mut ua), vec![405]);
        ua.set_registrar(Some(Registrar::new(
            crate::sip::auth::RegistrarConfig::default(),
            [1; 32],
            now,
        )));
        ua.handle_datagram(
            now,
            register.replace("z9hG4bKreg1", "z9hG4bKreg2").as_bytes(),
            phone,
        );
        let challenge = responses(&mut ua).pop().unwrap();
        assert_eq!(challenge.status, 401);
        assert!(challenge.headers.to().unwrap().tag().is_some());
        assert!(challenge.headers.get("WWW-Authenticate").is_some());
        assert!(ua.poll_event().is_none());
    }

    #[test]
    fn refer_on_answered_call_reports_response_and_notify() {
        let mut ua = ua();
        let now = Instant::now();
        let target = Uri::parse("sip:desk@192.0.2.99").unwrap();
        let (call, tag) = offered_call(&mut ua, now, "rf1");
        assert_eq!(
            ua.refer(now, call, &target, None),
            Err(UaError::NotEstablished)
        );
        ua.answer(now, call, "v=0".to_owned());
        while ua.poll_transmit().is_some() {}
        ua.handle_datagram(
            now,
            in_dialog("ACK", "rf1", &tag, 1, "z9hG4bKrfack", "").as_bytes(),
            caller(),
        );
        assert_eq!(ua.poll_event(), Some(SipEvent::Acked { call }));
        ua.refer(now, call, &target, Some("<sip:frontdoor@192.0.2.1>"))
            .unwrap();
        let (refer, peer) = requests(&mut ua).pop().unwrap();
        assert_eq!(refer.method, Method::Refer);
        assert_eq!(peer, caller());
        assert_eq!(refer.headers.get("Refer-To"), Some("<sip:desk@192.0.2.99>"));
        assert!(refer.headers.contact().is_some());
        let accepted = Response::for_request(&refer, 202, "Accepted", None);
        ua.handle_datagram(now, &accepted.to_bytes(), caller());
        assert_eq!(
            ua.poll_refer_event(),
            Some(ReferEvent::Answered {
                call,
                status: Some(202)
            })
        );
        let notify = in_dialog("NOTIFY", "rf1", &tag, 2, "z9hG4bKnot", "SIP/2.0 200 OK\r\n")
            .replace(
                "Content-Length",
                "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\nContent-Length",
            );
        ua.handle_datagram(now, notify.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![200]);
        assert_eq!(
            ua.poll_refer_event(),
            Some(ReferEvent::Notified {
                call,
                status: Some(200),
                terminated: true
            })
        );
        // NOTIFY for another event package is not ours.
        let other = in_dialog("NOTIFY", "rf1", &tag, 3, "z9hG4bKnot2", "")
            .replace("Content-Length", "Event: presence\r\nContent-Length");
        ua.handle_datagram(now, other.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![489]);
    }

    #[test]
    fn info_in_dialog_is_accepted_and_bye_in_early_dialog_ends_call() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = offered_call(&mut ua, now, "e1");
        ua.handle_datagram(
            now,
            in_dialog("INFO", "e1", &tag, 2, "z9hG4bKinfo", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![200]);
        ua.handle_datagram(
            now,
            in_dialog("BYE", "e1", &tag, 3, "z9hG4bKebye", "").as_bytes(),
            caller(),
        );
        let got: Vec<(u16, Method)> = responses(&mut ua)
            .iter()
            .map(|r| (r.status, r.cseq().unwrap().method))
            .collect();
        assert_eq!(got, vec![(200, Method::Bye), (487, Method::Invite)]);
        assert_eq!(ua.poll_event(), Some(SipEvent::RemoteHangup { call }));
        assert_eq!(ua.call_count(), 0);
    }

    #[test]
    fn cancel_after_answer_only_gets_200() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, _) = answered_call(&mut ua, now, "e2");
        let cancel = invite_text("e2", "z9hG4bKinv")
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("1 INVITE", "1 CANCEL");
        ua.handle_datagram(now, cancel.as_bytes(), caller());
        assert_eq!(statuses(&mut ua), vec![200]);
        assert!(ua.poll_event().is_none());
        assert_eq!(ua.call_count(), 1);
        ua.hangup(now, call);
        assert_eq!(requests(&mut ua)[0].0.method, Method::Bye);
    }

    #[test]
    fn caller_behind_nat_gets_bye_at_its_source_address() {
        let mut ua = ua();
        let now = Instant::now();
        let nat = Peer::udp("203.0.113.9:40001".parse().unwrap());
        let text = invite_text("nat2", "z9hG4bKnat").replace(
            "Contact: <sip:alice@192.0.2.10:5062>",
            "Contact: <sip:alice@10.1.2.3:5062>",
        );
        ua.handle_datagram(now, text.as_bytes(), nat);
        let Some(SipEvent::IncomingCall { call, invite }) = ua.poll_event() else {
            panic!()
        };
        assert_eq!(invite.source, nat.addr);
        ua.answer(now, call, "v=0".to_owned());
        let ok = responses(&mut ua).pop().unwrap();
        let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
        ua.handle_datagram(
            now,
            in_dialog("ACK", "nat2", &tag, 1, "z9hG4bKna", "").as_bytes(),
            nat,
        );
        ua.poll_event();
        ua.hangup(now, call);
        let (bye, peer) = requests(&mut ua).pop().unwrap();
        assert_eq!(bye.uri.as_str(), "sip:alice@10.1.2.3:5062");
        assert_eq!(peer.addr, nat.addr);
    }

    #[test]
    fn tcp_call_answers_on_the_same_connection_with_tcp_contact() {
        use crate::sip::peer::ConnectionId;
        let mut ua = UserAgent::with_seed(
            UaConfig {
                tcp_port: Some(5060),
                ..UaConfig::default()
            },
            3,
        );
        let now = Instant::now();
        let conn = Peer::tcp("192.0.2.10:50000".parse().unwrap(), ConnectionId(9));
        let text = invite_text("tcp1", "z9hG4bKtcp").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        ua.handle_datagram(now, text.as_bytes(), conn);
        let trying = ua.poll_transmit().unwrap();
        assert_eq!(trying.peer, conn);
        let Some(SipEvent::IncomingCall { call, invite }) = ua.poll_event() else {
            panic!()
        };
        assert_eq!(invite.transport, Transport::Tcp);
        ua.answer(now, call, "v=0".to_owned());
        let ok = ua.poll_transmit().unwrap();
        assert_eq!(ok.peer, conn);
        let SipMessage::Response(ok) = parse_message(&ok.payload).unwrap() else {
            panic!()
        };
        assert!(ok.headers.get("Contact").unwrap().contains("transport=tcp"));
    }

    #[test]
    fn absurd_timer_config_does_not_panic() {
        let mut ua = UserAgent::with_seed(
            UaConfig {
                timers: TimerConfig {
                    t1: Duration::MAX,
                    t2: Duration::ZERO,
                    t4: Duration::MAX,
                },
                ..UaConfig::default()
            },
            5,
        );
        let now = Instant::now();
        let (call, _) = offered_call(&mut ua, now, "abs");
        ua.answer(now, call, "v=0".to_owned());
        for _ in 0..20 {
            if let Some(at) = ua.poll_timeout() {
                ua.handle_timeout(at);
            }
            while ua.poll_transmit().is_some() {}
        }
    }

    #[test]
    fn never_panics_on_mutated_messages() {
        let mut ua = ua();
        let now = Instant::now();
        let base = invite_text("fz", "z9hG4bKfz").into_bytes();
        let mut state = 0x9e37_79b9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..5000 {
            let mut data = base.clone();
            for _ in 0..(next() % 8) {
                let i = next() as usize % data.len();
                data[i] = (next() % 256) as u8;
            }
            let cut = next() as usize % (data.len() + 1);
            data.truncate(cut.max(data.len() / 2));
            ua.handle_datagram(now, &data, caller());
            while ua.poll_transmit().is_some() {}
            while ua.poll_event().is_some() {}
        }
    }

    fn late_invite_text(call_id: &str) -> String {
        format!(
            "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKlate;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=caller1\r\n\
To: <sip:1000@192.0.2.1>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5062>\r\n\
Content-Length: 0\r\n\r\n"
        )
    }

    /// An in-dialog request with a Content-Type and any extra header lines.
    fn in_dialog_typed(
        method: &str,
        call_id: &str,
        to_tag: &str,
        cseq: u32,
        content_type: &str,
        extra: &str,
        body: &str,
    ) -> String {
        format!(
            "{method} sip:frontdoor@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{method}{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=caller1\r\n\
To: <sip:1000@192.0.2.1>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@192.0.2.10:5062>\r\n\
{extra}Content-Type: {content_type}\r\n\
Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// A late-offer call answered with our offer; returns the call and our tag.
    fn late_offer_call(ua: &mut UserAgent, now: Instant, call_id: &str) -> (CallKey, String) {
        ua.handle_datagram(now, late_invite_text(call_id).as_bytes(), caller());
        assert_eq!(statuses(ua), vec![100]);
        let Some(SipEvent::IncomingCall { call, invite }) = ua.poll_event() else {
            panic!("no IncomingCall")
        };
        assert_eq!(invite.sdp, None, "no offer in a late-offer INVITE");
        ua.answer(now, call, "v=0 our offer".to_owned());
        let ok = responses(ua);
        assert_eq!(ok[0].status, 200);
        assert_eq!(&ok[0].body[..], b"v=0 our offer");
        let tag = ok[0].headers.to().unwrap().tag().unwrap().to_owned();
        (call, tag)
    }

    #[test]
    fn late_offer_answer_in_ack_is_reported_before_acked() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = late_offer_call(&mut ua, now, "lo1");
        ua.handle_datagram(
            now,
            in_dialog_typed("ACK", "lo1", &tag, 1, "application/sdp", "", "v=0 answer").as_bytes(),
            caller(),
        );
        assert_eq!(
            ua.poll_dialog_event(),
            Some(DialogEvent::OfferAnswered {
                call,
                sdp: Some("v=0 answer".to_owned())
            })
        );
        assert_eq!(ua.poll_event(), Some(SipEvent::Acked { call }));
        // The ACK stopped the 2xx retransmissions.
        ua.handle_timeout(now + T1 * 3);
        assert!(statuses(&mut ua).is_empty());
        // A retransmitted ACK is not a second answer.
        ua.handle_datagram(
            now,
            in_dialog_typed("ACK", "lo1", &tag, 1, "application/sdp", "", "v=0 answer").as_bytes(),
            caller(),
        );
        assert_eq!(ua.poll_dialog_event(), None);
    }

    #[test]
    fn late_offer_ack_without_answer_is_reported_as_such() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = late_offer_call(&mut ua, now, "lo2");
        ua.handle_datagram(
            now,
            in_dialog("ACK", "lo2", &tag, 1, "z9hG4bKack", "").as_bytes(),
            caller(),
        );
        assert_eq!(
            ua.poll_dialog_event(),
            Some(DialogEvent::OfferAnswered { call, sdp: None })
        );
        assert_eq!(ua.poll_event(), Some(SipEvent::Acked { call }));
        // The application refuses the call: BYE carrying the reason.
        ua.hangup_with_reason(now, call, 400, "ACK carried no \"SDP\" answer\r\nX: y");
        let (bye, _) = requests(&mut ua).pop().expect("BYE sent");
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(
            bye.headers.get("Reason"),
            Some("SIP;cause=400;text=\"ACK carried no SDP answerX: y\"")
        );
        assert!(bye.headers.get("X").is_none(), "no header injection");
    }

    #[test]
    fn early_offer_ack_raises_no_dialog_event_and_plain_bye_has_no_reason() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, _) = answered_call(&mut ua, now, "eo1");
        assert_eq!(ua.poll_dialog_event(), None);
        ua.hangup(now, call);
        let (bye, _) = requests(&mut ua).pop().expect("BYE sent");
        assert!(bye.headers.get("Reason").is_none());
    }

    #[test]
    fn hangup_with_reason_before_ack_sends_reason_after_ack() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = late_offer_call(&mut ua, now, "lo3");
        ua.hangup_with_reason(now, call, 503, "engine shutting down");
        assert!(requests(&mut ua).is_empty(), "no BYE before the ACK");
        ua.handle_datagram(
            now,
            in_dialog("ACK", "lo3", &tag, 1, "z9hG4bKack", "").as_bytes(),
            caller(),
        );
        let (bye, _) = requests(&mut ua).pop().expect("BYE after ACK");
        assert_eq!(
            bye.headers.get("Reason"),
            Some("SIP;cause=503;text=\"engine shutting down\"")
        );
    }

    #[test]
    fn offerless_reinvite_gets_our_offer_and_the_ack_answer_is_reported() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = answered_call(&mut ua, now, "ri1");
        ua.handle_datagram(
            now,
            in_dialog("INVITE", "ri1", &tag, 2, "z9hG4bKre", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![100]);
        assert_eq!(ua.poll_event(), Some(SipEvent::ReOffer { call, sdp: None }));
        ua.answer_reoffer(now, call, "v=0 re-offer".to_owned());
        let ok = responses(&mut ua).pop().unwrap();
        assert_eq!((ok.status, &ok.body[..]), (200, &b"v=0 re-offer"[..]));
        ua.handle_datagram(
            now,
            in_dialog_typed(
                "ACK",
                "ri1",
                &tag,
                2,
                "application/sdp",
                "",
                "v=0 re-answer",
            )
            .as_bytes(),
            caller(),
        );
        assert_eq!(
            ua.poll_dialog_event(),
            Some(DialogEvent::OfferAnswered {
                call,
                sdp: Some("v=0 re-answer".to_owned())
            })
        );
        assert_eq!(ua.poll_event(), None, "no second Acked for a re-INVITE");
        // A re-INVITE with an offer: its ACK carries nothing we wait for.
        ua.handle_datagram(
            now,
            in_dialog("INVITE", "ri1", &tag, 3, "z9hG4bKre3", "v=1").as_bytes(),
            caller(),
        );
        let _ = statuses(&mut ua);
        assert!(matches!(
            ua.poll_event(),
            Some(SipEvent::ReOffer { sdp: Some(_), .. })
        ));
        ua.answer_reoffer(now, call, "v=0 answer".to_owned());
        let _ = responses(&mut ua);
        ua.handle_datagram(
            now,
            in_dialog("ACK", "ri1", &tag, 3, "z9hG4bKack3", "").as_bytes(),
            caller(),
        );
        assert_eq!(ua.poll_dialog_event(), None);
    }

    #[test]
    fn info_dtmf_is_accepted_and_reported() {
        let mut ua = ua();
        let now = Instant::now();
        let (call, tag) = answered_call(&mut ua, now, "in1");
        let cases: &[(&str, &str, char, u32)] = &[
            (
                "application/dtmf-relay",
                "Signal=5\r\nDuration=160\r\n",
                '5',
                160,
            ),
            (
                "application/dtmf-relay",
                "signal= #\nduration=250",
                '#',
                250,
            ),
            (
                "Application/DTMF-Relay; charset=utf-8",
                "Signal=11\r\n",
                '#',
                160,
            ),
            (
                "application/dtmf-relay",
                "Signal=*\r\nDuration=999999\r\n",
                '*',
                10_000,
            ),
            ("application/dtmf", "7", '7', 160),
            ("application/dtmf", "10\r\n", '*', 160),
            ("application/dtmf", "b", 'B', 160),
        ];
        for (index, (content_type, body, digit, duration_ms)) in cases.iter().enumerate() {
            let cseq = 2 + index as u32;
            ua.handle_datagram(
                now,
                in_dialog_typed("INFO", "in1", &tag, cseq, content_type, "", body).as_bytes(),
                caller(),
            );
            assert_eq!(statuses(&mut ua), vec![200], "{content_type} {body:?}");
            assert_eq!(
                ua.poll_dialog_event(),
                Some(DialogEvent::InfoDtmf {
                    call,
                    digit: *digit,
                    duration_ms: *duration_ms
                }),
                "{content_type} {body:?}"
            );
        }
        assert_eq!(ua.poll_event(), None, "INFO raises no SipEvent");
    }

    #[test]
    fn info_we_do_not_understand_is_refused_per_rfc_6086() {
        let mut ua = ua();
        let now = Instant::now();
        let (_, tag) = answered_call(&mut ua, now, "in2");
        // An unknown body type: 415 naming what we take.
        ua.handle_datagram(
            now,
            in_dialog_typed(
                "INFO",
                "in2",
                &tag,
                2,
                "application/media_control+xml",
                "",
                "<x/>",
            )
            .as_bytes(),
            caller(),
        );
        let refused = responses(&mut ua).pop().unwrap();
        assert_eq!(refused.status, 415);
        assert_eq!(refused.headers.get("Accept"), Some(ACCEPT_INFO));
        // Any Info Package: 469 with the (empty) list of those we take.
        ua.handle_datagram(
            now,
            in_dialog_typed(
                "INFO",
                "in2",
                &tag,
                3,
                "application/dtmf-relay",
                "Info-Package: foo\r\n",
                "Signal=1\r\n",
            )
            .as_bytes(),
            caller(),
        );
        let refused = responses(&mut ua).pop().unwrap();
        assert_eq!(refused.status, 469);
        assert!(refused.headers.get("Recv-Info").is_some());
        // A DTMF type with a body that names no digit: 400.
        for (cseq, body) in [
            (4, "Signal=!\r\n"),
            (5, "Duration=100\r\n"),
            (6, "\u{0}\u{1}"),
        ] {
            ua.handle_datagram(
                now,
                in_dialog_typed(
                    "INFO",
                    "in2",
                    &tag,
                    cseq,
                    "application/dtmf-relay",
                    "",
                    body,
                )
                .as_bytes(),
                caller(),
            );
            assert_eq!(statuses(&mut ua), vec![400], "{body:?}");
        }
        // An empty INFO (keep-alive) still gets 200.
        ua.handle_datagram(
            now,
            in_dialog("INFO", "in2", &tag, 7, "z9hG4bKinfo7", "").as_bytes(),
            caller(),
        );
        assert_eq!(statuses(&mut ua), vec![200]);
        assert_eq!(ua.poll_dialog_event(), None, "nothing refused is reported");
    }

    #[test]
    fn dtmf_signals_map_like_rfc_4733_events() {
        assert_eq!(dtmf_signal("0"), Some('0'));
        assert_eq!(dtmf_signal("12"), Some('A'));
        assert_eq!(dtmf_signal("15"), Some('D'));
        assert_eq!(dtmf_signal("16"), None);
        assert_eq!(dtmf_signal("99999999999999999999999"), None);
        assert_eq!(dtmf_signal("d"), Some('D'));
        assert_eq!(dtmf_signal("E"), None);
        assert_eq!(dtmf_signal("55"), None);
        assert_eq!(dtmf_signal(""), None);
        assert_eq!(
            parse_info_dtmf("Signal=3\r\nDuration=x\r\n"),
            Some(('3', 160))
        );
        assert_eq!(parse_info_dtmf("Duration=100"), None);
    }
}
