//! Sans-IO RFC 3261 transaction layer (section 17), with the RFC 6026
//! "Accepted" states so 2xx retransmission belongs to the dialog layer.
//!
//! Nothing here touches a socket or reads the clock: messages and `Instant`s
//! go in, [`Transmit`]s and [`TxEvent`]s come out, and [`TransactionLayer::poll_timeout`]
//! says when the owner must call [`TransactionLayer::handle_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use super::message::{BRANCH_MAGIC_COOKIE, Method, Request, Response, default_reason};
use super::peer::{Peer, Transmit};

/// RFC 3261 timer base values (section 17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate; retransmissions start here.
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and of final responses.
    pub t2: Duration,
    /// How long the network may hold a message.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Keeps operator-supplied values in a range where the timer arithmetic
    /// cannot overflow and retransmissions stay sane.
    pub fn clamped(self) -> Self {
        let t1 = self
            .t1
            .clamp(Duration::from_millis(1), Duration::from_secs(60));
        TimerConfig {
            t1,
            t2: self.t2.clamp(t1, Duration::from_secs(600)),
            t4: self.t4.min(Duration::from_secs(600)),
        }
    }

    /// Timers B, F, H, J, L, M: 64*T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Handle on one transaction, stable for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(u64);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxError {
    #[error("no such transaction")]
    UnknownTransaction,
    #[error("transaction cannot send that in its current state")]
    InvalidState,
    #[error("request has no Via branch")]
    MissingBranch,
    #[error("ACK is not sent through a client transaction")]
    AckNotAllowed,
    #[error("a transaction with this branch already exists")]
    DuplicateBranch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new server transaction; the owner must answer it with [`TransactionLayer::respond`].
    Request {
        id: TxId,
        request: Request,
        peer: Peer,
    },
    /// An ACK that belongs to no INVITE server transaction: the ACK for a 2xx,
    /// handled by the dialog layer (RFC 3261 17.2.3, RFC 6026).
    Ack { request: Request, peer: Peer },
    /// A response for one of our client transactions.
    Response { id: TxId, response: Response },
    /// A 2xx to an INVITE whose transaction is gone: the dialog layer re-ACKs it.
    StrayInviteSuccess { response: Response, peer: Peer },
    /// Timer B/F (no final response) or timer H (no ACK for our non-2xx final).
    Timeout { id: TxId },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    branch: String,
    /// `None` for RFC 3261 branches, else the fields RFC 2543 matching uses.
    legacy: Option<(String, String, u32)>,
    sent_by: String,
    method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Calling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Retransmit,
    Deadline,
}

#[derive(Debug)]
struct Transaction {
    key: TxKey,
    is_server: bool,
    is_invite: bool,
    state: TxState,
    peer: Peer,
    /// Server: the last response sent; client: the request.
    last_sent: Bytes,
    /// Client INVITE: kept to build the ACK for a non-2xx and CANCEL.
    request: Option<Request>,
    /// Client INVITE after a non-2xx: the ACK to resend on retransmissions.
    ack: Option<Bytes>,
    retransmit: Option<(Instant, Duration)>,
    deadline: Option<Instant>,
}

/// Owns every transaction of one user agent.
pub struct TransactionLayer {
    timers: TimerConfig,
    max_server_transactions: usize,
    transactions: HashMap<TxId, Transaction>,
    index: HashMap<TxKey, TxId>,
    wakeups: BinaryHeap<Reverse<(Instant, TxId, Slot)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
    next_id: u64,
}

fn server_key(request: &Request) -> Option<TxKey> {
    let via = request.top_via()?;
    let method = match &request.method {
        Method::Ack => Method::Invite,
        other => other.clone(),
    };
    let branch = via.branch().unwrap_or_default();
    let legacy = if branch.starts_with(BRANCH_MAGIC_COOKIE) {
        None
    } else {
        // RFC 2543 peers: fall back to dialog identifiers (17.2.3, simplified).
        let call_id = request.headers.call_id()?.to_owned();
        let from_tag = request
            .headers
            .from()
            .and_then(|f| f.tag().map(str::to_owned))
            .unwrap_or_default();
        Some((call_id, from_tag, request.headers.cseq()?.seq))
    };
    Some(TxKey {
        branch: branch.to_owned(),
        legacy,
        sent_by: via.sent_by(),
        method,
    })
}

fn client_key(branch: &str, method: &Method) -> TxKey {
    TxKey {
        branch: branch.to_owned(),
        legacy: None,
        sent_by: String::new(),
        method: method.clone(),
    }
}

impl TransactionLayer {
    pub fn new(timers: TimerConfig) -> Self {
        TransactionLayer {
            timers: timers.clamped(),
            max_server_transactions: 100_000,
            transactions: HashMap::new(),
            index: HashMap::new(),
            wakeups: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
        }
    }

    /// New server transactions beyond this get a stateless 503.
    pub fn set_max_server_transactions(&mut self, max: usize) {
        self.max_server_transactions = max;
    }

    pub fn timers(&self) -> TimerConfig {
        self.timers
    }

    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    pub fn state(&self, id: TxId) -> Option<TxState> {
        self.transactions.get(&id).map(|t| t.state)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// Earliest timer. May be a little early when a timer was cancelled;
    /// waking early is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wakeups.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The INVITE server transaction a CANCEL targets (RFC 3261 9.2).
    pub fn matching_invite(&self, cancel: &Request) -> Option<TxId> {
        let mut key = server_key(cancel)?;
        key.method = Method::Invite;
        self.index.get(&key).copied()
    }

    fn allocate_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn schedule(&mut self, id: TxId, slot: Slot, at: Instant) {
        self.wakeups.push(Reverse((at, id, slot)));
    }

    fn send(&mut self, peer: Peer, payload: Bytes) {
        self.transmits.push_back(Transmit { peer, payload });
    }

    fn remove(&mut self, id: TxId) {
        if let Some(tx) = self.transactions.remove(&id) {
            self.index.remove(&tx.key);
        }
    }

    /// Feeds a request received from the network.
    pub fn receive_request(&mut self, now: Instant, request: Request, peer: Peer) {
        let Some(key) = server_key(&request) else {
            return;
        };
        let existing = self.index.get(&key).copied();
        if request.method == Method::Ack {
            self.receive_ack(now, existing, request, peer);
            return;
        }
        if let Some(id) = existing {
            let Some(tx) = self.transactions.get(&id) else {
                return;
            };
            // A retransmitted request: repeat our last response, if any.
            // Both INVITE and non-INVITE servers repeat once they have responded.
            let resend = matches!(tx.state, TxState::Proceeding | TxState::Completed);
            if resend && !tx.last_sent.is_empty() {
                let (peer, payload) = (tx.peer, tx.last_sent.clone());
                self.send(peer, payload);
            }
            return;
        }
        if self.transactions.len() >= self.max_server_transactions {
            let busy = Response::for_request(&request, 503, default_reason(503), Some("overload"));
            self.send(response_peer(&request, peer), Bytes::from(busy.to_bytes()));
            return;
        }
        let id = self.allocate_id();
        let is_invite = request.method == Method::Invite;
        let reply_to = response_peer(&request, peer);
        let mut tx = Transaction {
            key: key.clone(),
            is_server: true,
            is_invite,
            state: if is_invite {
                TxState::Proceeding
            } else {
                TxState::Trying
            },
            peer: reply_to,
            last_sent: Bytes::new(),
            request: None,
            ack: None,
            retransmit: None,
            deadline: None,
        };
        if is_invite {
            // RFC 3261 17.2.1: a 100 stops the client retransmitting while the
            // application decides.
            let trying = Response::for_request(&request, 100, "Trying", None);
            tx.last_sent = Bytes::from(trying.to_bytes());
            self.send(reply_to, tx.last_sent.clone());
        }
        self.transactions.insert(id, tx);
        self.index.insert(key, id);
        let _ = now;
        self.events
            .push_back(TxEvent::Request { id, request, peer });
    }

    fn receive_ack(&mut self, now: Instant, existing: Option<TxId>, request: Request, peer: Peer) {
        let Some(id) = existing else {
            self.events.push_back(TxEvent::Ack { request, peer });
            return;
        };
        let timers = self.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        match tx.state {
            TxState::Completed => {
                tx.state = TxState::Confirmed;
                tx.retransmit = None;
                if tx.peer.transport.is_reliable() {
                    self.remove(id);
                } else {
                    let at = now + timers.t4;
                    tx.deadline = Some(at);
                    self.schedule(id, Slot::Deadline, at);
                }
            }
            // Peers that reuse the INVITE branch for the 2xx ACK.
            TxState::Accepted => self.events.push_back(TxEvent::Ack { request, peer }),
            _ => {}
        }
    }

    /// Sends a response within a server transaction.
    pub fn respond(&mut self, now: Instant, id: TxId, response: &Response) -> Result<(), TxError> {
        let timers = self.timers;
        let tx = self
            .transactions
            .get_mut(&id)
            .ok_or(TxError::UnknownTransaction)?;
        if !tx.is_server {
            return Err(TxError::InvalidState);
        }
        let payload = Bytes::from(response.to_bytes());
        let status = response.status;
        let reliable = tx.peer.transport.is_reliable();
        let peer = tx.peer;
        let mut schedule = Vec::new();
        match (tx.is_invite, tx.state, status) {
            (true, TxState::Proceeding, 100..=199) => tx.last_sent = payload.clone(),
            (true, TxState::Proceeding, 200..=299) => {
                tx.state = TxState::Accepted;
                let at = now + timers.transaction_timeout();
                tx.deadline = Some(at);
                schedule.push((Slot::Deadline, at));
            }
            (true, TxState::Accepted, 200..=299) => {}
            (true, TxState::Proceeding, _) => {
                tx.state = TxState::Completed;
                tx.last_sent = payload.clone();
                let at = now + timers.transaction_timeout();
                tx.deadline = Some(at);
                schedule.push((Slot::Deadline, at));
                if !reliable {
                    let at = now + timers.t1;
                    tx.retransmit = Some((at, timers.t1));
                    schedule.push((Slot::Retransmit, at));
                }
            }
            (false, TxState::Trying | TxState::Proceeding, 100..=199) => {
                tx.state = TxState::Proceeding;
                tx.last_sent = payload.clone();
            }
            (false, TxState::Trying | TxState::Proceeding, _) => {
                tx.state = TxState::Completed;
                tx.last_sent = payload.clone();
                if reliable {
                    self.send(peer, payload);
                    self.remove(id);
                    return Ok(());
                }
                let at = now + timers.transaction_timeout();
                tx.deadline = Some(at);
                schedule.push((Slot::Deadline, at));
            }
            _ => return Err(TxError::InvalidState),
        }
        for (slot, at) in schedule {
            self.schedule(id, slot, at);
        }
        self.send(peer, payload);
        Ok(())
    }

    /// Starts a client transaction. The request's top Via must carry a
    /// unique `z9hG4bK` branch.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        peer: Peer,
    ) -> Result<TxId, TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckNotAllowed);
        }
        let via = request.top_via().ok_or(TxError::MissingBranch)?;
        let branch = via.branch().ok_or(TxError::MissingBranch)?;
        let key = client_key(branch, &request.method);
        if self.index.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = self.allocate_id();
        let is_invite = request.method == Method::Invite;
        let payload = Bytes::from(request.to_bytes());
        let timeout_at = now + self.timers.transaction_timeout();
        let retransmit =
            (!peer.transport.is_reliable()).then(|| (now + self.timers.t1, self.timers.t1));
        let tx = Transaction {
            key: key.clone(),
            is_server: false,
            is_invite,
            state: if is_invite {
                TxState::Calling
            } else {
                TxState::Trying
            },
            peer,
            last_sent: payload.clone(),
            request: is_invite.then_some(request),
            ack: None,
            retransmit,
            deadline: Some(timeout_at),
        };
        self.transactions.insert(id, tx);
        self.index.insert(key, id);
        self.schedule(id, Slot::Deadline, timeout_at);
        if let Some((at, _)) = retransmit {
            self.schedule(id, Slot::Retransmit, at);
        }
        self.send(peer, payload);
        Ok(id)
    }

    /// Builds and sends a CANCEL for a client INVITE that has had a
    /// provisional response (RFC 3261 9.1).
    pub fn cancel(&mut self, now: Instant, invite: TxId) -> Result<TxId, TxError> {
        let tx = self
            .transactions
            .get(&invite)
            .ok_or(TxError::UnknownTransaction)?;
        let (TxState::Proceeding, Some(request)) = (tx.state, tx.request.as_ref()) else {
            return Err(TxError::InvalidState);
        };
        let mut cancel = Request::new(Method::Cancel, request.uri.clone());
        if let Some(via) = request.headers.get_list("Via").next() {
            cancel.headers.push("Via", via);
        }
        for name in ["Route", "From", "To", "Call-ID"] {
            for value in request.headers.get_all(name) {
                cancel.headers.push(name, value);
            }
        }
        let seq = request.headers.cseq().map_or(1, |c| c.seq);
        cancel.headers.push("CSeq", format!("{seq} CANCEL"));
        cancel.headers.push("Max-Forwards", "70");
        let peer = tx.peer;
        self.send_request(now, cancel, peer)
    }

    /// Feeds a response received from the network.
    pub fn receive_response(&mut self, now: Instant, response: Response, peer: Peer) {
        let Some(via) = response.headers.top_via() else {
            return;
        };
        let (Some(branch), Some(cseq)) = (via.branch(), response.cseq()) else {
            return;
        };
        let key = client_key(branch, &cseq.method);
        let Some(id) = self.index.get(&key).copied() else {
            if cseq.method == Method::Invite && response.is_success() {
                self.events
                    .push_back(TxEvent::StrayInviteSuccess { response, peer });
            }
            return;
        };
        let timers = self.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        if tx.is_server {
            return;
        }
        let reliable = tx.peer.transport.is_reliable();
        let status = response.status;
        let mut schedule = None;
        let mut remove = false;
        let mut send_ack = None;
        match (tx.is_invite, tx.state, status) {
            (true, TxState::Calling | TxState::Proceeding, 100..=199) => {
                // Timer B only guards the Calling state (17.1.1.2).
                tx.state = TxState::Proceeding;
                tx.retransmit = None;
                tx.deadline = None;
            }
            (true, TxState::Calling | TxState::Proceeding, 200..=299) => {
                tx.state = TxState::Accepted;
                tx.retransmit = None;
                let at = now + timers.transaction_timeout();
                tx.deadline = Some(at);
                schedule = Some(at);
            }
            (true, TxState::Accepted, 200..=299) => {}
            (true, TxState::Calling | TxState::Proceeding, _) => {
                tx.state = TxState::Completed;
                tx.retransmit = None;
                let ack = tx
                    .request
                    .as_ref()
                    .map(|invite| Bytes::from(ack_for_failure(invite, &response).to_bytes()));
                tx.ack = ack.clone();
                send_ack = ack;
                if reliable {
                    remove = true;
                } else {
                    let at = now + Duration::from_secs(32);
                    tx.deadline = Some(at);
                    schedule = Some(at);
                }
            }
            (true, TxState::Completed, 300..) => {
                // Retransmitted final: repeat the ACK, tell nobody.
                if let Some(ack) = tx.ack.clone() {
                    let peer = tx.peer;
                    self.send(peer, ack);
                }
                return;
            }
            (false, TxState::Trying | TxState::Proceeding, 100..=199) => {
                tx.state = TxState::Proceeding;
            }
            (false, TxState::Trying | TxState::Proceeding, _) => {
                tx.state = TxState::Completed;
                tx.retransmit = None;
                if reliable {
                    remove = true;
                } else {
                    let at = now + timers.t4;
                    tx.deadline = Some(at);
                    schedule = Some(at);
                }
            }
            _ => return,
        }
        let tx_peer = tx.peer;
        if let Some(ack) = send_ack {
            self.send(tx_peer, ack);
        }
        if let Some(at) = schedule {
            self.schedule(id, Slot::Deadline, at);
        }
        if remove {
            self.remove(id);
        }
        self.events.push_back(TxEvent::Response { id, response });
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id, slot))) = self.wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            match slot {
                Slot::Retransmit => self.fire_retransmit(now, id, at),
                Slot::Deadline => self.fire_deadline(id, at),
            }
        }
    }

    fn fire_retransmit(&mut self, now: Instant, id: TxId, at: Instant) {
        let timers = self.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        let Some((due, interval)) = tx.retransmit else {
            return;
        };
        if due != at {
            return;
        }
        let next_interval = match (tx.is_server, tx.is_invite, tx.state) {
            // Timer G: final response until ACK.
            (true, true, TxState::Completed) => interval.saturating_mul(2).min(timers.t2),
            // Timer A: doubles without a cap.
            (false, true, TxState::Calling) => interval.saturating_mul(2),
            // Timer E.
            (false, false, TxState::Trying) => interval.saturating_mul(2).min(timers.t2),
            (false, false, TxState::Proceeding) => timers.t2,
            _ => {
                tx.retransmit = None;
                return;
            }
        };
        let next = now + next_interval;
        tx.retransmit = Some((next, next_interval));
        let (peer, payload) = (tx.peer, tx.last_sent.clone());
        self.schedule(id, Slot::Retransmit, next);
        self.send(peer, payload);
    }

    fn fire_deadline(&mut self, id: TxId, at: Instant) {
        let Some(tx) = self.transactions.get(&id) else {
            return;
        };
        if tx.deadline != Some(at) {
            return;
        }
        let timed_out = match (tx.is_server, tx.state) {
            // Timer H: our non-2xx final was never acknowledged.
            (true, TxState::Completed) => tx.is_invite,
            // Timers B and F.
            (false, TxState::Calling | TxState::Trying | TxState::Proceeding) => true,
            _ => false,
        };
        self.remove(id);
        if timed_out {
            self.events.push_back(TxEvent::Timeout { id });
        }
    }
}

/// Where responses to `request` go (RFC 3261 18.2.2, RFC 3581): back on the
/// same connection for streams; for datagrams to `received`/`rport` or the
/// Via sent-by.
pub fn response_peer(request: &Request, source: Peer) -> Peer {
    if source.transport.is_reliable() {
        return source;
    }
    match request.top_via() {
        Some(via) => Peer {
            addr: via.response_target(source.addr),
            ..source
        },
        None => source,
    }
}

/// ACK for a non-2xx final response (RFC 3261 17.1.1.3): same branch and
/// Request-URI as the INVITE, To from the response.
fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get_list("Via").next() {
        ack.headers.push("Via", via);
    }
    for name in ["Route"] {
        for value in invite.headers.get_all(name) {
            ack.headers.push(name, value);
        }
    }
    if let Some(from) = invite.headers.get("From") {
        ack.headers.push("From", from);
    }
    if let Some(to) = response.headers.get("To") {
        ack.headers.push("To", to);
    }
    if let Some(call_id) = invite.headers.get("Call-ID") {
        ack.headers.push("Call-ID", call_id);
    }
    let seq = invite.headers.cseq().map_or(1, |c| c.seq);
    ack.headers.push("CSeq", format!("{seq} ACK"));
    ack.headers.push("Max-Forwards", "70");
    ack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, Uri};
    use crate::sip::parse::parse_message;
    use crate::sip::peer::ConnectionId;

    fn peer() -> Peer {
        Peer::udp("192.0.2.1:5060".parse().unwrap())
    }

    fn request(method: Method, branch: &str) -> Request {
        let mut r = Request::new(method.clone(), Uri::parse("sip:svc@192.0.2.2").unwrap());
        r.headers
            .push("Via", format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"));
        r.headers.push("From", "<sip:a@192.0.2.1>;tag=f1");
        r.headers.push("To", "<sip:svc@192.0.2.2>");
        r.headers.push("Call-ID", "call-1");
        r.headers.push("CSeq", format!("1 {method}"));
        r.headers.push("Max-Forwards", "70");
        r
    }

    fn drain(layer: &mut TransactionLayer) -> Vec<SipMessage> {
        std::iter::from_fn(|| layer.poll_transmit())
            .map(|t| parse_message(&t.payload).unwrap())
            .collect()
    }

    fn statuses(messages: &[SipMessage]) -> Vec<u16> {
        messages
            .iter()
            .filter_map(|m| match m {
                SipMessage::Response(r) => Some(r.status),
                SipMessage::Request(_) => None,
            })
            .collect()
    }

    fn new_server_tx(layer: &mut TransactionLayer, now: Instant, req: Request) -> TxId {
        layer.receive_request(now, req, peer());
        match layer.poll_event() {
            Some(TxEvent::Request { id, .. }) => id,
            other => panic!("expected request event, got {other:?}"),
        }
    }

    /// Runs timers until `end`, recording when each transmit happened.
    fn run_until(layer: &mut TransactionLayer, start: Instant, end: Instant) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(at) = layer.poll_timeout() {
            if at > end {
                break;
            }
            layer.handle_timeout(at);
            while layer.poll_transmit().is_some() {
                sent.push(at - start);
            }
        }
        sent
    }

    #[test]
    fn invite_server_sends_100_and_absorbs_retransmission() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let now = Instant::now();
        let id = new_server_tx(&mut layer, now, request(Method::Invite, "z9hG4bKa"));
        assert_eq!(statuses(&drain(&mut layer)), vec![100]);
        layer.receive_request(now, request(Method::Invite, "z9hG4bKa"), peer());
        assert_eq!(statuses(&drain(&mut layer)), vec![100]);
        assert!(
            layer.poll_event().is_none(),
            "retransmission must not reach the TU"
        );
        let ringing = Response::for_request(
            &request(Method::Invite, "z9hG4bKa"),
            180,
            "Ringing",
            Some("t"),
        );
        layer.respond(now, id, &ringing).unwrap();
        layer.receive_request(now, request(Method::Invite, "z9hG4bKa"), peer());
        assert_eq!(statuses(&drain(&mut layer)), vec![180, 180]);
    }

    #[test]
    fn invite_server_retransmits_final_on_timer_g_until_ack() {
        let timers = TimerConfig::default();
        let mut layer = TransactionLayer::new(timers);
        let start = Instant::now();
        let invite = request(Method::Invite, "z9hG4bKg");
        let id = new_server_tx(&mut layer, start, invite.clone());
        drain(&mut layer);
        layer
            .respond(
                start,
                id,
                &Response::for_request(&invite, 486, "Busy Here", Some("t")),
            )
            .unwrap();
        drain(&mut layer);
        let sent = run_until(&mut layer, start, start + Duration::from_millis(7600));
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        // G = 0.5, 1, 2, 4, 4 ... seconds after the previous send.
        assert_eq!(ms, vec![500, 1500, 3500, 7500]);
        // Request retransmission while Completed repeats the final.
        layer.receive_request(start, invite.clone(), peer());
        assert_eq!(statuses(&drain(&mut layer)), vec![486]);
        let mut ack = request(Method::Ack, "z9hG4bKg");
        ack.headers.set("To", "<sip:svc@192.0.2.2>;tag=t");
        layer.receive_request(start, ack.clone(), peer());
        assert_eq!(layer.state(id), Some(TxState::Confirmed));
        assert!(
            layer.poll_event().is_none(),
            "ACK for a non-2xx is absorbed"
        );
        let sent = run_until(&mut layer, start, start + Duration::from_secs(60));
        assert!(sent.is_empty());
        assert!(layer.is_empty(), "timer I removed the transaction");
    }

    #[test]
    fn invite_server_timer_h_reports_timeout() {
        let timers = TimerConfig::default();
        let mut layer = TransactionLayer::new(timers);
        let start = Instant::now();
        let invite = request(Method::Invite, "z9hG4bKh");
        let id = new_server_tx(&mut layer, start, invite.clone());
        layer
            .respond(
                start,
                id,
                &Response::for_request(&invite, 404, "Not Found", Some("t")),
            )
            .unwrap();
        drain(&mut layer);
        run_until(&mut layer, start, start + Duration::from_secs(40));
        assert_eq!(layer.poll_event(), Some(TxEvent::Timeout { id }));
        assert!(layer.is_empty());
    }

    #[test]
    fn invite_server_2xx_goes_to_accepted_and_ack_passes_to_tu() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let invite = request(Method::Invite, "z9hG4bKok");
        let id = new_server_tx(&mut layer, start, invite.clone());
        drain(&mut layer);
        let ok = Response::for_request(&invite, 200, "OK", Some("t"));
        layer.respond(start, id, &ok).unwrap();
        assert_eq!(layer.state(id), Some(TxState::Accepted));
        assert_eq!(statuses(&drain(&mut layer)), vec![200]);
        // Retransmitted INVITE is absorbed: 2xx retransmission is the TU's job.
        layer.receive_request(start, invite.clone(), peer());
        assert!(drain(&mut layer).is_empty());
        // TU retransmits go through.
        layer.respond(start, id, &ok).unwrap();
        assert_eq!(statuses(&drain(&mut layer)), vec![200]);
        let ack = request(Method::Ack, "z9hG4bKdifferent");
        layer.receive_request(start, ack, peer());
        assert!(matches!(layer.poll_event(), Some(TxEvent::Ack { .. })));
        // Timer L ends it.
        run_until(&mut layer, start, start + Duration::from_secs(33));
        assert!(layer.is_empty());
    }

    #[test]
    fn non_invite_server_repeats_final_and_timer_j() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let bye = request(Method::Bye, "z9hG4bKbye");
        let id = new_server_tx(&mut layer, start, bye.clone());
        assert!(
            drain(&mut layer).is_empty(),
            "no automatic 100 for non-INVITE"
        );
        layer.receive_request(start, bye.clone(), peer());
        assert!(
            drain(&mut layer).is_empty(),
            "Trying absorbs retransmissions"
        );
        layer
            .respond(start, id, &Response::for_request(&bye, 200, "OK", None))
            .unwrap();
        layer.receive_request(start, bye.clone(), peer());
        assert_eq!(statuses(&drain(&mut layer)), vec![200, 200]);
        assert!(layer.poll_event().is_none());
        assert_eq!(
            layer.respond(start, id, &Response::for_request(&bye, 200, "OK", None)),
            Err(TxError::InvalidState)
        );
        run_until(&mut layer, start, start + Duration::from_secs(31));
        assert_eq!(layer.len(), 1);
        run_until(&mut layer, start, start + Duration::from_secs(33));
        assert!(layer.is_empty());
    }

    #[test]
    fn tcp_non_invite_server_terminates_immediately() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let now = Instant::now();
        let bye = request(Method::Bye, "z9hG4bKt");
        layer.receive_request(
            now,
            bye.clone(),
            Peer::tcp("192.0.2.1:5060".parse().unwrap(), ConnectionId(3)),
        );
        let Some(TxEvent::Request { id, peer, .. }) = layer.poll_event() else {
            panic!()
        };
        assert_eq!(peer.connection, Some(ConnectionId(3)));
        layer
            .respond(now, id, &Response::for_request(&bye, 200, "OK", None))
            .unwrap();
        assert!(layer.is_empty());
        assert_eq!(
            layer.poll_transmit().unwrap().peer.connection,
            Some(ConnectionId(3))
        );
    }

    #[test]
    fn cancel_finds_its_invite() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let now = Instant::now();
        let invite_id = new_server_tx(&mut layer, now, request(Method::Invite, "z9hG4bKc"));
        let cancel = request(Method::Cancel, "z9hG4bKc");
        assert_eq!(layer.matching_invite(&cancel), Some(invite_id));
        let cancel_id = new_server_tx(&mut layer, now, cancel);
        assert_ne!(cancel_id, invite_id);
        assert_eq!(
            layer.matching_invite(&request(Method::Cancel, "z9hG4bKother")),
            None
        );
    }

    #[test]
    fn non_invite_client_timer_e_caps_at_t2_and_f_times_out() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let id = layer
            .send_request(start, request(Method::Bye, "z9hG4bKe"), peer())
            .unwrap();
        assert_eq!(drain(&mut layer).len(), 1);
        let sent = run_until(&mut layer, start, start + Duration::from_secs(40));
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(&ms[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
        assert!(ms.iter().all(|&t| t < 32_000));
        assert_eq!(layer.poll_event(), Some(TxEvent::Timeout { id }));
        assert!(layer.is_empty());
    }

    #[test]
    fn non_invite_client_gets_final_response_then_timer_k() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let bye = request(Method::Bye, "z9hG4bKk");
        let id = layer.send_request(start, bye.clone(), peer()).unwrap();
        drain(&mut layer);
        let ok = Response::for_request(&bye, 200, "OK", Some("x"));
        layer.receive_response(start, ok.clone(), peer());
        assert!(matches!(layer.poll_event(), Some(TxEvent::Response { id: got, .. }) if got == id));
        layer.receive_response(start, ok, peer());
        assert!(
            layer.poll_event().is_none(),
            "retransmitted final is absorbed"
        );
        let sent = run_until(&mut layer, start, start + Duration::from_secs(10));
        assert!(
            sent.is_empty(),
            "no retransmission after the final response"
        );
        assert!(layer.is_empty());
    }

    #[test]
    fn invite_client_timer_a_doubles_and_b_times_out() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let id = layer
            .send_request(start, request(Method::Invite, "z9hG4bKa1"), peer())
            .unwrap();
        drain(&mut layer);
        let sent = run_until(&mut layer, start, start + Duration::from_secs(40));
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(layer.poll_event(), Some(TxEvent::Timeout { id }));
    }

    #[test]
    fn invite_client_acks_failure_and_repeats_ack() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let invite = request(Method::Invite, "z9hG4bKf");
        let id = layer.send_request(start, invite.clone(), peer()).unwrap();
        drain(&mut layer);
        layer.receive_response(
            start,
            Response::for_request(&invite, 180, "Ringing", Some("r")),
            peer(),
        );
        assert_eq!(layer.state(id), Some(TxState::Proceeding));
        let busy = Response::for_request(&invite, 486, "Busy Here", Some("r"));
        layer.receive_response(start, busy.clone(), peer());
        let sent = drain(&mut layer);
        let SipMessage::Request(ack) = &sent[0] else {
            panic!()
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKf"));
        assert_eq!(ack.headers.to().unwrap().tag(), Some("r"));
        assert_eq!(ack.headers.cseq().unwrap().method, Method::Ack);
        layer.receive_response(start, busy, peer());
        assert_eq!(
            drain(&mut layer).len(),
            1,
            "ACK repeated for the retransmitted final"
        );
        let events: Vec<_> = std::iter::from_fn(|| layer.poll_event()).collect();
        assert_eq!(events.len(), 2, "180 and 486 reported once each");
    }

    #[test]
    fn invite_client_cancel_and_2xx_accepted() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let start = Instant::now();
        let invite = request(Method::Invite, "z9hG4bKcc");
        let id = layer.send_request(start, invite.clone(), peer()).unwrap();
        assert_eq!(layer.cancel(start, id), Err(TxError::InvalidState));
        layer.receive_response(
            start,
            Response::for_request(&invite, 100, "Trying", None),
            peer(),
        );
        let cancel_id = layer.cancel(start, id).unwrap();
        let sent = drain(&mut layer);
        let SipMessage::Request(cancel) = sent.last().unwrap() else {
            panic!()
        };
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKcc"));
        assert_ne!(cancel_id, id);
        let ok = Response::for_request(&invite, 200, "OK", Some("r"));
        layer.receive_response(start, ok.clone(), peer());
        assert_eq!(layer.state(id), Some(TxState::Accepted));
        layer.receive_response(start, ok, peer());
        let events: Vec<_> = std::iter::from_fn(|| layer.poll_event()).collect();
        assert_eq!(events.len(), 3, "100 + both 2xx reach the TU");
    }

    #[test]
    fn stray_invite_2xx_is_reported() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let invite = request(Method::Invite, "z9hG4bKgone");
        layer.receive_response(
            Instant::now(),
            Response::for_request(&invite, 200, "OK", Some("r")),
            peer(),
        );
        assert!(matches!(
            layer.poll_event(),
            Some(TxEvent::StrayInviteSuccess { .. })
        ));
        layer.receive_response(
            Instant::now(),
            Response::for_request(&invite, 486, "Busy", Some("r")),
            peer(),
        );
        assert!(layer.poll_event().is_none());
    }

    #[test]
    fn server_transaction_cap_answers_503() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        layer.set_max_server_transactions(1);
        let now = Instant::now();
        new_server_tx(&mut layer, now, request(Method::Options, "z9hG4bK1"));
        layer.receive_request(now, request(Method::Options, "z9hG4bK2"), peer());
        assert!(layer.poll_event().is_none());
        assert_eq!(statuses(&drain(&mut layer)), vec![503]);
    }

    #[test]
    fn rfc2543_requests_without_cookie_still_match() {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let now = Instant::now();
        let mut invite = request(Method::Invite, "old");
        invite.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060");
        new_server_tx(&mut layer, now, invite.clone());
        layer.receive_request(now, invite, peer());
        assert!(layer.poll_event().is_none());
    }
}
