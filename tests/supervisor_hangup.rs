//! A supervisor hangs up a live call from the dashboard, against the real
//! engine: a SIPp caller on a quiet route, `POST /api/calls/{id}/hangup`
//! with a session and its CSRF token, and the engine's BYE reaches the
//! caller; the record says who hung up. Once the call is gone the same
//! request is answered 404.
//!
//! Needs `sipp` (scripts/test-deps.sh).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const PASSWORD: &str = "sue-Correct-Horse-1";

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    /// A cookie's value from the response's `Set-Cookie` headers.
    fn cookie(&self, name: &str) -> Option<String> {
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

/// One HTTP/1.1 exchange over a fresh connection (`Connection: close`).
fn http(
    engine: &Engine,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", engine.http_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
        engine.http_port,
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

fn dechunk(mut data: &str) -> String {
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
fn embedded_token(body: &str) -> Option<String> {
    ["name=\"csrf-token\" content=\"", "name=\"csrf\" value=\""]
        .iter()
        .find_map(|marker| {
            let start = body.find(marker)? + marker.len();
            body[start..].split('"').next().map(str::to_owned)
        })
}

/// Logs in as sue; returns the session cookie and the session's CSRF token.
fn login(engine: &Engine) -> (String, String) {
    let form = http(engine, "GET", "/login", &[], "");
    let form_cookie = form
        .cookie("frontdoor_login_csrf")
        .expect("login form cookie");
    let field = embedded_token(&form.body).expect("login form token");
    let cookie = format!("frontdoor_login_csrf={form_cookie}");
    let body = format!("username=sue&password={PASSWORD}&csrf={field}&next=%2F");
    let response = http(
        engine,
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
        engine,
        "GET",
        "/",
        &[("Cookie", &format!("frontdoor_session={session}"))],
        "",
    );
    assert_eq!(board.status, 200, "board: {}", board.head);
    let csrf = embedded_token(&board.body).expect("the board embeds the CSRF token");
    (session, csrf)
}

#[test]
fn a_supervisor_hangs_up_a_live_call() {
    if !require_binaries("a_supervisor_hangs_up_a_live_call", &["sipp"]) {
        return;
    }
    let mut engine = Engine::builder()
        .config(
            "[dashboard]\n[[dashboard.user]]\nname = \"sue\"\nrole = \"supervisor\"\npassword_env = \"FD_TEST_SUE_PASSWORD\"\n",
        )
        .env("FD_TEST_SUE_PASSWORD", PASSWORD)
        .start();
    // Route 3000 answers and stays quiet for 60 s; the caller sends no RTP
    // and waits for Frontdoor's BYE.
    let sipp = Sipp::new("uac_silent.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1"])
        .timeout(Duration::from_secs(40))
        .spawn();
    let calls = engine.wait_for_calls("the call answered", Duration::from_secs(10), |calls| {
        calls
            .iter()
            .any(|c| c.answered_at.is_some() && !c.is_ended())
    });
    let call = calls
        .iter()
        .find(|c| !c.is_ended())
        .expect("found above")
        .clone();
    let id = call.id.clone().expect("call id");
    let (session, csrf) = login(&engine);
    let cookie = format!("frontdoor_session={session}");
    let path = format!("/api/calls/{id}/hangup");
    let hangup = http(
        &engine,
        "POST",
        &path,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(hangup.status, 202, "{} {}", hangup.head, hangup.body);

    let run = sipp.wait();
    assert_sipp_ok(&run, &engine, "supervisor BYE");
    let record = engine.wait_call_ended(call.sip_call_id.as_deref().expect("sip call id"));
    assert_eq!(
        record.end_reason.as_deref(),
        Some("hung up by supervisor sue"),
        "{record:#?}"
    );
    assert_eq!(
        record.hangup_by.as_deref(),
        Some("frontdoor"),
        "{record:#?}"
    );

    // The call has left the live registry.
    let again = http(
        &engine,
        "POST",
        &path,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(again.status, 404, "{} {}", again.head, again.body);
    engine.stop();
}
