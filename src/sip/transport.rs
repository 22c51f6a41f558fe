//! The async shell around the sans-IO [`UserAgent`]: UDP and TCP sockets,
//! timers and the command/event channels.
//!
//! One task owns the core, so there are no locks: sockets and connection
//! tasks feed it through bounded channels, and it sleeps until the core's
//! `poll_timeout`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracing::Instrument;

use super::auth::{Registrar, RegistrarConfig, RegistrationEvent};
use super::message::Uri;
use super::parse::{Frame, MAX_MESSAGE_BYTES, StreamFramer};
use super::peer::{ConnectionId, Peer, Transmit, Transport};
use super::ua::{
    DialogEvent, OutboundEvent, OutgoingInvite, ReferEvent, UaConfig, UaError, UserAgent,
};
use super::{CallKey, SipConfig, SipError, SipEvent};

/// Most TCP connections at once; further accepts wait for a free slot.
pub const MAX_TCP_CONNECTIONS: usize = 1024;
/// A TCP connection silent for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long shutdown waits for our BYEs to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const COMMAND_QUEUE: usize = 4096;
const EVENT_QUEUE: usize = 1024;
const INPUT_QUEUE: usize = 1024;
const CONNECTION_WRITE_QUEUE: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per outbound call or REFER: progress events are few (1xx, 2xx, BYE).
const CALL_EVENT_QUEUE: usize = 32;
/// Registration changes kept for a slow subscriber before it lags.
const REGISTRATION_QUEUE: usize = 256;

/// Why an outbound call or REFER could not be started.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SipCallError {
    #[error("the SIP layer is not running")]
    Stopped,
    #[error(transparent)]
    Ua(#[from] UaError),
}

/// A call placed with [`SipHandle::invite`]: its key (for `hangup`,
/// `answer_reoffer`...) and its own event stream, which ends after the
/// call's last event.
#[derive(Debug)]
pub struct OutboundCall {
    pub call: CallKey,
    pub events: mpsc::Receiver<OutboundEvent>,
}

pub(super) enum Command {
    Ringing(CallKey),
    Answer(CallKey, String),
    Reject(CallKey, u16, Option<String>, Vec<(String, String)>),
    Hangup(CallKey, Option<(u16, String)>),
    WatchDialog(CallKey, mpsc::Sender<DialogEvent>),
    AnswerReoffer(CallKey, String),
    RejectReoffer(CallKey, u16),
    Invite(
        Box<OutgoingInvite>,
        oneshot::Sender<Result<OutboundCall, SipCallError>>,
    ),
    Refer(
        CallKey,
        Box<Uri>,
        Option<String>,
        oneshot::Sender<Result<mpsc::Receiver<ReferEvent>, SipCallError>>,
    ),
    SetRegistrar(Option<Box<RegistrarConfig>>),
    Shutdown(oneshot::Sender<()>),
}

enum ShellInput {
    StreamMessage {
        connection: ConnectionId,
        addr: SocketAddr,
        data: Bytes,
    },
    ConnectionClosed(ConnectionId),
    Accepted {
        connection: ConnectionId,
        addr: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
}

/// Cheap-to-clone handle; every command goes to the core task.
#[derive(Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    registrations: broadcast::Sender<RegistrationEvent>,
}

impl SipHandle {
    pub fn local_udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    fn send(&self, command: Command) {
        if let Err(error) = self.commands.try_send(command) {
            // Full means the core is far behind; closed means it stopped.
            tracing::error!(%error, "SIP command dropped");
        }
    }

    /// 180 Ringing.
    pub fn ringing(&self, call: CallKey) {
        self.send(Command::Ringing(call));
    }

    /// 200 OK with the SDP answer; retransmitted until ACKed.
    pub fn answer(&self, call: CallKey, sdp: String) {
        self.send(Command::Answer(call, sdp));
    }

    /// Final failure response (e.g. 503 with Retry-After, 488, 404).
    pub fn reject(
        &self,
        call: CallKey,
        status: u16,
        reason: Option<String>,
        extra_headers: Vec<(String, String)>,
    ) {
        self.send(Command::Reject(call, status, reason, extra_headers));
    }

    /// BYE for an answered call; 480 for one not yet answered.
    pub fn hangup(&self, call: CallKey) {
        self.send(Command::Hangup(call, None));
    }

    /// Like [`Self::hangup`], with a Reason header (RFC 3326) on the BYE
    /// carrying SIP status `cause` and `text`, so the far end's logs say why.
    pub fn hangup_with_reason(&self, call: CallKey, cause: u16, text: &str) {
        self.send(Command::Hangup(call, Some((cause, text.to_owned()))));
    }

    /// The call's [`DialogEvent`]s (the ACK's answer to our offer, INFO
    /// DTMF) from now on. Commands are handled in order, so watching before
    /// [`Self::answer`] cannot miss the ACK. The channel closes when the
    /// call ends.
    pub fn watch_dialog(&self, call: CallKey) -> mpsc::Receiver<DialogEvent> {
        let (events_tx, events) = mpsc::channel(CALL_EVENT_QUEUE);
        self.send(Command::WatchDialog(call, events_tx));
        events
    }

    pub fn answer_reoffer(&self, call: CallKey, sdp: String) {
        self.send(Command::AnswerReoffer(call, sdp));
    }

    pub fn reject_reoffer(&self, call: CallKey, status: u16) {
        self.send(Command::RejectReoffer(call, status));
    }

    /// Places a call: INVITE with `outgoing.sdp` as the offer. Progress,
    /// answer, failure and the far end's BYE arrive on the returned call's
    /// own channel, never on the engine's [`SipEvent`] stream. End it (or
    /// CANCEL it while ringing) with [`Self::hangup`].
    pub async fn invite(&self, outgoing: OutgoingInvite) -> Result<OutboundCall, SipCallError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands
            .send(Command::Invite(Box::new(outgoing), reply_tx))
            .await
            .map_err(|_| SipCallError::Stopped)?;
        reply_rx.await.map_err(|_| SipCallError::Stopped)?
    }

    /// Sends REFER on an established call (blind transfer). The returned
    /// channel carries the REFER's response and the NOTIFYs that follow,
    /// and closes once the outcome is final.
    pub async fn refer(
        &self,
        call: CallKey,
        refer_to: Uri,
        referred_by: Option<String>,
    ) -> Result<mpsc::Receiver<ReferEvent>, SipCallError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands
            .send(Command::Refer(
                call,
                Box::new(refer_to),
                referred_by,
                reply_tx,
            ))
            .await
            .map_err(|_| SipCallError::Stopped)?;
        reply_rx.await.map_err(|_| SipCallError::Stopped)?
    }

    /// Starts answering REGISTER with digest authentication (`None` stops
    /// it: REGISTER gets 405 again). Applied before any datagram read
    /// after this call. Subscribe to [`Self::registrations`] first to see
    /// every binding.
    pub fn set_registrar(&self, config: Option<RegistrarConfig>) {
        self.send(Command::SetRegistrar(config.map(Box::new)));
    }

    /// Registrations, expiries and refused attempts, as they happen.
    pub fn registrations(&self) -> broadcast::Receiver<RegistrationEvent> {
        self.registrations.subscribe()
    }

    /// Stops the listeners once pending BYE transactions finish, or after
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Binds the configured sockets and spawns the shell.
pub async fn start(cfg: SipConfig) -> Result<(SipHandle, mpsc::Receiver<SipEvent>), SipError> {
    if cfg.udp.is_none() && cfg.tcp.is_none() {
        return Err(SipError::NoListener);
    }
    let udp = match cfg.udp {
        Some(addr) => Some(Arc::new(
            UdpSocket::bind(addr)
                .await
                .map_err(|source| SipError::Bind { addr, source })?,
        )),
        None => None,
    };
    let tcp = match cfg.tcp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| SipError::Bind { addr, source })?,
        ),
        None => None,
    };
    let udp_addr = udp
        .as_ref()
        .map(|s| s.local_addr())
        .transpose()
        .map_err(SipError::Io)?;
    let tcp_addr = tcp
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(SipError::Io)?;
    let bound_ip = udp_addr.or(tcp_addr).map(|a| a.ip());
    let advertised_host = match (&cfg.advertised_host, bound_ip) {
        (Some(host), _) => host.clone(),
        (None, Some(ip)) if !ip.is_unspecified() => ip_for_uri(ip),
        _ => ip_for_uri(outbound_interface_ip().await),
    };
    let ua = UserAgent::new(UaConfig {
        user_agent: cfg.user_agent.clone(),
        timers: cfg.timers,
        advertised_host,
        udp_port: udp_addr.map(|a| a.port()),
        tcp_port: tcp_addr.map(|a| a.port()),
        ..UaConfig::default()
    });

    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (registrations, _) = broadcast::channel(REGISTRATION_QUEUE);
    let (stop_accepting_tx, stop_accepting_rx) = tokio::sync::watch::channel(false);
    let connection_ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    if let Some(listener) = tcp {
        tokio::spawn(
            accept_loop(
                listener,
                input_tx.clone(),
                stop_accepting_rx,
                connection_ids.clone(),
            )
            .instrument(tracing::info_span!("sip_tcp_accept")),
        );
    }
    let shell = Shell {
        ua,
        udp,
        connections: HashMap::new(),
        connections_by_addr: HashMap::new(),
        input_tx,
        connection_ids,
        events: event_tx,
        registrations: registrations.clone(),
        outbound: HashMap::new(),
        refer_watchers: HashMap::new(),
        dialog_watchers: HashMap::new(),
    };
    tokio::spawn(
        shell
            .run(command_rx, input_rx, stop_accepting_tx)
            .instrument(tracing::info_span!("sip")),
    );
    tracing::info!(?udp_addr, ?tcp_addr, "SIP listening");
    Ok((
        SipHandle {
            commands: command_tx,
            udp_addr,
            tcp_addr,
            registrations,
        },
        event_rx,
    ))
}

fn ip_for_uri(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The address of the interface the default route uses; connecting a UDP
/// socket sends nothing.
async fn outbound_interface_ip() -> IpAddr {
    let probe = async {
        let socket = UdpSocket::bind("0.0.0.0:0").await?;
        socket.connect("192.0.2.1:9").await?;
        socket.local_addr()
    };
    match probe.await {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

struct Shell {
    ua: UserAgent,
    udp: Option<Arc<UdpSocket>>,
    connections: HashMap<ConnectionId, mpsc::Sender<Bytes>>,
    connections_by_addr: HashMap<SocketAddr, ConnectionId>,
    input_tx: mpsc::Sender<ShellInput>,
    connection_ids: Arc<std::sync::atomic::AtomicU64>,
    events: mpsc::Sender<SipEvent>,
    registrations: broadcast::Sender<RegistrationEvent>,
    /// Calls we placed: their events go to the caller of `invite`.
    outbound: HashMap<CallKey, mpsc::Sender<OutboundEvent>>,
    refer_watchers: HashMap<CallKey, mpsc::Sender<ReferEvent>>,
    dialog_watchers: HashMap<CallKey, mpsc::Sender<DialogEvent>>,
}

async fn recv_udp(
    socket: Option<&UdpSocket>,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inputs: mpsc::Receiver<ShellInput>,
        stop_accepting: tokio::sync::watch::Sender<bool>,
    ) {
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let mut shutting_down: Option<(Instant, Vec<oneshot::Sender<()>>)> = None;
        let udp = self.udp.clone();
        loop {
            if !self.flush().await {
                break;
            }
            if let Some((deadline, _)) = &shutting_down
                && (self.ua.pending_hangups() == 0 || Instant::now() >= *deadline)
            {
                break;
            }
            let wake = match (self.ua.poll_timeout(), &shutting_down) {
                (Some(a), Some((b, _))) => Some(a.min(*b)),
                (a, Some((b, _))) => Some(a.unwrap_or(*b)),
                (a, None) => a,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            // Biased: a command sent before a datagram arrived is applied
            // first (a registrar installed at start-up answers the first
            // REGISTER; an answer is sent before the next request for that
            // call is read). Timers come next so retransmissions keep time
            // under load; the network last, it is never starved because
            // commands and timers are bounded by what the network caused.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = stop_accepting.send(true);
                        match &mut shutting_down {
                            Some((_, waiters)) => waiters.push(done),
                            None => shutting_down = Some((Instant::now() + SHUTDOWN_GRACE, vec![done])),
                        }
                    }
                    Some(command) => self.on_command(command),
                    // Every handle dropped: nobody can answer calls any more.
                    None => break,
                },
                () = sleep => self.ua.handle_timeout(Instant::now()),
                Some(input) = inputs.recv() => self.on_input(input),
                received = recv_udp(udp.as_deref(), &mut buffer) => match received {
                    Ok((len, source)) => {
                        // A datagram that filled the buffer was truncated: too big.
                        if len <= MAX_MESSAGE_BYTES {
                            self.ua.handle_datagram(Instant::now(), &buffer[..len], Peer::udp(source));
                        }
                    }
                    // ICMP port unreachable from an earlier send shows up here.
                    Err(error) => tracing::debug!(%error, "UDP receive error"),
                },
            }
        }
        let _ = stop_accepting.send(true);
        // Dropping the writers closes every connection task.
        self.connections.clear();
        if let Some((_, waiters)) = shutting_down {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
        tracing::info!("SIP stopped");
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        let call = match &command {
            Command::Ringing(c)
            | Command::Answer(c, _)
            | Command::Reject(c, ..)
            | Command::Hangup(c, _)
            | Command::WatchDialog(c, _)
            | Command::AnswerReoffer(c, _)
            | Command::RejectReoffer(c, _)
            | Command::Refer(c, ..) => Some(*c),
            Command::Invite(..) | Command::SetRegistrar(_) => None,
            Command::Shutdown(_) => return,
        };
        let Some(call) = call else {
            return self.on_setup_command(now, command);
        };
        let span = tracing::debug_span!(
            "sip_call",
            call_id = self.ua.call_id(call).unwrap_or_default()
        );
        let _entered = span.enter();
        match command {
            Command::Ringing(call) => self.ua.ringing(now, call),
            Command::Answer(call, sdp) => self.ua.answer(now, call, sdp),
            Command::Reject(call, status, reason, headers) => {
                self.ua.reject(now, call, status, reason, headers)
            }
            Command::Hangup(call, None) => self.ua.hangup(now, call),
            Command::Hangup(call, Some((cause, text))) => {
                self.ua.hangup_with_reason(now, call, cause, &text)
            }
            Command::WatchDialog(call, events) => {
                self.dialog_watchers.insert(call, events);
            }
            Command::AnswerReoffer(call, sdp) => self.ua.answer_reoffer(now, call, sdp),
            Command::RejectReoffer(call, status) => self.ua.reject_reoffer(now, call, status),
            Command::Refer(call, target, referred_by, reply) => {
                let result = self
                    .ua
                    .refer(now, call, &target, referred_by.as_deref())
                    .map(|()| {
                        let (events_tx, events) = mpsc::channel(CALL_EVENT_QUEUE);
                        self.refer_watchers.insert(call, events_tx);
                        events
                    });
                let _ = reply.send(result.map_err(SipCallError::from));
            }
            Command::Invite(..) | Command::SetRegistrar(_) | Command::Shutdown(_) => {}
        }
    }

    /// Commands that concern no existing call.
    fn on_setup_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Invite(outgoing, reply) => {
                let result = self.ua.invite(now, *outgoing).map(|call| {
                    let (events_tx, events) = mpsc::channel(CALL_EVENT_QUEUE);
                    self.outbound.insert(call, events_tx);
                    OutboundCall { call, events }
                });
                if let Ok(placed) = &result {
                    tracing::info!(
                        call_id = self.ua.call_id(placed.call).unwrap_or_default(),
                        "outbound call placed"
                    );
                }
                let _ = reply.send(result.map_err(SipCallError::from));
            }
            Command::SetRegistrar(config) => {
                let registrar = config.map(|c| Registrar::new(*c, rand::random(), now));
                self.ua.set_registrar(registrar);
            }
            _ => {}
        }
    }

    fn on_input(&mut self, input: ShellInput) {
        match input {
            ShellInput::StreamMessage {
                connection,
                addr,
                data,
            } => {
                self.ua
                    .handle_datagram(Instant::now(), &data, Peer::tcp(addr, connection));
            }
            ShellInput::Accepted {
                connection,
                addr,
                writer,
            } => {
                self.connections.insert(connection, writer);
                self.connections_by_addr.insert(addr, connection);
            }
            ShellInput::ConnectionClosed(connection) => {
                self.connections.remove(&connection);
                self.connections_by_addr.retain(|_, id| *id != connection);
            }
        }
    }

    /// Sends every pending transmit and delivers every event. Returns false
    /// once the application dropped the event receiver.
    async fn flush(&mut self) -> bool {
        while let Some(transmit) = self.ua.poll_transmit() {
            self.transmit(transmit).await;
        }
        while let Some(event) = self.ua.poll_outbound_event() {
            self.deliver_outbound(event);
        }
        while let Some(event) = self.ua.poll_refer_event() {
            self.deliver_refer(event);
        }
        while let Some(event) = self.ua.poll_dialog_event() {
            self.deliver_dialog(event);
        }
        while let Some(event) = self.ua.poll_registration_event() {
            // Nobody subscribed is fine: the registrar still keeps the binding.
            let _ = self.registrations.send(event);
        }
        while let Some(event) = self.ua.poll_event() {
            let event = match self.divert_outbound(event) {
                Some(event) => event,
                None => continue,
            };
            // Backpressure: a slow application slows SIP rather than losing calls.
            if self.events.send(event).await.is_err() {
                tracing::warn!("SIP event receiver dropped; stopping");
                return false;
            }
        }
        true
    }

    fn deliver_outbound(&mut self, event: OutboundEvent) {
        let (call, last) = match &event {
            OutboundEvent::Progress { call, .. }
            | OutboundEvent::Answered { call, .. }
            | OutboundEvent::ReOffer { call, .. } => (*call, false),
            OutboundEvent::Failed { call, .. }
            | OutboundEvent::RemoteHangup { call }
            | OutboundEvent::HangupComplete { call, .. } => (*call, true),
        };
        let Some(sender) = self.outbound.get(&call) else {
            return;
        };
        if sender.try_send(event).is_err() {
            tracing::warn!(?call, "outbound call event dropped (receiver gone or full)");
        }
        if last {
            self.outbound.remove(&call);
        }
    }

    fn deliver_dialog(&mut self, event: DialogEvent) {
        let call = match &event {
            DialogEvent::OfferAnswered { call, .. } | DialogEvent::InfoDtmf { call, .. } => *call,
        };
        // Unwatched calls lose nothing they asked for; a closed watcher is
        // a call task that has finished.
        if let Some(sender) = self.dialog_watchers.get(&call)
            && let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(event)
        {
            self.dialog_watchers.remove(&call);
        }
    }

    fn deliver_refer(&mut self, event: ReferEvent) {
        let (call, last) = match &event {
            ReferEvent::Answered { call, status } => {
                (*call, !status.is_some_and(|s| (200..300).contains(&s)))
            }
            ReferEvent::Notified {
                call, terminated, ..
            } => (*call, *terminated),
        };
        if let Some(sender) = self.refer_watchers.get(&call) {
            let _ = sender.try_send(event);
        }
        if last {
            self.refer_watchers.remove(&call);
        }
    }

    /// Events of calls we placed go to their own channel; the rest (and
    /// `None` for diverted ones) continue to the engine.
    fn divert_outbound(&mut self, event: SipEvent) -> Option<SipEvent> {
        let ended = match &event {
            SipEvent::RemoteHangup { call }
            | SipEvent::HangupComplete { call, .. }
            | SipEvent::CallFailed { call, .. }
            | SipEvent::Cancelled { call } => Some(*call),
            _ => None,
        };
        if let Some(call) = ended {
            self.refer_watchers.remove(&call);
            self.dialog_watchers.remove(&call);
        }
        let converted = match &event {
            SipEvent::RemoteHangup { call } if self.outbound.contains_key(call) => {
                OutboundEvent::RemoteHangup { call: *call }
            }
            SipEvent::HangupComplete { call, status } if self.outbound.contains_key(call) => {
                OutboundEvent::HangupComplete {
                    call: *call,
                    status: *status,
                }
            }
            SipEvent::CallFailed { call, .. } if self.outbound.contains_key(call) => {
                OutboundEvent::HangupComplete {
                    call: *call,
                    status: None,
                }
            }
            SipEvent::ReOffer { call, sdp } if self.outbound.contains_key(call) => {
                OutboundEvent::ReOffer {
                    call: *call,
                    sdp: sdp.clone(),
                }
            }
            _ => return Some(event),
        };
        self.deliver_outbound(converted);
        None
    }

    async fn transmit(&mut self, transmit: Transmit) {
        let Transmit { peer, payload } = transmit;
        match peer.transport {
            Transport::Udp => match &self.udp {
                Some(socket) => {
                    if let Err(error) = socket.send_to(&payload, peer.addr).await {
                        tracing::debug!(%error, to = %peer.addr, "UDP send failed");
                    }
                }
                None => tracing::warn!(to = %peer.addr, "no UDP socket for a UDP destination"),
            },
            Transport::Tcp => {
                let connection = peer
                    .connection
                    .filter(|c| self.connections.contains_key(c))
                    .or_else(|| self.connections_by_addr.get(&peer.addr).copied());
                let writer = match connection.and_then(|c| self.connections.get(&c)) {
                    Some(writer) => writer.clone(),
                    None => self.connect(peer.addr),
                };
                if writer.try_send(payload).is_err() {
                    tracing::warn!(to = %peer.addr, "TCP connection queue full or closed; message dropped");
                }
            }
        }
    }

    /// Opens an outbound connection; messages queue until it is up.
    fn connect(&mut self, addr: SocketAddr) -> mpsc::Sender<Bytes> {
        let id = ConnectionId(
            self.connection_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let (writer_tx, writer_rx) = mpsc::channel(CONNECTION_WRITE_QUEUE);
        self.connections.insert(id, writer_tx.clone());
        self.connections_by_addr.insert(addr, id);
        let inputs = self.input_tx.clone();
        tokio::spawn(
            async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => serve_connection(stream, id, addr, writer_rx, inputs).await,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "TCP connect failed");
                        let _ = inputs.send(ShellInput::ConnectionClosed(id)).await;
                    }
                    Err(_) => {
                        tracing::warn!("TCP connect timed out");
                        let _ = inputs.send(ShellInput::ConnectionClosed(id)).await;
                    }
                }
            }
            .instrument(tracing::debug_span!("sip_tcp_out", peer = %addr)),
        );
        writer_tx
    }
}

async fn accept_loop(
    listener: TcpListener,
    inputs: mpsc::Sender<ShellInput>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    connection_ids: Arc<std::sync::atomic::AtomicU64>,
) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(error) => {
                // EMFILE and friends pass; do not spin or die.
                tracing::warn!(%error, ?backoff, "TCP accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let id = ConnectionId(connection_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (writer_tx, writer_rx) = mpsc::channel(CONNECTION_WRITE_QUEUE);
        let registered = inputs
            .send(ShellInput::Accepted {
                connection: id,
                addr,
                writer: writer_tx,
            })
            .await;
        if registered.is_err() {
            return;
        }
        let inputs = inputs.clone();
        tokio::spawn(
            async move {
                serve_connection(stream, id, addr, writer_rx, inputs).await;
                drop(permit);
            }
            .instrument(tracing::debug_span!("sip_tcp", peer = %addr)),
        );
    }
}

/// Reads framed messages into the core and writes what the core sends,
/// until either side closes, the peer misbehaves or it idles out.
async fn serve_connection(
    stream: TcpStream,
    id: ConnectionId,
    addr: SocketAddr,
    mut writer_rx: mpsc::Receiver<Bytes>,
    inputs: mpsc::Sender<ShellInput>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = tokio::time::timeout(TCP_IDLE_TIMEOUT, reader.read(&mut buffer)) => {
                let len = match read {
                    Ok(Ok(0)) => break,
                    Ok(Ok(len)) => len,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TCP read failed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!("TCP connection idle; closing");
                        break;
                    }
                };
                if let Err(error) = framer.push(&buffer[..len]) {
                    tracing::warn!(%error, "closing TCP connection");
                    break;
                }
                let mut failed = false;
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(data))) => {
                            if inputs.send(ShellInput::StreamMessage { connection: id, addr, data }).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        Ok(Some(Frame::KeepAlivePing)) => {
                            if writer.write_all(b"\r\n").await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            // Framing is lost: nothing after this can be trusted.
                            tracing::warn!(%error, "closing TCP connection");
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break;
                }
            }
            outgoing = writer_rx.recv() => match outgoing {
                Some(payload) => {
                    if let Err(error) = writer.write_all(&payload).await {
                        tracing::debug!(%error, "TCP write failed");
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = inputs.send(ShellInput::ConnectionClosed(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Request, Response, SipMessage};
    use crate::sip::parse::parse_message;
    use crate::sip::{TimerConfig, Transport};

    fn config() -> SipConfig {
        SipConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            advertised_host: None,
            user_agent: "Frontdoor-test".to_owned(),
            timers: TimerConfig::default(),
        }
    }

    async fn recv_message(socket: &UdpSocket) -> SipMessage {
        let mut buffer = vec![0u8; 65536];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("timed out waiting for SIP message")
            .unwrap();
        parse_message(&buffer[..len]).unwrap()
    }

    async fn recv_response(socket: &UdpSocket) -> Response {
        match recv_message(socket).await {
            SipMessage::Response(r) => r,
            SipMessage::Request(r) => panic!("expected response, got {}", r.method),
        }
    }

    async fn next_event(events: &mut mpsc::Receiver<SipEvent>) -> SipEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("timed out waiting for event")
            .expect("event channel closed")
    }

    #[tokio::test]
    async fn udp_invite_answer_ack_and_bye_round_trip() {
        let (handle, mut events) = start(config()).await.unwrap();
        let server = handle.local_udp_addr().unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let phone_addr = phone.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:1000@{server} SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bKudp1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@{phone_addr}>;tag=ph1\r\n\
To: <sip:1000@{server}>\r\n\
Call-ID: udp-test-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@{phone_addr}>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\r\nv=0\r\n"
        );
        phone.send_to(invite.as_bytes(), server).await.unwrap();
        assert_eq!(recv_response(&phone).await.status, 100);
        let SipEvent::IncomingCall {
            call,
            invite: offer,
        } = next_event(&mut events).await
        else {
            panic!("expected IncomingCall")
        };
        assert_eq!(offer.transport, Transport::Udp);
        assert_eq!(offer.source, phone_addr);
        assert_eq!(offer.request_uri_user.as_deref(), Some("1000"));
        handle.ringing(call);
        assert_eq!(recv_response(&phone).await.status, 180);
        handle.answer(call, "v=0\r\nanswer\r\n".to_owned());
        let ok = recv_response(&phone).await;
        assert_eq!(ok.status, 200);
        assert_eq!(&ok.body[..], b"v=0\r\nanswer\r\n");
        let contact = ok.headers.contact().unwrap();
        assert_eq!(contact.uri.socket_addr(5060), Some(server));
        let to = ok.headers.get("To").unwrap().to_owned();
        let ack = format!(
            "ACK sip:frontdoor@{server} SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bKudp2;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@{phone_addr}>;tag=ph1\r\n\
To: {to}\r\n\
Call-ID: udp-test-1\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n"
        );
        phone.send_to(ack.as_bytes(), server).await.unwrap();
        assert_eq!(next_event(&mut events).await, SipEvent::Acked { call });

        // We hang up: the BYE arrives at the phone's Contact.
        handle.hangup(call);
        let SipMessage::Request(bye) = recv_message(&phone).await else {
            panic!("expected BYE")
        };
        assert_eq!(bye.method, crate::sip::Method::Bye);
        let ok = Response::for_request(&bye, 200, "OK", None);
        phone.send_to(&ok.to_bytes(), server).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            SipEvent::HangupComplete {
                call,
                status: Some(200)
            }
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn udp_remote_bye_and_malformed_request() {
        let (handle, mut events) = start(config()).await.unwrap();
        let server = handle.local_udp_addr().unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let phone_addr = phone.local_addr().unwrap();
        let headers = format!(
            "Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bKbad1;rport\r\n\
From: <sip:alice@{phone_addr}>;tag=ph2\r\n\
To: <sip:1000@{server}>\r\n\
Call-ID: bad-1\r\n\
CSeq: 1 INVITE\r\n"
        );
        let bad =
            format!("INVITE sip:1000@{server} SIP/2.0\r\n{headers}Content-Length: 500\r\n\r\nv=0");
        phone.send_to(bad.as_bytes(), server).await.unwrap();
        let resp = recv_response(&phone).await;
        assert_eq!(resp.status, 400);
        assert!(resp.reason.contains("Content-Length"));

        let invite = format!("INVITE sip:1000@{server} SIP/2.0\r\n{headers}Contact: <sip:a@{phone_addr}>\r\nContent-Length: 0\r\n\r\n")
            .replace("z9hG4bKbad1", "z9hG4bKgood");
        phone.send_to(invite.as_bytes(), server).await.unwrap();
        assert_eq!(recv_response(&phone).await.status, 100);
        let SipEvent::IncomingCall { call, .. } = next_event(&mut events).await else {
            panic!()
        };
        handle.answer(call, "v=0".to_owned());
        let ok = recv_response(&phone).await;
        let to = ok.headers.get("To").unwrap().to_owned();
        let SipMessage::Request(mut ack) = parse_message(invite.as_bytes()).unwrap() else {
            panic!()
        };
        ack.method = crate::sip::Method::Ack;
        ack.headers.set("To", to.clone());
        ack.headers.set("CSeq", "1 ACK");
        ack.headers
            .set("Via", format!("SIP/2.0/UDP {phone_addr};branch=z9hG4bKack"));
        phone.send_to(&ack.to_bytes(), server).await.unwrap();
        assert_eq!(next_event(&mut events).await, SipEvent::Acked { call });
        let mut bye: Request = ack.clone();
        bye.method = crate::sip::Method::Bye;
        bye.headers.set("CSeq", "2 BYE");
        bye.headers
            .set("Via", format!("SIP/2.0/UDP {phone_addr};branch=z9hG4bKbye"));
        phone.send_to(&bye.to_bytes(), server).await.unwrap();
        assert_eq!(recv_response(&phone).await.status, 200);
        assert_eq!(
            next_event(&mut events).await,
            SipEvent::RemoteHangup { call }
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn tcp_options_answered_on_same_connection() {
        let (handle, _events) = start(config()).await.unwrap();
        let server = handle.local_tcp_addr().unwrap();
        let mut stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        let options = format!(
            "\r\n\r\nOPTIONS sip:{server} SIP/2.0\r\n\
Via: SIP/2.0/TCP {local};branch=z9hG4bKtcp1\r\n\
From: <sip:probe@{local}>;tag=p\r\n\
To: <sip:{server}>\r\n\
Call-ID: tcp-1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
        );
        stream.write_all(options.as_bytes()).await.unwrap();
        let mut framer = StreamFramer::new();
        let mut buffer = [0u8; 4096];
        let mut pong = false;
        let response = loop {
            let len = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            assert!(len > 0, "connection closed");
            if buffer[..len].starts_with(b"\r\n") {
                pong = true;
            }
            framer.push(&buffer[..len]).unwrap();
            if let Some(Frame::Message(data)) = framer.next_frame().unwrap() {
                break parse_message(&data).unwrap();
            }
        };
        let SipMessage::Response(response) = response else {
            panic!()
        };
        assert_eq!(response.status, 200);
        assert!(pong, "double-CRLF ping answered with a CRLF pong");
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn start_without_listeners_fails() {
        let mut cfg = config();
        cfg.udp = None;
        cfg.tcp = None;
        assert!(matches!(start(cfg).await, Err(SipError::NoListener)));
    }

    #[tokio::test]
    async fn late_offer_answer_and_info_dtmf_reach_the_dialog_watcher() {
        let (handle, mut events) = start(config()).await.unwrap();
        let server = handle.local_udp_addr().unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let phone_addr = phone.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:1000@{server} SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bKlate1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@{phone_addr}>;tag=ph9\r\n\
To: <sip:1000@{server}>\r\n\
Call-ID: late-test-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@{phone_addr}>\r\n\
Content-Length: 0\r\n\r\n"
        );
        phone.send_to(invite.as_bytes(), server).await.unwrap();
        assert_eq!(recv_response(&phone).await.status, 100);
        let SipEvent::IncomingCall { call, invite } = next_event(&mut events).await else {
            panic!("expected IncomingCall")
        };
        assert_eq!(invite.sdp, None);
        let mut dialog = handle.watch_dialog(call);
        handle.answer(call, "v=0\r\noffer\r\n".to_owned());
        let ok = recv_response(&phone).await;
        assert_eq!((ok.status, &ok.body[..]), (200, &b"v=0\r\noffer\r\n"[..]));
        let to = ok.headers.get("To").unwrap().to_owned();
        let in_dialog = |method: &str, cseq: u32, content_type: &str, body: &str| {
            format!(
                "{method} sip:frontdoor@{server} SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bK{method}{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@{phone_addr}>;tag=ph9\r\n\
To: {to}\r\n\
Call-ID: late-test-1\r\n\
CSeq: {cseq} {method}\r\n\
Content-Type: {content_type}\r\n\
Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let ack = in_dialog("ACK", 1, "application/sdp", "v=0\r\nanswer\r\n");
        phone.send_to(ack.as_bytes(), server).await.unwrap();
        let next_dialog_event = async |dialog: &mut mpsc::Receiver<DialogEvent>| {
            tokio::time::timeout(Duration::from_secs(5), dialog.recv())
                .await
                .expect("timed out waiting for a dialog event")
                .expect("dialog channel closed")
        };
        assert_eq!(
            next_dialog_event(&mut dialog).await,
            DialogEvent::OfferAnswered {
                call,
                sdp: Some("v=0\r\nanswer\r\n".to_owned())
            }
        );
        assert_eq!(next_event(&mut events).await, SipEvent::Acked { call });

        let info = in_dialog(
            "INFO",
            2,
            "application/dtmf-relay",
            "Signal=#\r\nDuration=100\r\n",
        );
        phone.send_to(info.as_bytes(), server).await.unwrap();
        assert_eq!(recv_response(&phone).await.status, 200);
        assert_eq!(
            next_dialog_event(&mut dialog).await,
            DialogEvent::InfoDtmf {
                call,
                digit: '#',
                duration_ms: 100
            }
        );

        handle.hangup_with_reason(call, 488, "unusable answer");
        let SipMessage::Request(bye) = recv_message(&phone).await else {
            panic!("expected BYE")
        };
        assert_eq!(
            bye.headers.get("Reason"),
            Some("SIP;cause=488;text=\"unusable answer\"")
        );
        let ok = Response::for_request(&bye, 200, "OK", None);
        phone.send_to(&ok.to_bytes(), server).await.unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            SipEvent::HangupComplete { .. }
        ));
        // The call is over: its watcher is released and the channel closes.
        let closed = tokio::time::timeout(Duration::from_secs(5), dialog.recv()).await;
        assert_eq!(closed.expect("channel should close"), None);
        handle.shutdown().await;
    }
}
