use super::*;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request as HttpRequest;
use chrono::TimeZone;
use tower::ServiceExt;

use crate::config::{Config, DashboardSection, DashboardUser};
use crate::dashboard::auth::{Auth, LOGIN_CSRF_COOKIE, SESSION_COOKIE, hash_password};
use crate::store::{NewCall, SqliteStore, StoreHandle, StoreReader};

fn query(pairs: &[(&str, &str)]) -> CallQuery {
    let mut q = CallQuery::default();
    for (k, v) in pairs {
        let v = Some(v.to_string());
        match *k {
            "from" => q.from = v,
            "to" => q.to = v,
            "number" => q.number = v,
            "intent" => q.intent = v,
            "escalation" => q.escalation = v,
            "q" => q.q = v,
            "limit" => q.limit = v,
            "offset" => q.offset = v,
            other => panic!("unknown field {other}"),
        }
    }
    q
}

#[test]
fn search_params_accept_dates_and_rfc3339_and_default_the_rest() {
    let search = parse_search(&query(&[
        ("from", "2026-03-01"),
        ("to", "2026-03-02T10:30:00+01:00"),
        ("number", " 0161 "),
        ("intent", ""),
        ("escalation", "distress"),
        ("q", "bin"),
    ]))
    .expect("valid");
    assert_eq!(
        search.from,
        Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(
        search.to,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 9, 30, 0).unwrap())
    );
    assert_eq!(search.number.as_deref(), Some("0161"));
    assert_eq!(search.intent, None, "an empty form field is no filter");
    assert_eq!(search.escalation.as_deref(), Some("distress"));
    assert_eq!(search.words.as_deref(), Some("bin"));
    assert_eq!((search.limit, search.offset), (DEFAULT_LIMIT, 0));
}

#[test]
fn an_unencoded_plus_in_an_offset_is_understood() {
    assert_eq!(
        parse_time("from", "2026-03-02T10:30:00 01:00", false),
        Ok(Utc.with_ymd_and_hms(2026, 3, 2, 9, 30, 0).unwrap())
    );
}

#[test]
fn a_date_as_upper_bound_includes_that_whole_day() {
    let search =
        parse_search(&query(&[("from", "2026-03-01"), ("to", "2026-03-01")])).expect("valid");
    assert_eq!(
        search.to,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap())
    );
}

#[test]
fn bad_search_params_are_rejected_with_the_field_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("from", "yesterday")], "from"),
        (&[("to", "2026-13-01")], "to"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "100000")], "limit"),
        (&[("limit", "-1")], "limit"),
        (&[("offset", "ten")], "offset"),
        (&[("escalation", "angry")], "escalation"),
        (&[("from", "2026-03-02"), ("to", "2026-03-01")], "before"),
    ];
    for (pairs, needle) in cases {
        let err = parse_search(&query(pairs)).expect_err("invalid");
        assert!(err.to_string().contains(needle), "{pairs:?}: {err}");
    }
    let long = "x".repeat(MAX_FILTER_CHARS + 1);
    assert_eq!(
        parse_search(&query(&[("q", &long)])).err(),
        Some(QueryError::TooLong("q"))
    );
    assert!(parse_search(&query(&[("escalation", "any")])).is_ok());
}

#[test]
fn kpi_range_defaults_to_the_last_seven_days_including_today() {
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 15, 0, 0).unwrap();
    let (from, to) = parse_kpi_range(&CallQuery::default(), now).expect("default");
    assert_eq!(to, Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0).unwrap());
    assert_eq!(from, Utc.with_ymd_and_hms(2026, 3, 4, 0, 0, 0).unwrap());
    let (from, to) =
        parse_kpi_range(&query(&[("from", "2026-01-01"), ("to", "2026-01-31")]), now).expect("ok");
    assert_eq!(from, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    assert_eq!(to, Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
    assert!(parse_kpi_range(&query(&[("from", "2027-01-01")]), now).is_err());
}

fn handoff_config() -> HandoffSection {
    toml::from_str(
        r#"
        [[agent]]
        id = "alice"
        [[agent]]
        id = "bob"
        [[queue]]
        name = "general"
        members = ["alice", "bob"]
        "#,
    )
    .expect("handoff config")
}

#[test]
fn takeover_targets_are_me_or_configured_agents_and_queues() {
    let handoff = handoff_config();
    assert_eq!(
        parse_target("me", Some("alice"), &handoff),
        Ok(TakeOverTarget::Agent("alice".into()))
    );
    assert_eq!(
        parse_target("me", None, &handoff),
        Err(TargetError::NoAgent)
    );
    assert_eq!(
        parse_target("agent:bob", None, &handoff),
        Ok(TakeOverTarget::Agent("bob".into()))
    );
    assert_eq!(
        parse_target(" queue:general ", None, &handoff),
        Ok(TakeOverTarget::Queue("general".into()))
    );
    for bad in [
        "agent:mallory",
        "queue:nope",
        "bob",
        "",
        "agent:",
        "sip:x@y",
    ] {
        assert!(
            matches!(
                parse_target(bad, Some("alice"), &handoff),
                Err(TargetError::Unknown(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn recordings_resolve_only_inside_the_recordings_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("recordings");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("a.wav"), b"RIFF").expect("write");
    std::fs::write(root.path().join("secret.wav"), b"RIFF").expect("write");

    assert!(resolve_recording(&dir, "a.wav").is_some());
    let absolute = dir.join("a.wav");
    assert!(resolve_recording(&dir, &absolute.to_string_lossy()).is_some());
    assert!(resolve_recording(&dir, "../secret.wav").is_none());
    assert!(resolve_recording(&dir, &root.path().join("secret.wav").to_string_lossy()).is_none());
    assert!(resolve_recording(&dir, "missing.wav").is_none());
    assert!(
        resolve_recording(&dir, "").is_none(),
        "the directory itself is no file"
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.path().join("secret.wav"), dir.join("link.wav"))
            .expect("symlink");
        assert!(resolve_recording(&dir, "link.wav").is_none());
    }
}

#[test]
fn websocket_origin_must_match_the_host() {
    let mut headers = HeaderMap::new();
    assert!(same_origin(&headers), "non-browser clients send no Origin");
    headers.insert(header::HOST, HeaderValue::from_static("dash.council:8080"));
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://dash.council:8080"),
    );
    assert!(same_origin(&headers));
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(!same_origin(&headers));
    headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
    assert!(!same_origin(&headers));
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://dash.council"),
    );
    assert!(!same_origin(&headers), "port differs");
}

#[test]
fn listen_frames_are_little_endian_samples() {
    let frame: ListenFrame = Arc::from(vec![1i16, -2, 0x1234]);
    assert_eq!(frame_bytes(&frame), vec![1, 0, 0xfe, 0xff, 0x34, 0x12]);
}

#[test]
fn only_the_start_of_a_playback_is_audited() {
    let mut headers = HeaderMap::new();
    assert!(starts_playback(&headers));
    headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-"));
    assert!(starts_playback(&headers));
    headers.insert(header::RANGE, HeaderValue::from_static("bytes=1000-"));
    assert!(!starts_playback(&headers));
}

// ---------------------------------------------------------------- router

struct Harness {
    _dir: tempfile::TempDir,
    state: AppState,
    app: Router,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).expect("mkdir");
    let store = StoreHandle::spawn(SqliteStore::open(&data).expect("store"));
    let reader = StoreReader::open_sqlite(&data).expect("reader");
    let dashboard = DashboardSection {
        user: vec![
            DashboardUser {
                name: "sam".into(),
                role: Role::Supervisor,
                password_hash: Some(hash_password("sam-pass").expect("hash")),
                password_env: None,
                agent: None,
            },
            DashboardUser {
                name: "ada".into(),
                role: Role::Admin,
                password_hash: Some(hash_password("ada-pass").expect("hash")),
                password_env: None,
                agent: Some("alice".into()),
            },
        ],
        ..DashboardSection::default()
    };
    let config = Config {
        handoff: handoff_config(),
        dashboard,
        ..Config::default()
    };
    let auth = Auth::from_config(&config.dashboard).expect("auth");
    let events = crate::events::EventBus::new();
    let state = AppState {
        metrics: crate::metrics::Metrics::new(),
        store,
        board: crate::dashboard::live::LiveBoard::start(&events),
        events,
        config: Arc::new(config),
        reader,
        live: crate::control::LiveCalls::new(),
        handoff: None,
        auth: Arc::new(auth),
        redactor: Arc::new(crate::governance::Redactor::none()),
        recordings_dir: recordings,
    };
    let app = crate::http::router(state.clone());
    Harness {
        _dir: dir,
        state,
        app,
    }
}

fn set_cookie_value(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
}

async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A signed-in session through the real login form: (cookie, csrf token).
async fn login(app: &Router, user: &str, password: &str) -> (String, String) {
    let form = app
        .clone()
        .oneshot(HttpRequest::get("/login").body(Body::empty()).unwrap())
        .await
        .expect("login form");
    let token = set_cookie_value(&form, LOGIN_CSRF_COOKIE).expect("login csrf cookie");
    let submitted = app
        .clone()
        .oneshot(
            HttpRequest::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, format!("{LOGIN_CSRF_COOKIE}={token}"))
                .body(Body::from(format!(
                    "username={user}&password={password}&csrf={token}"
                )))
                .unwrap(),
        )
        .await
        .expect("login");
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let session = set_cookie_value(&submitted, SESSION_COOKIE).expect("session cookie");
    let cookie = format!("{SESSION_COOKIE}={session}");
    let board = get(app, "/", Some(&cookie)).await;
    assert_eq!(board.status(), StatusCode::OK);
    let html = body_text(board).await;
    let csrf = html
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf meta")
        .to_string();
    (cookie, csrf)
}

async fn get(app: &Router, uri: &str, cookie: Option<&str>) -> Response {
    let mut request = HttpRequest::get(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .expect("response")
}

async fn post_json(
    app: &Router,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: &str,
) -> Response {
    let mut request = HttpRequest::post(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    app.clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .expect("response")
}

#[tokio::test]
async fn static_assets_are_public_and_typed() {
    let h = harness().await;
    let css = get(&h.app, "/static/app.css", None).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(
        css.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert!(css.headers().contains_key(header::CACHE_CONTROL));
    assert_eq!(
        get(&h.app, "/static/nope.js", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn call_data_needs_a_session() {
    let h = harness().await;
    for uri in [
        "/api/live",
        "/api/events",
        "/api/calls",
        "/api/calls/x",
        "/api/kpis",
        "/calls/x/recording",
    ] {
        let response = get(&h.app, uri, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    for uri in ["/", "/calls/x", "/history", "/kpis", "/admin"] {
        let response = get(&h.app, uri, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{uri}");
    }
}

#[tokio::test]
async fn signed_in_pages_and_api_errors() {
    let h = harness().await;
    let (cookie, csrf) = login(&h.app, "sam", "sam-pass").await;
    let c = Some(cookie.as_str());

    let bad = get(&h.app, "/api/calls?from=not-a-date", c).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&body_text(bad).await).expect("json");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("from")),
        "{body}"
    );
    assert_eq!(
        get(&h.app, "/api/calls?limit=9999", c).await.status(),
        StatusCode::BAD_REQUEST
    );
    let ok = get(&h.app, "/api/calls?from=2020-01-01&escalation=any", c).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(body_text(ok).await.trim(), "[]");

    assert_eq!(
        get(&h.app, "/api/calls/unknown", c).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&h.app, "/calls/unknown", c).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&h.app, "/admin", c).await.status(),
        StatusCode::FORBIDDEN
    );
    let history = get(&h.app, "/history?escalation=bogus", c).await;
    assert_eq!(history.status(), StatusCode::BAD_REQUEST);
    let kpis = get(&h.app, "/kpis", c).await;
    assert_eq!(kpis.status(), StatusCode::OK);
    let kpis = body_text(kpis).await;
    assert!(kpis.contains(r#"data-chart="hours""#) && kpis.contains("sam (supervisor)"));
    let live = get(&h.app, "/api/live", c).await;
    let live: serde_json::Value = serde_json::from_str(&body_text(live).await).expect("json");
    assert_eq!(live["queues"][0]["name"], "general");
    assert_eq!(live["agents"].as_array().map(Vec::len), Some(2));

    // Actions need the CSRF token, a known call and a known target.
    let takeover = "/api/calls/nope/takeover";
    let target = r#"{"target":"agent:alice"}"#;
    assert_eq!(
        post_json(&h.app, takeover, &cookie, None, target)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_json(&h.app, takeover, &cookie, Some(&csrf), target)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_json(
            &h.app,
            takeover,
            &cookie,
            Some(&csrf),
            r#"{"target":"agent:eve"}"#
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_json(&h.app, takeover, &cookie, Some(&csrf), r#"{"target":"me"}"#)
            .await
            .status(),
        StatusCode::CONFLICT,
        "sam has no agent phone"
    );
    assert_eq!(
        post_json(&h.app, "/api/calls/nope/hangup", &cookie, Some(&csrf), "{}")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_json(
            &h.app,
            "/api/calls/nope/flag",
            &cookie,
            Some(&csrf),
            r#"{"note":"x"}"#
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn admins_see_users_without_secrets() {
    let h = harness().await;
    let (cookie, _) = login(&h.app, "ada", "ada-pass").await;
    let admin = get(&h.app, "/admin", Some(&cookie)).await;
    assert_eq!(admin.status(), StatusCode::OK);
    let html = body_text(admin).await;
    assert!(html.contains(r#"data-user="sam""#) && html.contains(r#"data-user="ada""#));
    assert!(!html.contains("$argon2"), "no password hashes on the page");
}

#[tokio::test]
async fn a_stored_call_shows_its_record_serves_its_recording_and_is_audited() {
    let h = harness().await;
    let (cookie, csrf) = login(&h.app, "sam", "sam-pass").await;
    let wav = h.state.recordings_dir.join("call-1.wav");
    std::fs::write(&wav, vec![7u8; 1000]).expect("wav");
    h.state
        .store
        .call_started(NewCall {
            id: "call-1".into(),
            sip_call_id: "sip-1".into(),
            caller: "<script>alert(1)</script>".into(),
            callee: "100".into(),
            route: Some("council".into()),
            source: "127.0.0.1:5060".into(),
            node: "test".into(),
            started_at: Utc::now(),
        })
        .await;
    h.state
        .store
        .call_answered("call-1", "PCMU", Some(wav.display().to_string()))
        .await;
    // The page offers the recording once the call has ended.
    h.state
        .store
        .call_ended(
            "call-1",
            crate::store::CallEnd {
                ended_at: Utc::now(),
                reason: "caller hung up".into(),
                hangup_by: crate::store::HangupBy::Caller,
                sip_status: Some(200),
                stats: None,
            },
        )
        .await;
    h.state.store.flush().await;

    let page = get(&h.app, "/calls/call-1", Some(&cookie)).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .is_ok_and(|v| v.contains("script-src 'self'"))
    );
    let html = body_text(page).await;
    assert!(html.contains(
        r#"<audio data-testid="recording" controls preload="none" src="/calls/call-1/recording">"#
    ));
    assert!(!html.contains("<script>alert(1)"));

    let full = get(&h.app, "/calls/call-1/recording", Some(&cookie)).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(body_text(full).await.len(), 1000);
    let ranged = h
        .app
        .clone()
        .oneshot(
            HttpRequest::get("/calls/call-1/recording")
                .header(header::COOKIE, &cookie)
                .header(header::RANGE, "bytes=100-199")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect("range");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_text(ranged).await.len(), 100);

    let flag = post_json(
        &h.app,
        "/api/calls/call-1/flag",
        &cookie,
        Some(&csrf),
        r#"{"note":"check this"}"#,
    )
    .await;
    assert_eq!(flag.status(), StatusCode::CREATED);

    h.state.store.flush().await;
    let detail = get(&h.app, "/api/calls/call-1", Some(&cookie)).await;
    assert_eq!(detail.status(), StatusCode::OK);
    let detail: serde_json::Value = serde_json::from_str(&body_text(detail).await).expect("json");
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .expect("audit list")
        .iter()
        .filter(|a| a["actor"] == "sam")
        .filter_map(|a| a["action"].as_str())
        .collect();
    for wanted in ["view_transcript", "play_recording", "flagged"] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    assert_eq!(
        actions.iter().filter(|a| **a == "play_recording").count(),
        1,
        "a ranged continuation is not a new playback"
    );
}

#[tokio::test]
async fn recordings_named_outside_the_directory_are_not_served() {
    let h = harness().await;
    let (cookie, _) = login(&h.app, "sam", "sam-pass").await;
    let outside = h._dir.path().join("outside.wav");
    std::fs::write(&outside, b"RIFF").expect("wav");
    h.state
        .store
        .call_started(NewCall {
            id: "call-2".into(),
            sip_call_id: "sip-2".into(),
            caller: "1".into(),
            callee: "2".into(),
            route: None,
            source: "x".into(),
            node: "test".into(),
            started_at: Utc::now(),
        })
        .await;
    h.state
        .store
        .call_answered("call-2", "PCMU", Some(outside.display().to_string()))
        .await;
    h.state.store.flush().await;
    let response = get(&h.app, "/calls/call-2/recording", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_event_stream_starts_with_a_board_snapshot_then_follows_calls() {
    let h = harness().await;
    let (cookie, _) = login(&h.app, "sam", "sam-pass").await;
    let response = get(&h.app, "/api/events", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.expect("a chunk").expect("data");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("event: board\n"), "{first}");
    h.state.events.publish(crate::events::CallEvent::State {
        call_id: "z".into(),
        state: "queued".into(),
        at: Utc::now(),
    });
    let next = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("an event in time")
        .expect("a chunk")
        .expect("data");
    let next = String::from_utf8_lossy(&next).into_owned();
    assert!(
        next.starts_with("event: call\n") && next.contains(r#""type":"state""#),
        "{next}"
    );
}

#[tokio::test]
async fn agent_state_changes_need_csrf_a_known_agent_and_a_choosable_state() {
    let h = harness().await;
    let (cookie, csrf) = login(&h.app, "sam", "sam-pass").await;
    let url = "/api/agents/alice/state";
    let available = r#"{"state":"available"}"#;
    assert_eq!(
        post_json(&h.app, url, &cookie, None, available)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_json(
            &h.app,
            "/api/agents/eve/state",
            &cookie,
            Some(&csrf),
            available
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    for bad in [
        r#"{"state":"on_call"}"#,
        r#"{"state":"ringing"}"#,
        r#"{"nope":1}"#,
    ] {
        assert_eq!(
            post_json(&h.app, url, &cookie, Some(&csrf), bad)
                .await
                .status(),
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // This harness runs without the hand-off service.
    assert_eq!(
        post_json(&h.app, url, &cookie, Some(&csrf), available)
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let board = body_text(get(&h.app, "/", Some(&cookie)).await).await;
    assert!(board.contains(
        r#"<tr data-agent="alice"><td data-field="id">alice</td><td data-field="state">"#
    ));
    assert!(board.contains(r#"data-action="agent-state" data-state="break""#));
    assert!(board.contains(r#"data-testid="agent-status""#));
}
