//! Digest authentication (RFC 3261 §22, RFC 8760) and the registrar that
//! agents' softphones REGISTER with.
//!
//! Sans-IO like the rest of the stack: the [`Registrar`] is fed requests and
//! `Instant`s by the user-agent core and answers with responses and
//! [`RegistrationEvent`]s. Nonces are stateless (a timestamp and a keyed
//! hash of it and the client's address), so a flood of unauthenticated
//! REGISTERs costs no memory.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::message::{Method, NameAddr, Request, Response, Uri, default_reason};
use super::peer::Peer;

/// Hash algorithms a challenge may name, in the order they are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    pub fn parse(name: &str) -> Option<DigestAlgorithm> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(self, input: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex(&Md5::digest(input.as_bytes())),
            DigestAlgorithm::Sha256 => hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed response was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A password that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One agent allowed to register: the user part of its address of record.
#[derive(Debug, Clone)]
pub struct AgentAccount {
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub realm: String,
    pub accounts: Vec<AgentAccount>,
    /// Offered in this order (RFC 8760: most preferred first).
    pub algorithms: Vec<DigestAlgorithm>,
    pub nonce_ttl: Duration,
    pub min_expires: Duration,
    pub max_expires: Duration,
    pub default_expires: Duration,
    /// Wrong answers to a challenge, per user and source address, before
    /// further attempts get 403 until `failure_window` has passed.
    pub max_failures: u32,
    pub failure_window: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            realm: "frontdoor".to_owned(),
            accounts: Vec::new(),
            // SHA-256 is opt-in: some phones (baresip 1.0) give up when
            // offered it at all.
            algorithms: vec![DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            min_expires: Duration::from_secs(30),
            max_expires: Duration::from_secs(3600),
            default_expires: Duration::from_secs(600),
            max_failures: 3,
            failure_window: Duration::from_secs(300),
        }
    }
}

/// Where a registered agent's phone can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub contact: Uri,
    /// Where the REGISTER came from: the address that reaches a phone
    /// behind NAT even when its Contact is a private address.
    pub source: Peer,
    pub expires_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterReason {
    /// The phone sent `Expires: 0`.
    Removed,
    /// It did not refresh in time.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    Registered {
        user: String,
        contact: Uri,
        source: Peer,
        expires: Duration,
    },
    Unregistered {
        user: String,
        reason: UnregisterReason,
    },
    /// A REGISTER was refused (wrong credentials, locked out, unknown user).
    /// The username is what the client claimed; the password is never kept.
    Refused {
        user: Option<String>,
        source: SocketAddr,
        status: u16,
    },
}

/// The `Authorization` header's fields that the check needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

/// Longest field accepted in an Authorization header; real values are a
/// few dozen characters.
const MAX_FIELD: usize = 512;

impl DigestCredentials {
    /// Parses `Digest k=v, k="v", ...`; `None` for another scheme or a
    /// malformed header.
    pub fn parse(header: &str) -> Option<DigestCredentials> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut out = DigestCredentials::default();
        for (name, value) in parse_auth_params(rest)? {
            if value.len() > MAX_FIELD {
                return None;
            }
            match name.to_ascii_lowercase().as_str() {
                "username" => out.username = value,
                "realm" => out.realm = value,
                "nonce" => out.nonce = value,
                "uri" => out.uri = value,
                "response" => out.response = value.to_ascii_lowercase(),
                "algorithm" => out.algorithm = Some(value),
                "cnonce" => out.cnonce = Some(value),
                "qop" => out.qop = Some(value),
                "nc" => out.nc = Some(value),
                _ => {}
            }
        }
        (!out.username.is_empty() && !out.nonce.is_empty() && !out.response.is_empty())
            .then_some(out)
    }

    /// The expected `response` for this request and password.
    pub fn expected_response(
        &self,
        algorithm: DigestAlgorithm,
        method: &str,
        password: &str,
    ) -> String {
        let ha1 = algorithm.hash_hex(&format!("{}:{}:{}", self.username, self.realm, password));
        let ha2 = algorithm.hash_hex(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.cnonce, &self.nc) {
            (Some(qop), Some(cnonce), Some(nc)) => {
                algorithm.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            _ => algorithm.hash_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }
}

/// Splits `a=b, c="d, e"` into pairs, honouring quotes and escapes.
fn parse_auth_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if pairs.len() >= 32 {
            return None;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => {
                        out.push(c);
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => out.push(c),
                }
            }
            let end = end?;
            value = out;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if name.is_empty() {
            return None;
        }
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Caps the lock-out table so a scan of usernames cannot grow it forever.
const MAX_FAILURE_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

pub struct Registrar {
    config: RegistrarConfig,
    passwords: HashMap<String, Secret>,
    secret: [u8; 32],
    /// Nonce timestamps count seconds from here.
    epoch: Instant,
    bindings: HashMap<String, Binding>,
    failures: HashMap<(String, IpAddr), Failures>,
    events: VecDeque<RegistrationEvent>,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("realm", &self.config.realm)
            .field("accounts", &self.passwords.len())
            .field("bindings", &self.bindings.len())
            .finish()
    }
}

enum Check {
    Ok,
    /// Right password, old nonce: challenge again with `stale=true`.
    Stale,
    Wrong,
}

impl Registrar {
    /// `secret` keys the nonces; a random one per process is right (a
    /// restart only makes phones re-authenticate).
    pub fn new(mut config: RegistrarConfig, secret: [u8; 32], now: Instant) -> Registrar {
        if config.algorithms.is_empty() {
            config.algorithms = vec![DigestAlgorithm::Md5];
        }
        config.min_expires = config.min_expires.max(Duration::from_secs(1));
        config.max_expires = config.max_expires.max(config.min_expires);
        config.default_expires = config
            .default_expires
            .clamp(config.min_expires, config.max_expires);
        let passwords = config
            .accounts
            .iter()
            .map(|a| (a.user.clone(), a.password.clone()))
            .collect();
        Registrar {
            config,
            passwords,
            secret,
            epoch: now,
            bindings: HashMap::new(),
            failures: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    pub fn binding(&self, user: &str) -> Option<&Binding> {
        self.bindings.get(user)
    }

    pub fn bindings(&self) -> impl Iterator<Item = (&str, &Binding)> {
        self.bindings.iter().map(|(u, b)| (u.as_str(), b))
    }

    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings.values().map(|b| b.expires_at).min()
    }

    /// Drops bindings that were not refreshed in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.expires_at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for user in expired {
            self.bindings.remove(&user);
            tracing::info!(agent = %user, "registration expired");
            self.events.push_back(RegistrationEvent::Unregistered {
                user,
                reason: UnregisterReason::Expired,
            });
        }
    }

    fn nonce(&self, now: Instant, source: IpAddr) -> String {
        let stamp = now.saturating_duration_since(self.epoch).as_secs();
        format!("{stamp:x}{}", self.nonce_mac(stamp, source))
    }

    fn nonce_mac(&self, stamp: u64, source: IpAddr) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update(stamp.to_be_bytes());
        hasher.update(source.to_string().as_bytes());
        hex(&hasher.finalize()[..16])
    }

    /// `Some(fresh)` for a nonce we issued to this address; `None` for a
    /// forged one.
    fn nonce_is_fresh(&self, now: Instant, nonce: &str, source: IpAddr) -> Option<bool> {
        let split = nonce.len().checked_sub(32)?;
        let (stamp, mac) = (nonce.get(..split)?, nonce.get(split..)?);
        let stamp = u64::from_str_radix(stamp, 16).ok()?;
        if !constant_time_eq(mac.as_bytes(), self.nonce_mac(stamp, source).as_bytes()) {
            return None;
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .saturating_sub(stamp);
        Some(age <= self.config.nonce_ttl.as_secs())
    }

    fn check(&self, now: Instant, credentials: &DigestCredentials, source: IpAddr) -> Check {
        let algorithm = match credentials.algorithm.as_deref() {
            None => DigestAlgorithm::Md5,
            Some(name) => match DigestAlgorithm::parse(name) {
                Some(a) if self.config.algorithms.contains(&a) => a,
                _ => return Check::Wrong,
            },
        };
        if credentials.realm != self.config.realm
            || credentials.qop.as_deref().is_some_and(|q| q != "auth")
        {
            return Check::Wrong;
        }
        let Some(fresh) = self.nonce_is_fresh(now, &credentials.nonce, source) else {
            return Check::Wrong;
        };
        let Some(password) = self.passwords.get(&credentials.username) else {
            return Check::Wrong;
        };
        let expected =
            credentials.expected_response(algorithm, Method::Register.as_str(), password.expose());
        if !constant_time_eq(expected.as_bytes(), credentials.response.as_bytes()) {
            return Check::Wrong;
        }
        if fresh { Check::Ok } else { Check::Stale }
    }

    fn challenge(&self, now: Instant, request: &Request, source: IpAddr, stale: bool) -> Response {
        let mut response = Response::for_request(request, 401, default_reason(401), None);
        let nonce = self.nonce(now, source);
        for algorithm in &self.config.algorithms {
            let mut value = format!(
                "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                self.config.realm,
                algorithm.as_str()
            );
            if stale {
                value.push_str(", stale=true");
            }
            response.headers.push("WWW-Authenticate", value);
        }
        response
    }

    fn locked_out(&mut self, now: Instant, key: &(String, IpAddr)) -> bool {
        match self.failures.get(key) {
            Some(f) if now.saturating_duration_since(f.since) > self.config.failure_window => {
                self.failures.remove(key);
                false
            }
            Some(f) => f.count >= self.config.max_failures,
            None => false,
        }
    }

    fn record_failure(&mut self, now: Instant, key: (String, IpAddr)) {
        if self.failures.len() >= MAX_FAILURE_ENTRIES && !self.failures.contains_key(&key) {
            let window = self.config.failure_window;
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.since) <= window);
            if self.failures.len() >= MAX_FAILURE_ENTRIES {
                // Still full of live entries: an attack in progress. Forget
                // the oldest half rather than grow.
                let mut since: Vec<Instant> = self.failures.values().map(|f| f.since).collect();
                since.sort_unstable();
                let cut = since[since.len() / 2];
                self.failures.retain(|_, f| f.since > cut);
            }
        }
        let entry = self.failures.entry(key).or_insert(Failures {
            count: 0,
            since: now,
        });
        entry.count = entry.count.saturating_add(1);
    }

    fn refuse(&mut self, user: Option<String>, source: SocketAddr, status: u16) {
        tracing::warn!(agent = user.as_deref().unwrap_or("-"), %source, status, "REGISTER refused");
        self.events.push_back(RegistrationEvent::Refused {
            user,
            source,
            status,
        });
    }

    /// Answers one REGISTER. The response still needs the stack's Server
    /// header; everything else is in it.
    pub fn handle_register(&mut self, now: Instant, request: &Request, peer: Peer) -> Response {
        let source_ip = peer.addr.ip();
        let to_user = request
            .headers
            .to()
            .and_then(|t| t.uri.user.clone())
            .unwrap_or_default();
        let authorization = request
            .headers
            .get("Authorization")
            .and_then(DigestCredentials::parse);
        let Some(credentials) = authorization else {
            if request.headers.contains("Authorization") {
                self.refuse(Some(to_user), peer.addr, 400);
                return Response::for_request(request, 400, "Bad Authorization header", None);
            }
            return self.challenge(now, request, source_ip, false);
        };
        let key = (credentials.username.clone(), source_ip);
        if self.locked_out(now, &key) {
            self.refuse(Some(credentials.username.clone()), peer.addr, 403);
            return Response::for_request(request, 403, default_reason(403), None);
        }
        match self.check(now, &credentials, source_ip) {
            Check::Ok => {}
            Check::Stale => return self.challenge(now, request, source_ip, true),
            Check::Wrong => {
                self.record_failure(now, key.clone());
                let status = if self.locked_out(now, &key) { 403 } else { 401 };
                self.refuse(Some(credentials.username.clone()), peer.addr, status);
                return if status == 403 {
                    Response::for_request(request, 403, default_reason(403), None)
                } else {
                    self.challenge(now, request, source_ip, false)
                };
            }
        }
        self.failures.remove(&key);
        // An agent may only bind its own address of record.
        if to_user != credentials.username {
            self.refuse(Some(credentials.username.clone()), peer.addr, 403);
            return Response::for_request(request, 403, "Forbidden (To does not match user)", None);
        }
        self.update_binding(now, request, peer, credentials.username)
    }

    fn update_binding(
        &mut self,
        now: Instant,
        request: &Request,
        peer: Peer,
        user: String,
    ) -> Response {
        let header_expires = request
            .headers
            .get("Expires")
            .and_then(|e| e.trim().parse::<u64>().ok());
        let contact_value = request.headers.get("Contact").map(str::trim);
        if contact_value == Some("*") {
            if header_expires != Some(0) {
                return Response::for_request(request, 400, "Contact * needs Expires: 0", None);
            }
            return self.remove_binding(request, user);
        }
        let contact = match contact_value {
            None => {
                // A query: report the current binding.
                let mut response = Response::for_request(request, 200, "OK", None);
                if let Some(binding) = self.bindings.get(&user) {
                    let left = binding.expires_at.saturating_duration_since(now).as_secs();
                    response
                        .headers
                        .push("Contact", format!("<{}>;expires={left}", binding.contact));
                }
                return response;
            }
            Some(value) => match NameAddr::parse(value) {
                Ok(contact) => contact,
                Err(_) => return Response::for_request(request, 400, "Bad Contact", None),
            },
        };
        let contact_expires = contact
            .params
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let requested = contact_expires
            .or(header_expires)
            .map(Duration::from_secs)
            .unwrap_or(self.config.default_expires);
        if requested.is_zero() {
            return self.remove_binding(request, user);
        }
        if requested < self.config.min_expires {
            let mut response = Response::for_request(request, 423, default_reason(423), None);
            response
                .headers
                .push("Min-Expires", self.config.min_expires.as_secs().to_string());
            return response;
        }
        let expires = requested.min(self.config.max_expires);
        let binding = Binding {
            contact: contact.uri.clone(),
            source: peer,
            expires_at: now + expires,
        };
        let refreshed = self
            .bindings
            .get(&user)
            .is_some_and(|b| b.contact == binding.contact && b.source == binding.source);
        self.bindings.insert(user.clone(), binding);
        if !refreshed {
            tracing::info!(agent = %user, contact = %contact.uri, expires_s = expires.as_secs(), "agent registered");
        }
        self.events.push_back(RegistrationEvent::Registered {
            user,
            contact: contact.uri.clone(),
            source: peer,
            expires,
        });
        let mut response = Response::for_request(request, 200, "OK", None);
        response.headers.push(
            "Contact",
            format!("<{}>;expires={}", contact.uri, expires.as_secs()),
        );
        response
            .headers
            .push("Expires", expires.as_secs().to_string());
        response
    }

    fn remove_binding(&mut self, request: &Request, user: String) -> Response {
        if self.bindings.remove(&user).is_some() {
            tracing::info!(agent = %user, "agent unregistered");
            self.events.push_back(RegistrationEvent::Unregistered {
                user,
                reason: UnregisterReason::Removed,
            });
        }
        Response::for_request(request, 200, "OK", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use crate::sip::parse::parse_message;

    fn registrar(now: Instant) -> Registrar {
        Registrar::new(
            RegistrarConfig {
                accounts: vec![AgentAccount {
                    user: "agent1".into(),
                    password: Secret::new("s3cret"),
                }],
                algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
                ..RegistrarConfig::default()
            },
            [7; 32],
            now,
        )
    }

    fn peer() -> Peer {
        Peer::udp("192.0.2.50:5090".parse().unwrap())
    }

    fn register(user: &str, expires: u32, authorization: Option<&str>) -> Request {
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.50:5090;branch=z9hG4bKr1\r\n\
From: <sip:{user}@192.0.2.1>;tag=r1\r\n\
To: <sip:{user}@192.0.2.1>\r\n\
Call-ID: reg-1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:{user}@192.0.2.50:5090>;expires={expires}\r\n\
{auth}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    /// Answers a challenge the way a phone does.
    fn answer(
        challenge: &Response,
        algorithm: DigestAlgorithm,
        user: &str,
        password: &str,
    ) -> String {
        let header = challenge
            .headers
            .get_all("WWW-Authenticate")
            .find(|h| h.contains(algorithm.as_str()))
            .unwrap();
        let nonce = header
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut creds = DigestCredentials {
            username: user.into(),
            realm: "frontdoor".into(),
            nonce: nonce.into(),
            uri: "sip:192.0.2.1".into(),
            response: String::new(),
            algorithm: Some(algorithm.as_str().into()),
            cnonce: Some("abc".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
        };
        creds.response = creds.expected_response(algorithm, "REGISTER", password);
        format!(
            "Digest username=\"{user}\", realm=\"frontdoor\", nonce=\"{nonce}\", uri=\"sip:192.0.2.1\", response=\"{}\", algorithm={}, cnonce=\"abc\", qop=auth, nc=00000001",
            creds.response,
            algorithm.as_str()
        )
    }

    #[test]
    fn rfc2617_md5_example_response() {
        // RFC 2617 §3.5 worked example (the HTTP method there is GET).
        let creds = DigestCredentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: None,
            cnonce: Some("0a4f113b".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
        };
        assert_eq!(
            creds.expected_response(DigestAlgorithm::Md5, "GET", "Circle Of Life"),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn parses_quoted_fields_with_commas_and_escapes() {
        let parsed = DigestCredentials::parse(
            "Digest username=\"a\\\"b\", realm=\"x, y\", nonce=\"n\", uri=\"sip:h\", response=\"ABCD\", qop=auth, nc=00000001, cnonce=\"c\"",
        )
        .unwrap();
        assert_eq!(parsed.username, "a\"b");
        assert_eq!(parsed.realm, "x, y");
        assert_eq!(parsed.response, "abcd");
        assert_eq!(parsed.qop.as_deref(), Some("auth"));
        assert!(DigestCredentials::parse("Basic dXNlcjpwYXNz").is_none());
        assert!(DigestCredentials::parse("Digest username=\"unterminated").is_none());
        assert!(DigestCredentials::parse("Digest =x").is_none());
    }

    #[test]
    fn challenge_then_register_with_each_algorithm() {
        let now = Instant::now();
        for algorithm in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let mut reg = registrar(now);
            let challenge = reg.handle_register(now, &register("agent1", 120, None), peer());
            assert_eq!(challenge.status, 401);
            let offered: Vec<&str> = challenge.headers.get_all("WWW-Authenticate").collect();
            assert_eq!(offered.len(), 2);
            assert!(offered[0].contains("SHA-256") && offered[1].contains("MD5"));
            let auth = answer(&challenge, algorithm, "agent1", "s3cret");
            let ok = reg.handle_register(now, &register("agent1", 120, Some(&auth)), peer());
            assert_eq!(ok.status, 200, "{algorithm:?}");
            assert!(ok.headers.get("Contact").unwrap().contains("expires=120"));
            let binding = reg.binding("agent1").unwrap();
            assert_eq!(binding.contact.as_str(), "sip:agent1@192.0.2.50:5090");
            assert!(matches!(
                reg.poll_event(),
                Some(RegistrationEvent::Registered { ref user, expires, .. })
                    if user == "agent1" && expires == Duration::from_secs(120)
            ));
        }
    }

    #[test]
    fn wrong_password_gets_401_then_403_and_never_binds() {
        let now = Instant::now();
        let mut reg = registrar(now);
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let challenge = reg.handle_register(now, &register("agent1", 120, None), peer());
            let auth = answer(&challenge, DigestAlgorithm::Md5, "agent1", "guess");
            let response = reg.handle_register(now, &register("agent1", 120, Some(&auth)), peer());
            statuses.push(response.status);
        }
        assert_eq!(statuses, vec![401, 401, 403, 403, 403]);
        assert!(reg.binding("agent1").is_none());
        // Locked out even with the right password, until the window passes.
        let challenge = reg.handle_register(now, &register("agent1", 120, None), peer());
        let right = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let r = reg.handle_register(now, &register("agent1", 120, Some(&right)), peer());
        assert_eq!(r.status, 403);
        let later = now + Duration::from_secs(301);
        let challenge = reg.handle_register(later, &register("agent1", 120, None), peer());
        let right = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let r = reg.handle_register(later, &register("agent1", 120, Some(&right)), peer());
        assert_eq!(r.status, 200);
    }

    #[test]
    fn unknown_user_forged_nonce_and_other_aor_are_refused() {
        let now = Instant::now();
        let mut reg = registrar(now);
        let challenge = reg.handle_register(now, &register("mallory", 120, None), peer());
        let auth = answer(&challenge, DigestAlgorithm::Md5, "mallory", "x");
        let r = reg.handle_register(now, &register("mallory", 120, Some(&auth)), peer());
        assert_eq!(r.status, 401);
        let forged = auth.replace("nonce=\"", "nonce=\"0");
        let r = reg.handle_register(now, &register("mallory", 120, Some(&forged)), peer());
        assert_eq!(
            r.status, 401,
            "a forged nonce is a wrong answer, not a crash"
        );
        // agent1's credentials may not bind someone else's address.
        let challenge = reg.handle_register(now, &register("agent2", 120, None), peer());
        let auth = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let r = reg.handle_register(now, &register("agent2", 120, Some(&auth)), peer());
        assert_eq!(r.status, 403);
        assert_eq!(reg.bindings().count(), 0);
        // The same nonce from another address is not ours to accept.
        let challenge = reg.handle_register(now, &register("agent1", 120, None), peer());
        let auth = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let elsewhere = Peer::udp("198.51.100.1:5060".parse().unwrap());
        let r = reg.handle_register(now, &register("agent1", 120, Some(&auth)), elsewhere);
        assert_eq!(r.status, 401);
    }

    #[test]
    fn old_nonce_is_stale_and_bindings_expire() {
        let now = Instant::now();
        let mut reg = registrar(now);
        let challenge = reg.handle_register(now, &register("agent1", 60, None), peer());
        let auth = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let late = now + Duration::from_secs(400);
        let r = reg.handle_register(late, &register("agent1", 60, Some(&auth)), peer());
        assert_eq!(r.status, 401);
        assert!(
            r.headers
                .get("WWW-Authenticate")
                .unwrap()
                .contains("stale=true")
        );
        let r = reg.handle_register(now, &register("agent1", 60, Some(&auth)), peer());
        assert_eq!(r.status, 200);
        while reg.poll_event().is_some() {}
        assert_eq!(reg.poll_timeout(), Some(now + Duration::from_secs(60)));
        reg.handle_timeout(now + Duration::from_secs(59));
        assert!(reg.binding("agent1").is_some());
        reg.handle_timeout(now + Duration::from_secs(60));
        assert!(reg.binding("agent1").is_none());
        assert_eq!(
            reg.poll_event(),
            Some(RegistrationEvent::Unregistered {
                user: "agent1".into(),
                reason: UnregisterReason::Expired
            })
        );
    }

    #[test]
    fn too_brief_expiry_and_unregister() {
        let now = Instant::now();
        let mut reg = registrar(now);
        let challenge = reg.handle_register(now, &register("agent1", 5, None), peer());
        let auth = answer(&challenge, DigestAlgorithm::Md5, "agent1", "s3cret");
        let r = reg.handle_register(now, &register("agent1", 5, Some(&auth)), peer());
        assert_eq!(r.status, 423);
        assert_eq!(r.headers.get("Min-Expires"), Some("30"));
        let r = reg.handle_register(now, &register("agent1", 99999, Some(&auth)), peer());
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get("Expires"), Some("3600"));
        let r = reg.handle_register(now, &register("agent1", 0, Some(&auth)), peer());
        assert_eq!(r.status, 200);
        assert!(reg.binding("agent1").is_none());
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let account = AgentAccount {
            user: "agent1".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{account:?}").contains("hunter2"));
    }
}
