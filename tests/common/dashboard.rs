//! The dashboard over plain HTTP/1.1, as a supervisor's browser uses it:
//! one request per connection, cookies and the CSRF token by hand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP response: the status, the raw head (status line and headers)
/// and the body, de-chunked.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// A cookie's value from the response's `Set-Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            if !key.trim().eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let (cookie, rest) = value.trim().split_once('=')?;
            (cookie == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
        })
    }
}

/// One HTTP/1.1 exchange with the engine on `port` over a fresh connection
/// (`Connection: close`).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad response {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Response {
        status,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

/// The payload of a `Transfer-Encoding: chunked` body.
pub fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = data.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        data = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The token a page embeds for POSTs (`<meta name="csrf-token">`) or the
/// login form's hidden field.
pub fn embedded_token(body: &str) -> Option<String> {
    ["name=\"csrf-token\" content=\"", "name=\"csrf\" value=\""]
        .iter()
        .find_map(|marker| {
            let start = body.find(marker)? + marker.len();
            body[start..].split('"').next().map(str::to_owned)
        })
}

/// Logs in as `user` through the login form, then opens the board: the
/// session cookie's value and the session's CSRF token.
pub fn login(port: u16, user: &str, password: &str) -> (String, String) {
    let form = http(port, "GET", "/login", &[], "");
    let form_cookie = form
        .cookie("frontdoor_login_csrf")
        .expect("login form cookie");
    let field = embedded_token(&form.body).expect("login form token");
    let cookie = format!("frontdoor_login_csrf={form_cookie}");
    let body = format!("username={user}&password={password}&csrf={field}&next=%2F");
    let response = http(
        port,
        "POST",
        "/login",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(response.status, 303, "login: {}", response.head);
    let session = response
        .cookie("frontdoor_session")
        .expect("session cookie");
    let board = http(
        port,
        "GET",
        "/",
        &[("Cookie", &format!("frontdoor_session={session}"))],
        "",
    );
    assert_eq!(board.status, 200, "board: {}", board.head);
    let csrf = embedded_token(&board.body).expect("the board embeds the CSRF token");
    (session, csrf)
}
