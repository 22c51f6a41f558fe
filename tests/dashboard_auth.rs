//! Dashboard authentication against the real engine: nothing that shows
//! call data answers without a session, logins are CSRF-protected,
//! throttled and audited, supervisors cannot reach admin pages, state
//! changes need the session's CSRF token, and logout ends the session.
//!
//! Plain HTTP/1.1 over a TcpStream: the client needs nothing a browser
//! would not send, and no extra dependency.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::dashboard::embedded_token;
use common::*;

const SUE_PASSWORD: &str = "sue-Correct-Horse-1";
const ADA_PASSWORD: &str = "ada-Battery-Staple-2";

fn config(login_attempts: u32) -> String {
    format!(
        r#"
[dashboard]
login_attempts = {login_attempts}
login_window_secs = 300

[[dashboard.user]]
name = "sue"
role = "supervisor"
password_env = "FD_TEST_SUE_PASSWORD"

[[dashboard.user]]
name = "ada"
role = "admin"
password_env = "FD_TEST_ADA_PASSWORD"
"#
    )
}

fn start_engine(login_attempts: u32) -> Engine {
    Engine::builder()
        .config(&config(login_attempts))
        .env("FD_TEST_SUE_PASSWORD", SUE_PASSWORD)
        .env("FD_TEST_ADA_PASSWORD", ADA_PASSWORD)
        .start()
}

// ------------------------------------------------------------------ client

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie` header gives cookie `name`, with the whole
    /// header line.
    fn set_cookie(&self, name: &str) -> Option<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, line)| {
                let first = line.split(';').next()?;
                let (key, value) = first.split_once('=')?;
                (key.trim() == name).then(|| (value.trim().to_owned(), line.clone()))
            })
    }
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: Option<(&'a str, String)>,
}

impl<'a> Request<'a> {
    fn get(path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    fn post(path: &'a str) -> Self {
        Request {
            method: "POST",
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn session(self, session: &str) -> Self {
        self.header("Cookie", format!("frontdoor_session={session}"))
    }

    fn json(mut self, body: &str) -> Self {
        self.body = Some(("application/json", body.to_owned()));
        self
    }

    fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let encoded = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.body = Some(("application/x-www-form-urlencoded", encoded));
        self
    }

    fn send(self, engine: &Engine) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", engine.http_port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            self.method, self.path, engine.http_port
        );
        let mut wants_upgrade = false;
        for (name, value) in &self.headers {
            wants_upgrade |= name.eq_ignore_ascii_case("upgrade");
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !wants_upgrade {
            head.push_str("Connection: close\r\n");
        }
        let body = match &self.body {
            Some((content_type, body)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    body.len()
                ));
                body.as_str()
            }
            None if self.method == "POST" => {
                head.push_str("Content-Length: 0\r\n");
                ""
            }
            None => "",
        };
        head.push_str("\r\n");
        head.push_str(body);
        stream.write_all(head.as_bytes()).expect("send request");
        read_response(&mut stream, self.method, self.path)
    }
}

/// Reads one response, honouring Content-Length and chunked encoding so
/// a kept-open connection (upgrade requests) does not hang the test.
fn read_response(stream: &mut TcpStream, method: &str, path: &str) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            break end;
        }
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{method} {path}: reading response head: {e}"));
        assert!(
            n > 0,
            "{method} {path}: connection closed before a response"
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut read_more = |body: &mut Vec<u8>| -> bool {
        match stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) => panic!("{method} {path}: reading body: {e}"),
        }
    };
    if status == 101 || status == 304 || (100..200).contains(&status) {
        body.clear();
    } else if let Some(length) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < length && read_more(&mut body) {}
        body.truncate(length);
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") && read_more(&mut body) {}
        body = dechunk(&body);
    } else {
        while read_more(&mut body) {}
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or_default();
    }
    out
}

fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

// ------------------------------------------------------------------ login

struct LoginForm {
    cookie: String,
    field: String,
}

fn open_login_form(engine: &Engine) -> LoginForm {
    let page = Request::get("/login").send(engine);
    assert_eq!(page.status, 200, "GET /login: {page:?}");
    for selector in ["name=\"username\"", "name=\"password\"", "type=\"submit\""] {
        assert!(page.body.contains(selector), "login page lacks {selector}");
    }
    let (cookie, line) = page
        .set_cookie("frontdoor_login_csrf")
        .expect("login page sets the form cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict"),
        "{line}"
    );
    let field = embedded_token(&page.body).expect("hidden csrf field");
    assert_eq!(cookie, field, "double-submit token: cookie and field agree");
    LoginForm { cookie, field }
}

fn post_login(engine: &Engine, user: &str, password: &str, next: &str) -> Response {
    let form = open_login_form(engine);
    Request::post("/login")
        .header("Cookie", format!("frontdoor_login_csrf={}", form.cookie))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", &form.field),
            ("next", next),
        ])
        .send(engine)
}

/// Logs in and returns the session cookie's value.
fn login(engine: &Engine, user: &str, password: &str) -> String {
    let response = post_login(engine, user, password, "/");
    assert_eq!(response.status, 303, "login as {user}: {response:?}");
    let (session, line) = response
        .set_cookie("frontdoor_session")
        .expect("session cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict") && line.contains("Path=/"),
        "{line}"
    );
    assert_eq!(session.len(), 64, "256-bit session id as hex");
    session
}

fn audit_rows(engine: &Engine) -> Vec<(String, String, String)> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        engine.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut statement) = db.prepare("SELECT actor, action, detail FROM audit_log ORDER BY seq")
    else {
        return Vec::new();
    };
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// Waits for an audit row (the store writes asynchronously).
fn wait_for_audit(
    engine: &Engine,
    what: &str,
    matches: impl Fn(&(String, String, String)) -> bool,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = audit_rows(engine);
        if rows.iter().any(&matches) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "no audit entry for {what}; audit log: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------ tests

const PAGES: &[&str] = &["/", "/calls/x", "/history", "/kpis", "/admin"];
const APIS: &[&str] = &[
    "/api/live",
    "/api/events",
    "/api/calls",
    "/api/calls/x",
    "/calls/x/recording",
    "/api/kpis",
];
const ACTIONS: &[&str] = &[
    "/api/calls/x/takeover",
    "/api/calls/x/hangup",
    "/api/calls/x/flag",
];

fn assert_no_call_data_without(engine: &Engine, session: Option<&str>, context: &str) {
    let with = |request: Request<'static>| match session {
        Some(s) => request.session(s),
        None => request,
    };
    for &page in PAGES {
        let response = with(Request::get(page)).send(engine);
        assert_eq!(response.status, 303, "{context}: GET {page}: {response:?}");
        let location = response.header("location").unwrap_or_default();
        assert!(
            location.starts_with("/login"),
            "{context}: GET {page} → {location}"
        );
        if page != "/" {
            assert!(
                location.contains(&format!("next={}", page.replace('/', "%2F")))
                    || location.contains(&format!("next={page}")),
                "{context}: GET {page} → {location} keeps where it was going"
            );
        }
    }
    for &api in APIS {
        let response = with(Request::get(api)).send(engine);
        assert_eq!(response.status, 401, "{context}: GET {api}: {response:?}");
        assert!(
            response.body.contains("authentication required"),
            "{context}: GET {api}: {}",
            response.body
        );
    }
    // The listen-in WebSocket, asked for the way a browser does.
    let response = with(Request::get("/api/calls/x/listen"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send(engine);
    assert_eq!(response.status, 401, "{context}: listen-in: {response:?}");
    for &action in ACTIONS {
        let response = with(Request::post(action))
            .json(r#"{"target":"queue:general","note":"x"}"#)
            .send(engine);
        assert_eq!(
            response.status, 401,
            "{context}: POST {action}: {response:?}"
        );
    }
}

#[test]
fn dashboard_requires_login_and_protects_sessions() {
    let mut engine = start_engine(5);

    // 1. Nothing that shows call data without a session, nor with a
    // made-up one.
    assert_no_call_data_without(&engine, None, "no session");
    assert_no_call_data_without(&engine, Some(&"ab".repeat(32)), "forged session");

    // 2. The login form is CSRF-protected (double submit).
    let form = open_login_form(&engine);
    let no_field = Request::post("/login")
        .header("Cookie", format!("frontdoor_login_csrf={}", form.cookie))
        .form(&[("username", "sue"), ("password", SUE_PASSWORD)])
        .send(&engine);
    assert_eq!(no_field.status, 403, "POST /login without csrf field");
    assert!(no_field.set_cookie("frontdoor_session").is_none());
    let no_cookie = Request::post("/login")
        .form(&[
            ("username", "sue"),
            ("password", SUE_PASSWORD),
            ("csrf", &form.field),
        ])
        .send(&engine);
    assert_eq!(no_cookie.status, 403, "POST /login without csrf cookie");
    let mismatched = Request::post("/login")
        .header("Cookie", format!("frontdoor_login_csrf={}", "0".repeat(64)))
        .form(&[
            ("username", "sue"),
            ("password", SUE_PASSWORD),
            ("csrf", &form.field),
        ])
        .send(&engine);
    assert_eq!(
        mismatched.status, 403,
        "POST /login with another form's token"
    );

    // 3. A wrong password: refused with a visible error, audited without
    // the password.
    let wrong = post_login(&engine, "sue", "not-the-password", "/");
    assert_eq!(wrong.status, 401, "wrong password: {wrong:?}");
    assert!(
        wrong.body.contains("data-testid=\"login-error\""),
        "{}",
        wrong.body
    );
    assert!(wrong.set_cookie("frontdoor_session").is_none());
    let rows = wait_for_audit(&engine, "login_failed", |(actor, action, detail)| {
        action == "login_failed" && actor == "anonymous" && detail.contains("sue")
    });
    assert!(
        rows.iter().all(|(_, _, d)| !d.contains("not-the-password")),
        "the password reached the audit log: {rows:?}"
    );
    // An unknown user name gets the same answer.
    let unknown = post_login(&engine, "mallory", "whatever", "/");
    assert_eq!(unknown.status, 401);

    // 4. The right password: 303 to a local `next` only, with a fresh
    // session id whatever cookie the browser came with (no fixation).
    let planted = "cd".repeat(32);
    let form = open_login_form(&engine);
    let response = Request::post("/login")
        .header(
            "Cookie",
            format!(
                "frontdoor_login_csrf={}; frontdoor_session={planted}",
                form.cookie
            ),
        )
        .form(&[
            ("username", "sue"),
            ("password", SUE_PASSWORD),
            ("csrf", &form.field),
            ("next", "/history?q=council"),
        ])
        .send(&engine);
    assert_eq!(response.status, 303, "{response:?}");
    assert_eq!(response.header("location"), Some("/history?q=council"));
    let (sue_session, _) = response.set_cookie("frontdoor_session").expect("session");
    assert_ne!(sue_session, planted);
    assert_no_call_data_without(&engine, Some(&planted), "planted session");
    wait_for_audit(&engine, "login", |(actor, action, _)| {
        action == "login" && actor == "sue"
    });
    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let response = post_login(&engine, "sue", SUE_PASSWORD, evil);
        assert_eq!(response.status, 303);
        assert_eq!(response.header("location"), Some("/"), "next={evil}");
    }

    // 5. A supervisor's session opens the board but not the admin pages.
    let board = Request::get("/").session(&sue_session).send(&engine);
    assert_eq!(board.status, 200, "board as sue: {board:?}");
    let sue_csrf = embedded_token(&board.body).expect("board embeds the CSRF token");
    let live = Request::get("/api/live")
        .session(&sue_session)
        .send(&engine);
    assert_eq!(live.status, 200, "/api/live as sue");
    let admin = Request::get("/admin").session(&sue_session).send(&engine);
    assert_eq!(admin.status, 403, "/admin as supervisor");

    // 6. State changes need the session's CSRF token.
    for &action in ACTIONS {
        let missing = Request::post(action)
            .session(&sue_session)
            .json(r#"{"target":"queue:general","note":"x"}"#)
            .send(&engine);
        assert_eq!(missing.status, 403, "POST {action} without X-CSRF-Token");
        let wrong = Request::post(action)
            .session(&sue_session)
            .header("X-CSRF-Token", "0".repeat(64))
            .json(r#"{"target":"queue:general","note":"x"}"#)
            .send(&engine);
        assert_eq!(wrong.status, 403, "POST {action} with a wrong X-CSRF-Token");
        let right = Request::post(action)
            .session(&sue_session)
            .header("X-CSRF-Token", sue_csrf.clone())
            .json(r#"{"target":"queue:general","note":"x"}"#)
            .send(&engine);
        assert!(
            ![401, 403].contains(&right.status),
            "POST {action} with the token passes authentication: {right:?}"
        );
    }

    // 7. An admin reaches the admin page, which never shows hashes.
    let ada_session = login(&engine, "ada", ADA_PASSWORD);
    let admin = Request::get("/admin").session(&ada_session).send(&engine);
    assert_eq!(admin.status, 200, "/admin as admin: {admin:?}");
    assert!(!admin.body.contains("$argon2"), "admin page shows a hash");

    // 8. Logout needs the token, ends the session and is audited.
    let refused = Request::post("/logout").session(&sue_session).send(&engine);
    assert_eq!(refused.status, 403, "logout without CSRF token");
    let out = Request::post("/logout")
        .session(&sue_session)
        .header("X-CSRF-Token", sue_csrf)
        .send(&engine);
    assert_eq!(out.status, 303, "{out:?}");
    assert!(
        out.header("location")
            .is_some_and(|l| l.starts_with("/login"))
    );
    wait_for_audit(&engine, "logout", |(actor, action, _)| {
        action == "logout" && actor == "sue"
    });
    assert_no_call_data_without(&engine, Some(&sue_session), "after logout");
    // Ada's session is unaffected.
    let live = Request::get("/api/live")
        .session(&ada_session)
        .send(&engine);
    assert_eq!(live.status, 200, "/api/live as ada after sue logged out");

    // 9. No password and no session id in the engine's log or audit log.
    let log = engine.log();
    let rows = audit_rows(&engine);
    for secret in [SUE_PASSWORD, ADA_PASSWORD, &sue_session, &ada_session] {
        assert!(!log.contains(secret), "a secret reached the log");
        assert!(
            rows.iter()
                .all(|(a, _, d)| !a.contains(secret) && !d.contains(secret)),
            "a secret reached the audit log"
        );
    }
    engine.stop();
}

#[test]
fn failed_logins_are_throttled_even_for_the_right_password() {
    let mut engine = start_engine(3);
    for attempt in 0..3 {
        let response = post_login(&engine, "sue", "guess", "/");
        assert_eq!(response.status, 401, "attempt {attempt}: {response:?}");
    }
    let limited = post_login(&engine, "sue", SUE_PASSWORD, "/");
    assert_eq!(
        limited.status, 429,
        "4th attempt, right password: {limited:?}"
    );
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(
        (1..=300).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(limited.body.contains("data-testid=\"login-error\""));
    assert!(limited.set_cookie("frontdoor_session").is_none());
    wait_for_audit(&engine, "login_rate_limited", |(_, action, detail)| {
        action == "login_rate_limited" && detail.contains("sue")
    });
    let rows = audit_rows(&engine);
    let failures = rows.iter().filter(|(_, a, _)| a == "login_failed").count();
    assert_eq!(failures, 3, "{rows:?}");
    engine.stop();
}
