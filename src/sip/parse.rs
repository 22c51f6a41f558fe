//! Strict-but-safe SIP parser and TCP stream framing.
//!
//! The parser never trusts a length or a count from the wire: the message,
//! each line and the number of headers are capped before anything is
//! allocated for them. When a request is malformed but its Via, From, To,
//! Call-ID and CSeq survived, [`ParseError::bad_request`] builds the 400 so
//! the peer learns what was wrong instead of retransmitting into silence.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::message::{
    CSeq, Headers, Method, NameAddr, Request, Response, SipMessage, Uri, Via, header_name_is,
    is_token_byte,
};

/// Largest message accepted on any transport.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest single header line (after unfolding).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 256;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    #[error("message is empty")]
    Empty,
    #[error("message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("message contains a NUL byte")]
    NulByte,
    #[error("message is truncated")]
    Truncated,
    #[error("header section is not valid UTF-8")]
    InvalidUtf8,
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("invalid Request-URI")]
    BadRequestUri,
    #[error("malformed header line")]
    BadHeaderLine,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("body is shorter than Content-Length")]
    TruncatedBody,
}

/// What was wrong, plus (for requests) enough of the message to answer it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    respond_with: Option<Box<Headers>>,
    method: Option<Method>,
}

impl ParseError {
    fn bare(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            respond_with: None,
            method: None,
        }
    }

    /// Reason phrase for the 400, e.g. `Bad Request (missing Call-ID header)`.
    pub fn reason_phrase(&self) -> String {
        format!("Bad Request ({})", self.kind)
    }

    /// Whether [`Self::bad_request`] can build a response.
    pub fn is_respondable(&self) -> bool {
        self.respond_with.is_some()
    }

    /// The Call-ID, when the malformed request had a usable one (for logs).
    pub fn call_id(&self) -> Option<&str> {
        self.respond_with.as_ref().and_then(|h| h.call_id())
    }

    /// A 400 to send back, when the request carried the headers a response
    /// needs. Never for ACK (RFC 3261 17.2.1: ACKs are not answered).
    pub fn bad_request(&self, to_tag: &str) -> Option<Response> {
        let headers = self.respond_with.as_deref()?;
        Some(Response::from_request_headers(
            headers,
            400,
            &self.reason_phrase(),
            Some(to_tag),
        ))
    }

    /// The top Via of the malformed request, to route the 400.
    pub fn top_via(&self) -> Option<Via> {
        self.respond_with.as_ref().and_then(|h| h.top_via())
    }

    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }
}

enum StartLine {
    Request {
        method: Method,
        uri: Result<Uri, ()>,
    },
    Response {
        status: u16,
        reason: String,
    },
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseErrorKind> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or(ParseErrorKind::BadStartLine)?;
        if version != "2.0" {
            return Err(ParseErrorKind::BadVersion);
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseErrorKind::BadStartLine);
        }
        let status: u16 = code.parse().map_err(|_| ParseErrorKind::BadStartLine)?;
        if !(100..700).contains(&status) {
            return Err(ParseErrorKind::BadStartLine);
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseErrorKind::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseErrorKind::BadStartLine);
    }
    if version != "SIP/2.0" {
        return Err(ParseErrorKind::BadVersion);
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: Uri::parse(uri).map_err(|_| ()),
    })
}

/// Locates the end of the header section: returns (head length without the
/// blank line, offset where the body starts). Accepts bare LF line ends.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(offset) = memchr_newline(&data[i..]) {
        let nl = i + offset;
        let next = nl + 1;
        if data.get(next) == Some(&b'\n') {
            return Some((nl, next + 1));
        }
        if data.get(next) == Some(&b'\r') && data.get(next + 1) == Some(&b'\n') {
            return Some((nl, next + 2));
        }
        i = next;
    }
    None
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

/// Parses one complete SIP message (one UDP datagram or one framed TCP message).
pub fn parse_message(data: &[u8]) -> Result<SipMessage, ParseError> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::bare(ParseErrorKind::TooLarge));
    }
    // RFC 3261 7.5: CRLFs before the start line are ignored.
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::bare(ParseErrorKind::Empty))?;
    let data = &data[start..];
    let (head_len, body_start) =
        find_head_end(data).ok_or(ParseError::bare(ParseErrorKind::Truncated))?;
    let head = &data[..head_len];
    if head.contains(&0) {
        return Err(ParseError::bare(ParseErrorKind::NulByte));
    }
    let head =
        std::str::from_utf8(head).map_err(|_| ParseError::bare(ParseErrorKind::InvalidUtf8))?;

    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    if start_line.len() > MAX_LINE_BYTES {
        return Err(ParseError::bare(ParseErrorKind::LineTooLong));
    }
    let start_line = parse_start_line(start_line).map_err(ParseError::bare)?;

    let mut headers = Headers::with_capacity(16);
    let mut pending: Option<(String, String)> = None;
    let mut header_error: Option<ParseErrorKind> = None;
    for line in lines {
        if line.len() > MAX_LINE_BYTES {
            return Err(ParseError::bare(ParseErrorKind::LineTooLong));
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 7.3.1): joins the previous value.
            match pending.as_mut() {
                Some((_, value)) => {
                    if value.len() + line.len() > MAX_LINE_BYTES {
                        return Err(ParseError::bare(ParseErrorKind::LineTooLong));
                    }
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(ParseError::bare(ParseErrorKind::BadHeaderLine)),
            }
            continue;
        }
        if let Some((name, value)) = pending.take() {
            headers.push(name, value);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::bare(ParseErrorKind::TooManyHeaders));
        }
        let Some((name, value)) = line.split_once(':') else {
            header_error.get_or_insert(ParseErrorKind::BadHeaderLine);
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            header_error.get_or_insert(ParseErrorKind::BadHeaderLine);
            continue;
        }
        pending = Some((name.to_owned(), value.trim().to_owned()));
    }
    if let Some((name, value)) = pending.take() {
        headers.push(name, value);
    }

    let rest = &data[body_start..];
    let body = match content_length(&headers) {
        Ok(Some(len)) if len <= rest.len() => Ok(Bytes::copy_from_slice(&rest[..len])),
        Ok(Some(_)) => Err(ParseErrorKind::TruncatedBody),
        // Datagrams may omit Content-Length: the body is the rest (RFC 3261 18.3).
        Ok(None) => Ok(Bytes::copy_from_slice(rest)),
        Err(kind) => Err(kind),
    };

    match start_line {
        StartLine::Response { status, reason } => {
            let error = header_error
                .or_else(|| check_common_headers(&headers).err())
                .or_else(|| body.as_ref().err().cloned());
            if let Some(kind) = error {
                // Responses are never answered, so nothing to keep.
                return Err(ParseError::bare(kind));
            }
            Ok(SipMessage::Response(Response {
                status,
                reason,
                headers,
                body: body.unwrap_or_default(),
            }))
        }
        StartLine::Request { method, uri } => {
            let error = check_common_headers(&headers)
                .err()
                .or(header_error)
                .or_else(|| uri.is_err().then_some(ParseErrorKind::BadRequestUri))
                .or_else(|| check_request_headers(&method, &headers).err())
                .or_else(|| body.as_ref().err().cloned());
            match (error, uri, body) {
                (None, Ok(uri), Ok(body)) => Ok(SipMessage::Request(Request {
                    method,
                    uri,
                    headers,
                    body,
                })),
                (error, _, _) => {
                    let kind = error.unwrap_or(ParseErrorKind::BadStartLine);
                    Err(ParseError {
                        respond_with: respondable_headers(&method, &headers),
                        method: Some(method),
                        kind,
                    })
                }
            }
        }
    }
}

fn content_length(headers: &Headers) -> Result<Option<usize>, ParseErrorKind> {
    let mut found: Option<usize> = None;
    for value in headers.get_all("Content-Length") {
        let value = value.trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseErrorKind::BadHeader("Content-Length"));
        }
        let len: usize = value
            .parse()
            .map_err(|_| ParseErrorKind::BadHeader("Content-Length"))?;
        if len > MAX_MESSAGE_BYTES {
            return Err(ParseErrorKind::BadHeader("Content-Length"));
        }
        // Two different lengths is a request-smuggling shape: refuse it.
        if found.is_some_and(|f| f != len) {
            return Err(ParseErrorKind::BadHeader("Content-Length"));
        }
        found = Some(len);
    }
    Ok(found)
}

/// Headers every request and response must carry (RFC 3261 8.1.1).
fn check_common_headers(headers: &Headers) -> Result<(), ParseErrorKind> {
    let mut vias = headers.get_list("Via").peekable();
    if vias.peek().is_none() {
        return Err(ParseErrorKind::MissingHeader("Via"));
    }
    if vias.any(|v| Via::parse(v).is_err()) {
        return Err(ParseErrorKind::BadHeader("Via"));
    }
    for name in ["From", "To"] {
        let mut values = headers.get_all(name);
        match (values.next(), values.next()) {
            (None, _) => return Err(ParseErrorKind::MissingHeader(name)),
            (Some(v), None) if NameAddr::parse(v).is_ok() => {}
            _ => return Err(ParseErrorKind::BadHeader(name)),
        }
    }
    match headers.get("Call-ID") {
        None => return Err(ParseErrorKind::MissingHeader("Call-ID")),
        Some(v) if v.trim().is_empty() || v.contains(char::is_whitespace) => {
            return Err(ParseErrorKind::BadHeader("Call-ID"));
        }
        Some(_) => {}
    }
    match headers.get("CSeq") {
        None => return Err(ParseErrorKind::MissingHeader("CSeq")),
        Some(v) if CSeq::parse(v).is_err() => return Err(ParseErrorKind::BadHeader("CSeq")),
        Some(_) => {}
    }
    Ok(())
}

fn check_request_headers(method: &Method, headers: &Headers) -> Result<(), ParseErrorKind> {
    if headers.cseq().is_some_and(|c| &c.method != method) {
        return Err(ParseErrorKind::CSeqMethodMismatch);
    }
    if let Some(mf) = headers.get("Max-Forwards")
        && mf.trim().parse::<u8>().is_err()
    {
        return Err(ParseErrorKind::BadHeader("Max-Forwards"));
    }
    for contact in headers.get_list("Contact") {
        if contact != "*" && NameAddr::parse(contact).is_err() {
            return Err(ParseErrorKind::BadHeader("Contact"));
        }
    }
    for name in ["Route", "Record-Route"] {
        if headers.get_list(name).any(|r| NameAddr::parse(r).is_err()) {
            return Err(ParseErrorKind::BadHeader(if name == "Route" {
                "Route"
            } else {
                "Record-Route"
            }));
        }
    }
    Ok(())
}

/// Keeps the headers a 400 needs when they are all present and usable.
fn respondable_headers(method: &Method, headers: &Headers) -> Option<Box<Headers>> {
    if *method == Method::Ack {
        return None;
    }
    let top_via_ok = headers.top_via().is_some();
    let ok = top_via_ok
        && headers.get("From").is_some()
        && headers.get("To").is_some()
        && headers.call_id().is_some()
        && headers.cseq().is_some();
    if !ok {
        return None;
    }
    let mut kept = Headers::with_capacity(6);
    for header in headers.iter() {
        let wanted = ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .any(|n| header_name_is(&header.name, n));
        if wanted {
            kept.push(header.name.clone(), header.value.clone());
        }
    }
    Some(Box::new(kept))
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    #[error("stream message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("stream message without a valid Content-Length")]
    BadContentLength,
}

/// What [`StreamFramer::next_frame`] pulled out of the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, ready for [`parse_message`].
    Message(Bytes),
    /// A double-CRLF keep-alive ping (RFC 5626 4.4.1); answer with a CRLF pong.
    KeepAlivePing,
}

/// Cuts a TCP byte stream into SIP messages using Content-Length, which is
/// mandatory on streams (RFC 3261 18.3).
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: BytesMut,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Errors (and the connection should close) once
    /// the buffer holds more than one maximum-sized message can need.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FramingError> {
        if self.buffer.len() + data.len() > 2 * MAX_MESSAGE_BYTES {
            return Err(FramingError::TooLarge);
        }
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        let leading = self
            .buffer
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buffer.len());
        if leading > 0 {
            let ping = self.buffer.starts_with(b"\r\n\r\n");
            self.buffer.advance(if ping { 4 } else { leading });
            if ping {
                return Ok(Some(Frame::KeepAlivePing));
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let Some((head_len, body_start)) = find_head_end(&self.buffer) else {
            if self.buffer.len() > MAX_MESSAGE_BYTES {
                return Err(FramingError::TooLarge);
            }
            return Ok(None);
        };
        let head = &self.buffer[..head_len];
        let length = stream_content_length(head)?;
        let total = body_start + length;
        if total > MAX_MESSAGE_BYTES {
            return Err(FramingError::TooLarge);
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buffer.split_to(total).freeze())))
    }
}

fn stream_content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon])
            .unwrap_or_default()
            .trim();
        if !header_name_is(name, "Content-Length") {
            continue;
        }
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| FramingError::BadContentLength)?
            .trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::BadContentLength);
        }
        let len: usize = value.parse().map_err(|_| FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != len) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(len);
    }
    found.ok_or(FramingError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INVITE: &str = "INVITE sip:1000@frontdoor.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1000@frontdoor.example>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn expect_error(data: &[u8]) -> ParseError {
        match parse_message(data) {
            Ok(m) => panic!("expected error, parsed {m:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_typical_invite() {
        let SipMessage::Request(req) = parse_message(INVITE.as_bytes()).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(req.method, Method::Invite);
        assert_eq!(req.uri.user.as_deref(), Some("1000"));
        assert_eq!(
            req.headers.call_id(),
            Some("a84b4c76e66710@pc33.example.com")
        );
        assert_eq!(req.headers.cseq().unwrap().seq, 314159);
        assert_eq!(req.headers.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(req.headers.max_forwards(), Some(70));
        assert_eq!(&req.body[..], b"v=0\n");
        assert_eq!(req.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
    }

    #[test]
    fn serialization_round_trips() {
        let msg = parse_message(INVITE.as_bytes()).unwrap();
        let again = parse_message(&msg.to_bytes()).unwrap();
        assert_eq!(msg, again);
    }

    #[test]
    fn parses_compact_forms_folding_and_leading_crlf() {
        let text = "\r\n\r\nOPTIONS sip:x@h SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bK1\r\nf: <sip:a@b>\r\n ;tag=1\r\nt: sip:x@h\r\ni: c1\r\nCSeq: 2 OPTIONS\r\nl: 0\r\n\r\n";
        let SipMessage::Request(req) = parse_message(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.headers.from().unwrap().tag(), Some("1"));
        assert_eq!(req.headers.get("Call-ID"), Some("c1"));
    }

    #[test]
    fn parses_response() {
        let text = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Response(resp) = parse_message(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(resp.status, 180);
        assert_eq!(resp.reason, "Ringing");
    }

    #[test]
    fn missing_mandatory_headers_are_reported_by_name() {
        for (header, prefix) in [
            ("Via", "Via:"),
            ("From", "From:"),
            ("To", "To:"),
            ("Call-ID", "Call-ID:"),
            ("CSeq", "CSeq:"),
        ] {
            let text: String = INVITE
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(prefix))
                .collect();
            let err = expect_error(text.as_bytes());
            assert_eq!(err.kind, ParseErrorKind::MissingHeader(header));
            // Without one of the five, no response can be built.
            assert!(err.bad_request("t").is_none());
        }
    }

    #[test]
    fn bad_request_uri_yields_400_with_reason() {
        let text = INVITE.replace("INVITE sip:1000@frontdoor.example", "INVITE sip:10 00@");
        let err = expect_error(text.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::BadStartLine);
        let text = INVITE.replace("INVITE sip:1000@frontdoor.example", "INVITE nonsense");
        let err = expect_error(text.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::BadRequestUri);
        let resp = err.bad_request("ourtag").unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.reason, "Bad Request (invalid Request-URI)");
        assert!(resp.headers.get("To").unwrap().contains("tag=ourtag"));
        assert_eq!(
            resp.headers.call_id(),
            Some("a84b4c76e66710@pc33.example.com")
        );
    }

    #[test]
    fn content_length_problems() {
        let too_long = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        let err = expect_error(too_long.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::TruncatedBody);
        assert!(err.bad_request("t").is_some());

        for bad in [
            "Content-Length: -1",
            "Content-Length: abc",
            "Content-Length: 99999999999999999999",
            "Content-Length: 70000",
            "Content-Length: 4\r\nl: 5",
        ] {
            let text = INVITE.replace("Content-Length: 4", bad);
            let err = expect_error(text.as_bytes());
            assert_eq!(
                err.kind,
                ParseErrorKind::BadHeader("Content-Length"),
                "{bad}"
            );
            assert!(err.reason_phrase().contains("Content-Length"));
        }
        // Extra bytes after the declared body are ignored.
        let text = format!("{INVITE}garbage");
        let SipMessage::Request(req) = parse_message(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(&req.body[..], b"v=0\n");
    }

    #[test]
    fn bad_cseq_and_mismatched_method() {
        let text = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        let err = expect_error(text.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::CSeqMethodMismatch);
        assert!(err.bad_request("t").is_some());
        let text = INVITE.replace("CSeq: 314159 INVITE", "CSeq: lots INVITE");
        let err = expect_error(text.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::BadHeader("CSeq"));
        assert!(err.bad_request("t").is_none());
    }

    #[test]
    fn nul_bytes_utf8_and_garbage_are_rejected() {
        let text = INVITE.replace("Alice", "Al\0ice");
        assert_eq!(expect_error(text.as_bytes()).kind, ParseErrorKind::NulByte);
        let mut bytes = INVITE.as_bytes().to_vec();
        bytes[60] = 0xff;
        assert_eq!(expect_error(&bytes).kind, ParseErrorKind::InvalidUtf8);
        assert_eq!(expect_error(b"").kind, ParseErrorKind::Empty);
        assert_eq!(expect_error(b"\r\n\r\n").kind, ParseErrorKind::Empty);
        assert_eq!(expect_error(b"hello world").kind, ParseErrorKind::Truncated);
        assert_eq!(
            expect_error(b"GET / HTTP/1.1\r\n\r\n").kind,
            ParseErrorKind::BadVersion
        );
        assert_eq!(
            expect_error(b"SIP/2.0 99 x\r\n\r\n").kind,
            ParseErrorKind::BadStartLine
        );
        // Pseudo-random garbage never panics.
        let mut state = 0x1234_5678_u32;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 256) as u8
                })
                .collect();
            let _ = parse_message(&bytes);
        }
    }

    #[test]
    fn truncated_messages_never_panic_and_fail() {
        for cut in 0..INVITE.len() - 4 {
            let result = parse_message(&INVITE.as_bytes()[..cut]);
            assert!(result.is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn size_limits() {
        let huge = format!(
            "{}X-Big: {}\r\n\r\n",
            &INVITE[..INVITE.len() - 6],
            "a".repeat(64 * 1024)
        );
        assert_eq!(expect_error(huge.as_bytes()).kind, ParseErrorKind::TooLarge);
        let long_line =
            INVITE.replace("Max-Forwards: 70", &format!("X-Long: {}", "a".repeat(9000)));
        assert_eq!(
            expect_error(long_line.as_bytes()).kind,
            ParseErrorKind::LineTooLong
        );
        let many: String = (0..300).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = INVITE.replace("Max-Forwards: 70\r\n", &many);
        assert_eq!(
            expect_error(many.as_bytes()).kind,
            ParseErrorKind::TooManyHeaders
        );
    }

    #[test]
    fn malformed_header_line_and_max_forwards() {
        let text = INVITE.replace("Max-Forwards: 70", "this is not a header");
        let err = expect_error(text.as_bytes());
        assert_eq!(err.kind, ParseErrorKind::BadHeaderLine);
        assert!(err.bad_request("x").is_some());
        let text = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 300");
        assert_eq!(
            expect_error(text.as_bytes()).kind,
            ParseErrorKind::BadHeader("Max-Forwards")
        );
        let text = INVITE.replace(
            "Contact: <sip:alice@192.0.2.10:5060>",
            "Contact: <sip:alice@",
        );
        assert_eq!(
            expect_error(text.as_bytes()).kind,
            ParseErrorKind::BadHeader("Contact")
        );
        let text = INVITE.replace(
            "To: <sip:1000@frontdoor.example>",
            "To: <sip:1000@frontdoor.example",
        );
        assert_eq!(
            expect_error(text.as_bytes()).kind,
            ParseErrorKind::BadHeader("To")
        );
    }

    #[test]
    fn ack_errors_are_never_answered() {
        let text = INVITE
            .replace("INVITE sip:1000@frontdoor.example", "ACK bad-uri")
            .replace("314159 INVITE", "314159 ACK");
        let err = expect_error(text.as_bytes());
        assert!(err.bad_request("t").is_none());
    }

    #[test]
    fn unknown_headers_are_kept_verbatim_in_order() {
        let text = INVITE.replace(
            "Max-Forwards: 70",
            "X-Weird_Name:  spaced   value \r\nMax-Forwards: 70",
        );
        let SipMessage::Request(req) = parse_message(text.as_bytes()).unwrap() else {
            panic!()
        };
        let first = req.headers.iter().nth(1).unwrap();
        assert_eq!(
            (first.name.as_str(), first.value.as_str()),
            ("X-Weird_Name", "spaced   value")
        );
    }

    #[test]
    fn framer_splits_stream_and_skips_keepalives() {
        let mut framer = StreamFramer::new();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(INVITE.as_bytes());
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(INVITE.as_bytes());
        // Feed in small chunks to exercise partial reads.
        let mut messages = 0;
        let mut pings = 0;
        for chunk in stream.chunks(7) {
            framer.push(chunk).unwrap();
            while let Some(frame) = framer.next_frame().unwrap() {
                match frame {
                    Frame::Message(m) => {
                        assert!(parse_message(&m).is_ok());
                        messages += 1;
                    }
                    Frame::KeepAlivePing => pings += 1,
                }
            }
        }
        assert_eq!((messages, pings), (2, 1));
        assert_eq!(framer.buffered_len(), 0);
    }

    #[test]
    fn framer_errors_on_oversize_and_missing_length() {
        let mut framer = StreamFramer::new();
        framer
            .push(format!("INVITE sip:a@b SIP/2.0\r\nX: {}", "a".repeat(70_000)).as_bytes())
            .unwrap();
        assert_eq!(framer.next_frame(), Err(FramingError::TooLarge));

        let mut framer = StreamFramer::new();
        framer
            .push(
                INVITE
                    .replace("Content-Length: 4", "Content-Length: 65500")
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(framer.next_frame(), Err(FramingError::TooLarge));

        let mut framer = StreamFramer::new();
        framer
            .push(INVITE.replace("Content-Length: 4\r\n", "").as_bytes())
            .unwrap();
        assert_eq!(framer.next_frame(), Err(FramingError::BadContentLength));

        let mut framer = StreamFramer::new();
        assert_eq!(
            framer.push(&vec![b'a'; 200_000]),
            Err(FramingError::TooLarge)
        );
    }
}
