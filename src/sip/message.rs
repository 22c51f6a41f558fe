//! SIP message model: requests, responses, ordered headers and the typed
//! views (Via, name-addr, CSeq, URI) the transaction and dialog layers need.
//!
//! Headers are kept verbatim and in order so that a message we relay or
//! answer keeps what the peer sent; typed accessors parse on demand. Every
//! accessor returns `Option`/`Result` instead of panicking because values come
//! straight off the wire.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

/// The `branch` prefix that marks an RFC 3261 (not RFC 2543) transaction id.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// SIP request methods; anything else is kept as [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Update,
    Info,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    /// Methods are case-sensitive tokens (RFC 3261 7.1), so `invite` is an
    /// extension method, not INVITE.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compact header forms (RFC 3261 7.3.3 and later RFCs).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        b'x' => "Session-Expires",
        _ => name,
    }
}

/// Whether a header name as received (possibly compact, any case) denotes `wanted`.
pub fn header_name_is(actual: &str, wanted: &str) -> bool {
    expand_compact(actual).eq_ignore_ascii_case(expand_compact(wanted))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Ordered header list with case-insensitive, compact-form-aware lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Header>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Inserts before every other header: used for the Via we add on top.
    pub fn push_front(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(
            0,
            Header {
                name: name.into(),
                value: value.into(),
            },
        );
    }

    /// First value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|h| header_name_is(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// Every header line with this name, unsplit.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |h| header_name_is(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// Every element of a comma-separated list header (Via, Route, Contact...),
    /// across all header lines, in order.
    pub fn get_list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).flat_map(split_list)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Replaces every occurrence with one header at the position of the first.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .entries
            .iter()
            .position(|h| header_name_is(&h.name, name))
        {
            Some(first) => {
                self.entries[first].value = value;
                let mut index = 0;
                self.entries.retain(|h| {
                    let keep = index <= first || !header_name_is(&h.name, name);
                    index += 1;
                    keep
                });
            }
            None => self.push(name.to_owned(), value),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|h| !header_name_is(&h.name, name));
    }

    /// Mutable access to the first header with this name.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        self.entries
            .iter_mut()
            .find(|h| header_name_is(&h.name, name))
            .map(|h| &mut h.value)
    }

    /// Owned (name, value) pairs for handing to the application.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    }

    pub fn via(&self) -> Vec<Via> {
        self.get_list("Via")
            .filter_map(|v| Via::parse(v).ok())
            .collect()
    }

    pub fn top_via(&self) -> Option<Via> {
        self.get_list("Via").next().and_then(|v| Via::parse(v).ok())
    }

    pub fn from(&self) -> Option<NameAddr> {
        self.get("From").and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn to(&self) -> Option<NameAddr> {
        self.get("To").and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID").map(str::trim).filter(|s| !s.is_empty())
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.get("CSeq").and_then(|v| CSeq::parse(v).ok())
    }

    pub fn contact(&self) -> Option<NameAddr> {
        self.get_list("Contact")
            .next()
            .and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn max_forwards(&self) -> Option<u8> {
        self.get("Max-Forwards").and_then(|v| v.trim().parse().ok())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("Content-Length")
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type").map(str::trim)
    }

    pub fn record_route(&self) -> Vec<String> {
        self.get_list("Record-Route").map(str::to_owned).collect()
    }

    pub fn route(&self) -> Vec<String> {
        self.get_list("Route").map(str::to_owned).collect()
    }

    fn write(&self, out: &mut Vec<u8>) {
        for header in &self.entries {
            // Content-Length is written from the real body length instead.
            if header_name_is(&header.name, "Content-Length") {
                continue;
            }
            out.extend_from_slice(header.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Splits a header value on commas that are not inside quotes or `<...>`.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let s = rest?;
            let mut in_quotes = false;
            let mut in_angle = false;
            let mut escaped = false;
            let mut cut = None;
            for (i, b) in s.bytes().enumerate() {
                if escaped {
                    escaped = false;
                    continue;
                }
                match b {
                    b'\\' if in_quotes => escaped = true,
                    b'"' => in_quotes = !in_quotes,
                    b'<' if !in_quotes => in_angle = true,
                    b'>' if !in_quotes => in_angle = false,
                    b',' if !in_quotes && !in_angle => {
                        cut = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let item = match cut {
                Some(i) => {
                    rest = Some(&s[i + 1..]);
                    &s[..i]
                }
                None => {
                    rest = None;
                    s
                }
            };
            let item = item.trim();
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// A header value that does not follow its grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed header value")]
pub struct InvalidValue;

/// `;name=value` parameters, split on semicolons outside quotes.
pub type Params = Vec<(String, Option<String>)>;

fn parse_params(s: &str) -> Result<Params, InvalidValue> {
    let mut params = Params::new();
    let mut in_quotes = false;
    let mut start = 0;
    let bytes = s.as_bytes();
    for i in 0..=bytes.len() {
        let at_end = i == bytes.len();
        if !at_end && bytes[i] == b'"' {
            in_quotes = !in_quotes;
        }
        if at_end || (bytes[i] == b';' && !in_quotes) {
            let piece = s[start..i].trim();
            start = i + 1;
            if piece.is_empty() {
                continue;
            }
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
                None => (piece, None),
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(InvalidValue);
            }
            params.push((name.to_owned(), value));
        }
    }
    if in_quotes {
        return Err(InvalidValue);
    }
    Ok(params)
}

fn find_param<'a>(params: &'a Params, name: &str) -> Option<&'a Option<String>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn write_params(params: &Params, out: &mut String) {
    for (name, value) in params {
        out.push(';');
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
}

/// RFC 3261 token characters (header names, methods, parameter names).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    MissingScheme,
    BadScheme,
    BadUser,
    BadHost,
    BadPort,
    BadParams,
    IllegalCharacter,
}

/// A URI as seen in a Request-URI, name-addr or Route. `sip:`/`sips:` URIs
/// are parsed into parts; other schemes (`tel:`...) keep only the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    raw: String,
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Uri {
    pub fn parse(raw: &str) -> Result<Uri, UriError> {
        let raw = raw.trim();
        if raw
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(UriError::IllegalCharacter);
        }
        let (scheme, rest) = raw.split_once(':').ok_or(UriError::MissingScheme)?;
        let scheme_ok = scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(UriError::BadScheme);
        }
        if rest.is_empty() {
            return Err(UriError::BadHost);
        }
        let is_sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
        if !is_sip {
            return Ok(Uri {
                raw: raw.to_owned(),
                scheme: scheme.to_ascii_lowercase(),
                user: None,
                host: String::new(),
                port: None,
                params: Params::new(),
            });
        }
        // URI headers (`?...`) are never needed here; keep them only in `raw`.
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let user = match userinfo {
            Some(info) => {
                let user = info.split_once(':').map_or(info, |(u, _)| u);
                let user_ok = !user.is_empty()
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,;?/#".contains(&b));
                if !user_ok {
                    return Err(UriError::BadUser);
                }
                Some(user.to_owned())
            }
            None => None,
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((hp, p)) => (hp, parse_params(p).map_err(|_| UriError::BadParams)?),
            None => (hostpart, Params::new()),
        };
        let (host, port) = split_host_port(hostport).ok_or(UriError::BadHost)?;
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| UriError::BadPort)?),
            None => None,
        };
        Ok(Uri {
            raw: raw.to_owned(),
            scheme: scheme.to_ascii_lowercase(),
            user,
            host: host.to_owned(),
            port,
            params,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    pub fn param(&self, name: &str) -> Option<&Option<String>> {
        find_param(&self.params, name)
    }

    /// Whether `;lr` marks this hop as a loose router (RFC 3261 16.12).
    pub fn is_loose_router(&self) -> bool {
        self.param("lr").is_some()
    }

    /// The socket address when the host is an IP literal; DNS is not done here.
    pub fn socket_addr(&self, default_port: u16) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port.unwrap_or(default_port)))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits `host[:port]`, including bracketed IPv6 literals, and checks the
/// host characters. The port is returned unparsed.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    let s = s.trim();
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let host = &s[..=close];
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match &s[close + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return None;
        }
        (host, port)
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some((host, port))
}

/// One Via header element: `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, InvalidValue> {
        let value = value.trim();
        // The protocol may contain LWS around the slashes (RFC 3261 25.1).
        let mut parts = value.splitn(3, '/');
        let name = parts.next().ok_or(InvalidValue)?.trim();
        let version = parts.next().ok_or(InvalidValue)?.trim();
        let rest = parts.next().ok_or(InvalidValue)?.trim_start();
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(InvalidValue);
        }
        let transport_end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .ok_or(InvalidValue)?;
        let transport = &rest[..transport_end];
        if transport.is_empty() || !transport.bytes().all(is_token_byte) {
            return Err(InvalidValue);
        }
        let sent_by_and_params = rest[transport_end..].trim_start();
        let (sent_by, params) = match sent_by_and_params.split_once(';') {
            Some((s, p)) => (s, parse_params(p)?),
            None => (sent_by_and_params, Params::new()),
        };
        let (host, port) = split_host_port(sent_by).ok_or(InvalidValue)?;
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| InvalidValue)?),
            None => None,
        };
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").and_then(|v| v.as_deref())
    }

    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").and_then(|v| v.as_deref())
    }

    /// `None`: no rport; `Some(None)`: bare `;rport` asking for it to be
    /// filled; `Some(Some(port))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.as_deref().and_then(|p| p.parse().ok()))
    }

    /// `host:port` as used for transaction matching.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host.to_ascii_lowercase()),
            None => self.host.to_ascii_lowercase(),
        }
    }

    fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(entry) => entry.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
    }

    /// RFC 3261 18.2.1 and RFC 3581 4: note where the request really came
    /// from so the response finds its way back through NAT.
    pub fn stamp_source(&mut self, source: SocketAddr) {
        let source_ip = source.ip().to_string();
        let sent_by_ip: Option<IpAddr> = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        let wants_rport = self.rport().is_some();
        if wants_rport || sent_by_ip != Some(source.ip()) {
            self.set_param("received", Some(source_ip));
        }
        if wants_rport {
            self.set_param("rport", Some(source.port().to_string()));
        }
    }

    /// Where a response to this Via goes over an unreliable transport
    /// (RFC 3261 18.2.2, RFC 3581 4). Falls back to `source` when the Via
    /// names a host we would need DNS for.
    pub fn response_target(&self, source: SocketAddr) -> SocketAddr {
        let ip = self
            .received()
            .and_then(|r| {
                r.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            })
            .or_else(|| {
                self.host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            });
        let Some(ip) = ip else {
            return source;
        };
        let port = match self.rport() {
            Some(Some(port)) => port,
            _ => self.port.unwrap_or(5060),
        };
        SocketAddr::new(ip, port)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("SIP/2.0/{} {}", self.transport, self.host);
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        write_params(&self.params, &mut out);
        f.write_str(&out)
    }
}

/// `"Display" <sip:user@host>;tag=abc` or the bare addr-spec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, InvalidValue> {
        let value = value.trim();
        let (display, after_display) = if let Some(rest) = value.strip_prefix('"') {
            let mut escaped = false;
            let mut close = None;
            for (i, b) in rest.bytes().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or(InvalidValue)?;
            let display = rest[..close].replace("\\\"", "\"").replace("\\\\", "\\");
            (Some(display), rest[close + 1..].trim_start())
        } else if let Some(lt) = value.find('<') {
            let display = value[..lt].trim();
            (
                (!display.is_empty()).then(|| display.to_owned()),
                &value[lt..],
            )
        } else {
            (None, value)
        };
        let (uri_text, params_text) = if let Some(rest) = after_display.strip_prefix('<') {
            let close = rest.find('>').ok_or(InvalidValue)?;
            (&rest[..close], &rest[close + 1..])
        } else {
            if display.is_some() {
                return Err(InvalidValue);
            }
            // addr-spec form: parameters after the URI belong to the header.
            match after_display.find(';') {
                Some(semi) => (&after_display[..semi], &after_display[semi..]),
                None => (after_display, ""),
            }
        };
        let uri = Uri::parse(uri_text).map_err(|_| InvalidValue)?;
        let params_text = params_text.trim();
        let params = if params_text.is_empty() {
            Params::new()
        } else {
            parse_params(params_text.strip_prefix(';').ok_or(InvalidValue)?)?
        };
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").and_then(|v| v.as_deref())
    }

    pub fn user(&self) -> Option<&str> {
        self.uri.user.as_deref()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if let Some(display) = &self.display {
            out.push('"');
            out.push_str(&display.replace('\\', "\\\\").replace('"', "\\\""));
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(self.uri.as_str());
        out.push('>');
        write_params(&self.params, &mut out);
        f.write_str(&out)
    }
}

/// Appends `;tag=...` to a From/To value unless it already carries one.
pub fn with_tag(value: &str, tag: &str) -> String {
    match NameAddr::parse(value) {
        Ok(addr) if addr.tag().is_some() => value.to_owned(),
        _ => format!("{};tag={tag}", value.trim()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, InvalidValue> {
        let mut parts = value.split_ascii_whitespace();
        let seq_text = parts.next().ok_or(InvalidValue)?;
        let method_text = parts.next().ok_or(InvalidValue)?;
        if parts.next().is_some() || !method_text.bytes().all(is_token_byte) {
            return Err(InvalidValue);
        }
        // RFC 3261 8.1.1.5: the sequence number must be below 2**31.
        let seq: u32 = seq_text.parse().map_err(|_| InvalidValue)?;
        if seq >= 1 << 31 {
            return Err(InvalidValue);
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method_text),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

fn write_tail(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    headers.write(out);
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::with_capacity(10),
            body: Bytes::new(),
        }
    }

    /// Wire form. Content-Length always reflects the body actually sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_str().as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_tail(&self.headers, &self.body, &mut out);
        out
    }

    pub fn top_via(&self) -> Option<Via> {
        self.headers.top_via()
    }

    pub fn body_text(&self) -> Option<String> {
        (!self.body.is_empty()).then(|| String::from_utf8_lossy(&self.body).into_owned())
    }

    /// Rewrites the top Via with `received`/`rport` for where it came from.
    pub fn stamp_via_source(&mut self, source: SocketAddr) {
        for header in self.headers.entries.iter_mut() {
            if !header_name_is(&header.name, "Via") {
                continue;
            }
            let mut items = split_list(&header.value);
            let Some(first) = items.next() else {
                continue;
            };
            if let Ok(mut via) = Via::parse(first) {
                via.stamp_source(source);
                let rest: Vec<&str> = items.collect();
                let mut value = via.to_string();
                for item in rest {
                    value.push_str(", ");
                    value.push_str(item);
                }
                header.value = value;
            }
            return;
        }
    }
}

impl Response {
    /// Response skeleton for `request` (RFC 3261 8.2.6.2): Via, From, To,
    /// Call-ID and CSeq copied; `to_tag` is added to To when it has none.
    pub fn for_request(
        request: &Request,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Response {
        Response::from_request_headers(&request.headers, status, reason, to_tag)
    }

    pub fn from_request_headers(
        headers: &Headers,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Response {
        let mut out = Headers::with_capacity(10);
        for header in headers.iter() {
            if header_name_is(&header.name, "Via") {
                out.push("Via", header.value.clone());
            }
        }
        if let Some(from) = headers.get("From") {
            out.push("From", from);
        }
        if let Some(to) = headers.get("To") {
            let to = match to_tag {
                Some(tag) if status > 100 => with_tag(to, tag),
                _ => to.to_owned(),
            };
            out.push("To", to);
        }
        if let Some(call_id) = headers.get("Call-ID") {
            out.push("Call-ID", call_id);
        }
        if let Some(cseq) = headers.get("CSeq") {
            out.push("CSeq", cseq);
        }
        Response {
            status,
            reason: sanitize_reason(reason),
            headers: out,
            body: Bytes::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_tail(&self.headers, &self.body, &mut out);
        out
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.cseq()
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
    }
}

/// Reason phrases may come from the application; a CR or LF would let it
/// inject headers.
pub fn sanitize_reason(reason: &str) -> String {
    reason.chars().filter(|c| !c.is_control()).collect()
}

/// Default reason phrases for the statuses we send.
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Request Failure",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_understands_compact_forms() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a.example;branch=z9hG4bK1");
        h.push("CALL-ID", "abc");
        h.push("l", "0");
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a.example;branch=z9hG4bK1"));
        assert_eq!(h.get("call-id"), Some("abc"));
        assert_eq!(h.get("i"), Some("abc"));
        assert_eq!(h.content_length(), Some(0));
    }

    #[test]
    fn list_headers_split_on_commas_outside_quotes_and_brackets() {
        let items: Vec<&str> =
            split_list(r#""Smith, J" <sip:a@b;x=1,2>, <sip:c@d> , sip:e@f"#).collect();
        assert_eq!(
            items,
            vec![r#""Smith, J" <sip:a@b;x=1,2>"#, "<sip:c@d>", "sip:e@f"]
        );
    }

    #[test]
    fn set_replaces_all_occurrences_in_place() {
        let mut h = Headers::new();
        h.push("A", "1");
        h.push("X", "old1");
        h.push("B", "2");
        h.push("x", "old2");
        h.set("X", "new");
        let names: Vec<_> = h
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(names, vec![("A", "1"), ("X", "new"), ("B", "2")]);
    }

    #[test]
    fn via_parses_branch_rport_and_lws_in_protocol() {
        let via = Via::parse("SIP / 2.0 / udp 10.0.0.1:5062;rport;branch=z9hG4bKabc").unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, "10.0.0.1");
        assert_eq!(via.port, Some(5062));
        assert_eq!(via.branch(), Some("z9hG4bKabc"));
        assert_eq!(via.rport(), Some(None));
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/3.0/UDP host").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:99999").is_err());
    }

    #[test]
    fn rport_and_received_are_stamped_per_rfc3581() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut via = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1").unwrap();
        via.stamp_source(src);
        assert_eq!(via.received(), Some("192.0.2.7"));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.response_target(src), src);

        // Without rport: received only when the address differs, port from sent-by.
        let mut via = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1").unwrap();
        via.stamp_source(src);
        assert_eq!(via.received(), Some("192.0.2.7"));
        assert_eq!(via.rport(), None);
        assert_eq!(via.response_target(src), "192.0.2.7:5070".parse().unwrap());

        let mut via = Via::parse("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1").unwrap();
        via.stamp_source(src);
        assert_eq!(via.received(), None);
        assert_eq!(via.response_target(src), "192.0.2.7:5060".parse().unwrap());
    }

    #[test]
    fn name_addr_forms() {
        let a =
            NameAddr::parse(r#""Alice \"A\" Smith" <sip:alice@example.com;transport=udp>;tag=9fx"#)
                .unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"Alice "A" Smith"#));
        assert_eq!(a.uri.user.as_deref(), Some("alice"));
        assert_eq!(a.tag(), Some("9fx"));
        assert!(a.uri.param("transport").is_some());

        let b = NameAddr::parse("sip:bob@example.com;tag=1").unwrap();
        assert_eq!(b.tag(), Some("1"));
        assert!(b.uri.params.is_empty());

        let c = NameAddr::parse("Bob <sip:+441234@trunk.example:5080>").unwrap();
        assert_eq!(c.display.as_deref(), Some("Bob"));
        assert_eq!(c.uri.port, Some(5080));
        assert!(c.tag().is_none());

        assert!(NameAddr::parse("\"unterminated <sip:a@b>").is_err());
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn uri_validation() {
        let u = Uri::parse("sip:+441632960000;npdi@[2001:db8::1]:5061;transport=tcp").unwrap();
        assert_eq!(u.user.as_deref(), Some("+441632960000;npdi"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(
            u.socket_addr(5060),
            Some("[2001:db8::1]:5061".parse().unwrap())
        );
        assert!(Uri::parse("tel:+441632960000").is_ok());
        for bad in [
            "",
            "nocolon",
            "sip:",
            "sip:a b@c",
            "sip:user@",
            "sip:host:port",
            "1sip:x",
            "sip:a@h:70000",
            "sip:<x>",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cseq_parse() {
        assert_eq!(
            CSeq::parse(" 314159  INVITE ").unwrap(),
            CSeq {
                seq: 314159,
                method: Method::Invite
            }
        );
        assert!(CSeq::parse("INVITE 1").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("4294967296 BYE").is_err());
        assert!(CSeq::parse("2147483648 BYE").is_err());
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_tag_and_length() {
        let mut req = Request::new(Method::Invite, Uri::parse("sip:a@b").unwrap());
        req.headers.push("Via", "SIP/2.0/UDP h1;branch=z9hG4bK1");
        req.headers.push("Via", "SIP/2.0/UDP h2;branch=z9hG4bK2");
        req.headers.push("From", "<sip:x@y>;tag=f");
        req.headers.push("To", "<sip:a@b>");
        req.headers.push("Call-ID", "cid");
        req.headers.push("CSeq", "1 INVITE");
        req.headers.push("Subject", "not copied");
        let resp = Response::for_request(&req, 486, "Busy\r\nX-Injected: 1", Some("ourtag"));
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 486 BusyX-Injected: 1\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP h2"));
        assert!(text.contains("To: <sip:a@b>;tag=ourtag\r\n"));
        assert!(!text.contains("Subject"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // 100 Trying carries no To tag.
        let trying = Response::for_request(&req, 100, "Trying", Some("ourtag"));
        assert_eq!(trying.headers.get("To"), Some("<sip:a@b>"));
    }
}
