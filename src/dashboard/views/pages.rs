//! Server-rendered HTML of the dashboard pages.
//!
//! Callers control much of what is shown (caller ID, what they say, which
//! the assistant repeats), so every value goes through [`escape`]; the page
//! scripts add data with `textContent` only. Pages carry no inline script or
//! style, which lets the Content-Security-Policy forbid both.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{AgentView, QueueView};
use crate::dashboard::live::{FLAG_KINDS, LiveCall, LiveCallDetail};
use crate::store::{CallDetail, CallSummary, Kpis};

/// Who is looking, as every page header shows it.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub is_admin: bool,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Percent-encodes one path segment (a call id in a link).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Red for flags that mean someone may be at risk, amber for the others.
pub fn flag_class(flag: &str) -> &'static str {
    match flag {
        "distress" | "safeguarding" | "emergency" => "flag flag-risk",
        _ => "flag flag-attention",
    }
}

fn flag_spans(out: &mut String, flags: &[String]) {
    for flag in flags {
        let _ = write!(
            out,
            r#"<span class="{}" data-flag="{}">{}</span> "#,
            flag_class(flag),
            escape(flag),
            escape(&flag.replace('_', " "))
        );
    }
}

fn opt(text: Option<&str>) -> String {
    escape(text.unwrap_or("—"))
}

pub fn layout(viewer: &Viewer, title: &str, active: &str, body: &str, scripts: &[&str]) -> String {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · Frontdoor</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/common.js" defer></script>
"#,
        csrf = escape(viewer.csrf),
        title = escape(title),
    );
    for script in scripts {
        let _ = writeln!(html, r#"<script src="/static/{script}" defer></script>"#);
    }
    html.push_str("</head><body><header class=\"top\"><span class=\"brand\">Frontdoor</span><nav>");
    let mut links = vec![
        ("/", "Live board"),
        ("/history", "History"),
        ("/kpis", "KPIs"),
    ];
    if viewer.is_admin {
        links.push(("/admin", "Admin"));
    }
    for (href, label) in links {
        let current = if href == active {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(html, r#"<a href="{href}"{current}>{label}</a>"#);
    }
    let _ = write!(
        html,
        r#"</nav><span class="whoami" data-testid="whoami">{name} ({role})</span>
<form class="logout" method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" data-action="logout">Log out</button></form>
</header><main>
"#,
        name = escape(viewer.name),
        role = escape(viewer.role),
        csrf = escape(viewer.csrf),
    );
    html.push_str(body);
    html.push_str("\n</main></body></html>\n");
    html
}

/// A message page (forbidden, not found, errors) inside the usual frame.
pub fn message_page(viewer: &Viewer, title: &str, message: &str) -> String {
    let body = format!(
        r#"<h1>{}</h1><p class="message" data-testid="message">{}</p>"#,
        escape(title),
        escape(message)
    );
    layout(viewer, title, "", &body, &[])
}

pub fn board_row(out: &mut String, call: &LiveCall) {
    let _ = write!(
        out,
        r#"<tr data-call-id="{id}"><td data-field="state"><span class="state state-{state}">{state_text}</span></td><td data-field="route">{route}</td><td data-field="caller">{caller}</td><td data-field="intent">{intent}</td><td data-field="duration" data-since="{since}">—</td><td data-field="flags">"#,
        id = escape(&call.id),
        state = escape(&call.state),
        state_text = escape(&call.state.replace('_', " ")),
        route = escape(&call.route),
        caller = escape(&call.caller),
        intent = opt(call.intent.as_deref()),
        since = escape(&call.started_at),
    );
    flag_spans(out, &call.flags);
    let _ = writeln!(
        out,
        r#"</td><td data-field="last-text" class="last-text">{text}</td><td><a data-action="open" href="/calls/{href}">Open</a></td></tr>"#,
        text = opt(call.last_text.as_deref()),
        href = url_segment(&call.id),
    );
}

fn queue_rows(out: &mut String, queues: &[QueueView]) {
    for q in queues {
        let _ = write!(
            out,
            r#"<tr data-queue="{name}"><td data-field="name">{name}</td><td data-field="waiting">{waiting}</td></tr>"#,
            name = escape(&q.name),
            waiting = q.waiting
        );
    }
}

/// The states a person may set for an agent, `(value, label)`.
const AGENT_STATE_CHOICES: [(&str, &str); 3] = [
    ("available", "Available"),
    ("break", "Break"),
    ("offline", "Offline"),
];

fn agent_rows(out: &mut String, agents: &[AgentView]) {
    for a in agents {
        let _ = write!(
            out,
            r#"<tr data-agent="{id}"><td data-field="id">{id}</td><td data-field="state"><span class="agent-state agent-{state}">{state}</span></td><td data-field="set-state">"#,
            id = escape(&a.id),
            state = escape(&a.state),
        );
        for (value, label) in AGENT_STATE_CHOICES {
            let _ = write!(
                out,
                r#"<button type="button" data-action="agent-state" data-state="{value}">{label}</button>"#
            );
        }
        out.push_str("</td></tr>");
    }
}

pub fn board_page(
    viewer: &Viewer,
    calls: &[LiveCall],
    queues: &[QueueView],
    agents: &[AgentView],
) -> String {
    let mut body = String::with_capacity(4096);
    body.push_str(
        r#"<h1>Live calls <span class="count" data-testid="live-count"></span></h1>
<p class="connection" data-testid="connection">Connecting…</p>
<table class="board" data-testid="live-calls"><thead><tr><th>State</th><th>Route</th><th>Caller</th><th>Intent</th><th>Duration</th><th>Flags</th><th>Last words</th><th></th></tr></thead><tbody>
"#,
    );
    for call in calls {
        board_row(&mut body, call);
    }
    body.push_str(
        r#"</tbody></table>
<p class="empty" data-testid="no-calls">No calls in progress.</p>
<div class="side"><section><h2>Queues</h2><table data-testid="queues"><thead><tr><th>Queue</th><th>Waiting</th></tr></thead><tbody>"#,
    );
    queue_rows(&mut body, queues);
    body.push_str(
        r#"</tbody></table></section><section><h2>Agents</h2><p class="status" data-testid="agent-status" aria-live="polite"></p><table data-testid="agents"><thead><tr><th>Agent</th><th>State</th><th>Set</th></tr></thead><tbody>"#,
    );
    agent_rows(&mut body, agents);
    body.push_str("</tbody></table></section></div>");
    layout(viewer, "Live board", "/", &body, &["board.js"])
}

/// What the call page shows about one call, live or from the records.
pub struct CallPage<'a> {
    pub id: &'a str,
    pub live: Option<&'a LiveCallDetail>,
    pub detail: Option<&'a CallDetail>,
    /// `(value, label)` of the take-over choices.
    pub targets: &'a [(String, String)],
}

fn field(out: &mut String, label: &str, value: Option<&str>) {
    let _ = write!(
        out,
        "<dt>{}</dt><dd>{}</dd>",
        escape(label),
        escape(value.unwrap_or("—"))
    );
}

pub fn call_page(viewer: &Viewer, page: &CallPage) -> String {
    let mut body = String::with_capacity(8192);
    let record = page.detail.map(|d| &d.call);
    let live_call = page.live.map(|l| &l.call);
    let state = match (live_call, record) {
        (Some(c), _) => c.state.clone(),
        (None, Some(r)) if r.ended_at.is_some() => "ended".to_string(),
        (None, Some(r)) => r.state.clone(),
        (None, None) => "unknown".to_string(),
    };
    let is_live = page.live.is_some();
    let _ = write!(
        body,
        r#"<div class="call" data-call-id="{id}" data-live="{is_live}">
<h1>Call <code>{id}</code> <span class="state state-{state}" data-testid="call-state">{state_text}</span></h1>
<dl class="facts">"#,
        id = escape(page.id),
        state = escape(&state),
        state_text = escape(&state.replace('_', " ")),
    );
    let caller = live_call
        .map(|c| c.caller.as_str())
        .or(record.map(|r| r.caller.as_str()));
    let callee = live_call
        .map(|c| c.callee.as_str())
        .or(record.map(|r| r.callee.as_str()));
    let route = live_call
        .map(|c| c.route.as_str())
        .or(record.and_then(|r| r.route.as_deref()));
    let started = live_call
        .map(|c| c.started_at.as_str())
        .or(record.map(|r| r.started_at.as_str()));
    let answered = live_call
        .and_then(|c| c.answered_at.as_deref())
        .or(record.and_then(|r| r.answered_at.as_deref()));
    field(&mut body, "Caller", caller);
    field(&mut body, "Dialled", callee);
    field(&mut body, "Route", route);
    field(&mut body, "Started", started);
    field(&mut body, "Answered", answered);
    if let Some(r) = record {
        field(&mut body, "Ended", r.ended_at.as_deref());
        field(&mut body, "End reason", r.end_reason.as_deref());
        field(&mut body, "Hung up by", r.hangup_by.as_deref());
    }
    let _ = write!(
        body,
        r#"<dt>Intent</dt><dd data-testid="intent">{}</dd></dl>"#,
        opt(live_call.and_then(|c| c.intent.as_deref()).or_else(|| {
            // A finished call: the last intent the assistant settled on.
            page.detail
                .and_then(|d| d.turns.iter().rev().find_map(|t| t.intent.as_deref()))
        }))
    );

    // Flags: live ones, or every escalation the stored turns carry, plus a
    // supervisor's flag for review.
    let mut flags: Vec<String> = live_call.map(|c| c.flags.clone()).unwrap_or_default();
    if let Some(d) = page.detail {
        for turn in &d.turns {
            if let Some(e) = turn.escalation.as_deref()
                && FLAG_KINDS.contains(&e)
                && !flags.iter().any(|f| f == e)
            {
                flags.push(e.to_string());
            }
        }
        if d.events.iter().any(|e| e.kind == "flagged") && !flags.iter().any(|f| f == "review") {
            flags.push("review".to_string());
        }
    }
    body.push_str(r#"<div class="flags" data-testid="flags">"#);
    flag_spans(&mut body, &flags);
    body.push_str("</div>");

    let disabled = if is_live { "" } else { " disabled" };
    let _ = write!(
        body,
        r#"<section class="actions"><h2>Actions</h2>
<div class="action-row"><button type="button" data-action="listen"{disabled}>Listen in</button>
<label>Take over to <select name="takeover-target"{disabled}>"#
    );
    for (value, label) in page.targets {
        let _ = write!(
            body,
            r#"<option value="{}">{}</option>"#,
            escape(value),
            escape(label)
        );
    }
    let _ = write!(
        body,
        r#"</select></label> <button type="button" data-action="takeover"{disabled}>Take over</button>
<button type="button" class="danger" data-action="hangup"{disabled}>Hang up</button></div>
<div class="action-row"><textarea name="flag-note" rows="2" maxlength="2000" placeholder="Why should this call be reviewed?"></textarea>
<button type="button" data-action="flag">Flag for review</button></div>
<p class="action-status" data-testid="action-status" role="status"></p>
<p class="listen-status" data-testid="listen-status"></p></section>
"#
    );

    body.push_str(
        r#"<section><h2>Transcript</h2><div class="transcript" data-testid="transcript">"#,
    );
    match (page.live, page.detail) {
        (Some(live), _) => {
            for line in &live.transcript {
                turn(
                    &mut body,
                    &line.speaker,
                    &line.text,
                    line.is_final,
                    &line.at,
                );
            }
        }
        (None, Some(d)) => {
            for t in &d.turns {
                turn(&mut body, &t.speaker, &t.text, true, &rfc3339(&t.at));
            }
        }
        (None, None) => {}
    }
    body.push_str("</div></section>");

    body.push_str(
        r#"<section><h2>Decisions</h2><table class="decisions" data-testid="decisions"><thead><tr><th>Time</th><th>Intent</th><th>Confidence</th><th>Escalation</th><th>Reason</th></tr></thead><tbody>"#,
    );
    match (page.live, page.detail) {
        (Some(live), _) => {
            for d in &live.decisions {
                decision_row(
                    &mut body,
                    &d.at,
                    d.intent.as_deref(),
                    Some(d.confidence),
                    &d.escalation,
                    &d.reason,
                );
            }
        }
        (None, Some(detail)) => {
            for t in detail
                .turns
                .iter()
                .filter(|t| t.intent.is_some() || t.escalation.is_some() || t.reason.is_some())
            {
                decision_row(
                    &mut body,
                    &rfc3339(&t.at),
                    t.intent.as_deref(),
                    t.confidence,
                    t.escalation.as_deref().unwrap_or("none"),
                    t.reason.as_deref().unwrap_or(""),
                );
            }
        }
        (None, None) => {}
    }
    body.push_str("</tbody></table></section>");

    if let Some(d) = page.detail {
        // Only once the call has ended (the file is still being written
        // before), and fetched only when someone presses play: every
        // playback is audited, so merely opening the page must not count.
        if d.call.recording_path.is_some() && d.call.ended_at.is_some() {
            let _ = write!(
                body,
                r#"<section><h2>Recording</h2><audio data-testid="recording" controls preload="none" src="/calls/{}/recording"></audio></section>"#,
                url_segment(page.id)
            );
        }
        if !d.transfers.is_empty() {
            body.push_str(r#"<section><h2>Transfers</h2><table data-testid="transfers"><thead><tr><th>Requested</th><th>By</th><th>Reason</th><th>Queue</th><th>Agent</th><th>Outcome</th></tr></thead><tbody>"#);
            for t in &d.transfers {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&rfc3339(&t.requested_at)),
                    escape(&t.requested_by),
                    escape(&t.reason),
                    opt(t.queue.as_deref()),
                    opt(t.agent.as_deref()),
                    escape(&t.outcome)
                );
            }
            body.push_str("</tbody></table></section>");
        }
        if !d.events.is_empty() {
            body.push_str(r#"<section><h2>Events</h2><ul class="events" data-testid="events">"#);
            for e in &d.events {
                let _ = write!(
                    body,
                    r#"<li><time>{}</time> <b>{}</b> {}</li>"#,
                    escape(&e.at),
                    escape(&e.kind),
                    escape(&e.detail)
                );
            }
            body.push_str("</ul></section>");
        }
        body.push_str(r#"<section><h2>Audit</h2><ul class="audit" data-testid="audit">"#);
        for a in &d.audit {
            let _ = write!(
                body,
                r#"<li><time>{}</time> <b>{}</b> {} {}</li>"#,
                escape(&rfc3339(&a.at)),
                escape(&a.actor),
                escape(&a.action),
                escape(&a.detail)
            );
        }
        body.push_str("</ul></section>");
    }
    body.push_str("</div>");
    layout(viewer, "Call", "", &body, &["call.js"])
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn turn(out: &mut String, speaker: &str, text: &str, is_final: bool, at: &str) {
    let _ = write!(
        out,
        r#"<div class="turn" data-speaker="{speaker}" data-final="{is_final}" data-at="{at}"><span class="speaker">{speaker}</span> <span class="text">{text}</span></div>"#,
        speaker = escape(speaker),
        at = escape(at),
        text = escape(text),
    );
}

fn decision_row(
    out: &mut String,
    at: &str,
    intent: Option<&str>,
    confidence: Option<f32>,
    escalation: &str,
    reason: &str,
) {
    let confidence = confidence.map_or_else(|| "—".to_string(), |c| format!("{c:.2}"));
    let _ = write!(
        out,
        r#"<tr><td>{}</td><td data-field="intent">{}</td><td>{}</td><td data-field="escalation">{}</td><td data-field="reason">{}</td></tr>"#,
        escape(at),
        opt(intent),
        confidence,
        escape(escalation),
        escape(reason)
    );
}

/// The history search form's values as typed (re-shown on the results page).
#[derive(Default)]
pub struct HistoryForm<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub number: &'a str,
    pub intent: &'a str,
    pub escalation: &'a str,
    pub q: &'a str,
}

pub fn history_page(
    viewer: &Viewer,
    form: &HistoryForm,
    results: Result<&[CallSummary], &str>,
) -> String {
    let mut body = String::with_capacity(8192);
    let input = |name: &str, label: &str, kind: &str, value: &str| {
        format!(
            r#"<label>{label} <input type="{kind}" name="{name}" value="{}"></label> "#,
            escape(value)
        )
    };
    body.push_str(r#"<h1>Call history</h1><form class="search" method="get" action="/history" data-testid="history-search">"#);
    body.push_str(&input("from", "From", "date", form.from));
    body.push_str(&input("to", "To", "date", form.to));
    body.push_str(&input("number", "Number", "text", form.number));
    body.push_str(&input("intent", "Intent", "text", form.intent));
    body.push_str(r#"<label>Escalation <select name="escalation"><option value="">(all)</option>"#);
    for kind in ["any"].iter().chain(FLAG_KINDS.iter()) {
        let selected = if *kind == form.escalation {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"<option value="{kind}"{selected}>{}</option>"#,
            kind.replace('_', " ")
        );
    }
    body.push_str("</select></label> ");
    body.push_str(&input("q", "Words", "search", form.q));
    body.push_str(r#"<button type="submit">Search</button></form>"#);
    match results {
        Err(message) => {
            let _ = write!(
                body,
                r#"<p class="error" data-testid="history-error">{}</p>"#,
                escape(message)
            );
        }
        Ok(rows) => {
            body.push_str(r#"<table class="history" data-testid="history-results"><thead><tr><th>Started</th><th>Caller</th><th>Dialled</th><th>Route</th><th>Duration</th><th>Intents</th><th>Escalations</th><th>Outcome</th><th></th></tr></thead><tbody>"#);
            for call in rows {
                let duration = call
                    .duration_secs
                    .map_or_else(|| "—".to_string(), format_duration);
                let mut outcome = call.end_reason.clone().unwrap_or_default();
                if call.transferred {
                    outcome.push_str(" · transferred");
                }
                if call.flagged {
                    outcome.push_str(" · flagged");
                }
                let _ = write!(
                    body,
                    r#"<tr data-call-id="{id}"><td>{}</td><td data-field="caller">{}</td><td>{}</td><td>{}</td><td>{}</td><td data-field="intents">{}</td><td data-field="escalations">"#,
                    escape(&call.started_at),
                    escape(&call.caller),
                    escape(&call.callee),
                    opt(call.route.as_deref()),
                    escape(&duration),
                    escape(&call.intents.join(", ")),
                    id = escape(&call.id),
                );
                let flags: Vec<String> = call
                    .escalations
                    .iter()
                    .filter(|e| e.as_str() != "none")
                    .cloned()
                    .collect();
                flag_spans(&mut body, &flags);
                let _ = write!(
                    body,
                    r#"</td><td>{}{}</td><td><a data-action="open" href="/calls/{}">Open</a></td></tr>"#,
                    escape(&outcome),
                    if call.has_recording { " · ▶" } else { "" },
                    url_segment(&call.id),
                );
            }
            body.push_str("</tbody></table>");
            if rows.is_empty() {
                body.push_str(r#"<p class="empty-results">No calls match.</p>"#);
            }
        }
    }
    layout(viewer, "History", "/history", &body, &[])
}

pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".to_string();
    }
    // Saturating float-to-int conversion: absurd values cannot overflow.
    let total = secs.round() as u64;
    format!("{}:{:02}", total / 60, total % 60)
}

fn bar_chart(out: &mut String, chart: &str, title: &str, bars: &[(String, u64)], vertical: bool) {
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    if vertical {
        let (width, height, top) = (24 * 28 + 40, 220, 20);
        let _ = write!(
            out,
            r#"<svg class="chart" data-chart="{chart}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{title}">"#,
            title = escape(title),
        );
        let plot = 160.0;
        for (i, (label, value)) in bars.iter().enumerate() {
            let h = (*value as f64 / max as f64) * plot;
            let x = 30 + i * 28;
            let y = top as f64 + plot - h;
            let _ = write!(
                out,
                r##"<g data-label="{l}" data-value="{value}"><title>{l}: {value}</title><rect x="{x}" y="{y:.1}" width="22" height="{h:.1}" fill="#2f6fb0"></rect><text x="{tx}" y="{ly}" font-size="10" text-anchor="middle">{l}</text>"##,
                l = escape(label),
                tx = x + 11,
                ly = top + 175,
            );
            if *value > 0 {
                let _ = write!(
                    out,
                    r#"<text x="{}" y="{:.1}" font-size="9" text-anchor="middle">{value}</text>"#,
                    x + 11,
                    y - 3.0
                );
            }
            out.push_str("</g>");
        }
        out.push_str("</svg>");
    } else {
        let row = 26;
        let height = (bars.len().max(1) * row + 10) as u64;
        let width = 560;
        let _ = write!(
            out,
            r#"<svg class="chart" data-chart="{chart}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{title}">"#,
            title = escape(title),
        );
        if bars.is_empty() {
            out.push_str(
                r#"<text x="10" y="20" font-size="12">No escalations in this period.</text>"#,
            );
        }
        for (i, (label, value)) in bars.iter().enumerate() {
            let w = (*value as f64 / max as f64) * 340.0;
            let y = 5 + i * row;
            let colour = if matches!(label.as_str(), "distress" | "safeguarding" | "emergency") {
                "#c62828"
            } else {
                "#e69100"
            };
            let _ = write!(
                out,
                r#"<g data-label="{l}" data-value="{value}"><title>{l}: {value}</title><text x="0" y="{ty}" font-size="12">{l}</text><rect x="140" y="{y}" width="{w:.1}" height="18" fill="{colour}"></rect><text x="{vx:.1}" y="{ty}" font-size="12">{value}</text></g>"#,
                l = escape(label),
                ty = y + 14,
                vx = 146.0 + w,
            );
        }
        out.push_str("</svg>");
    }
}

pub fn kpis_page(viewer: &Viewer, from: &str, to: &str, kpis: &Kpis) -> String {
    let mut body = String::with_capacity(8192);
    let _ = write!(
        body,
        r#"<h1>Key figures</h1><form class="search" method="get" action="/kpis" data-testid="kpi-range"><label>From <input type="date" name="from" value="{}"></label> <label>To <input type="date" name="to" value="{}"></label> <button type="submit">Show</button></form>
<div class="figures">"#,
        escape(from),
        escape(to)
    );
    let secs = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |s| format!("{s:.1} s"));
    let figures = [
        (
            "kpi-calls-handled",
            "Calls handled",
            kpis.calls_handled.to_string(),
        ),
        (
            "kpi-deflection-rate",
            "Contained by the assistant",
            format!("{:.0}%", kpis.deflection_rate * 100.0),
        ),
        (
            "kpi-transfers",
            "Transferred to a person",
            kpis.transfers.to_string(),
        ),
        (
            "kpi-avg-wait",
            "Average wait for an agent",
            secs(kpis.avg_agent_wait_secs),
        ),
        (
            "kpi-time-to-answer",
            "Average time to answer",
            secs(kpis.avg_time_to_answer_secs),
        ),
        ("kpi-refused", "Refused (busy)", kpis.refused.to_string()),
    ];
    for (testid, label, value) in figures {
        let _ = write!(
            body,
            r#"<div class="figure"><div class="value" data-testid="{testid}">{}</div><div class="label">{}</div></div>"#,
            escape(&value),
            escape(label)
        );
    }
    body.push_str("</div><section><h2>Escalations by reason</h2>");
    bar_chart(
        &mut body,
        "escalations",
        "Escalations by reason",
        &kpis.escalations_by_reason,
        false,
    );
    body.push_str("</section><section><h2>Busiest hours</h2>");
    let hours: Vec<(String, u64)> = (0..24)
        .map(|h| {
            (
                format!("{h:02}"),
                kpis.calls_by_hour.get(h).copied().unwrap_or(0),
            )
        })
        .collect();
    bar_chart(&mut body, "hours", "Calls by hour of day", &hours, true);
    body.push_str("</section>");
    layout(viewer, "KPIs", "/kpis", &body, &[])
}

/// A dashboard login as the admin page lists it (never its password).
pub struct UserView<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub agent: Option<&'a str>,
}

pub struct AdminView<'a> {
    pub users: &'a [UserView<'a>],
    pub agents: &'a [AgentView],
    pub queues: &'a [(QueueView, Vec<String>)],
    pub redact: &'a [String],
    pub transcript_retention_days: u32,
    pub recording_retention_days: u32,
    pub purge_interval_mins: u64,
}

pub fn admin_page(viewer: &Viewer, admin: &AdminView) -> String {
    let mut body = String::with_capacity(4096);
    body.push_str(r#"<h1>Administration</h1><section><h2>Dashboard users</h2><table data-testid="users"><thead><tr><th>Name</th><th>Role</th><th>Agent phone</th></tr></thead><tbody>"#);
    for u in admin.users {
        let _ = write!(
            body,
            r#"<tr data-user="{name}"><td>{name}</td><td data-field="role">{role}</td><td>{agent}</td></tr>"#,
            name = escape(u.name),
            role = escape(u.role),
            agent = opt(u.agent),
        );
    }
    body.push_str(r#"</tbody></table></section><section><h2>Agents</h2><p class="status" data-testid="agent-status" aria-live="polite"></p><table data-testid="agents"><thead><tr><th>Agent</th><th>State</th><th>Set</th></tr></thead><tbody>"#);
    agent_rows(&mut body, admin.agents);
    body.push_str(r#"</tbody></table></section><section><h2>Queues</h2><table data-testid="queues"><thead><tr><th>Queue</th><th>Waiting</th><th>Members</th></tr></thead><tbody>"#);
    for (q, members) in admin.queues {
        let _ = write!(
            body,
            r#"<tr data-queue="{name}"><td>{name}</td><td data-field="waiting">{}</td><td>{}</td></tr>"#,
            q.waiting,
            escape(&members.join(", ")),
            name = escape(&q.name),
        );
    }
    let retention = |days: u32| {
        if days == 0 {
            "kept forever".to_string()
        } else {
            format!("{days} days")
        }
    };
    let redact = if admin.redact.is_empty() {
        "nothing".to_string()
    } else {
        admin.redact.join(", ")
    };
    let _ = write!(
        body,
        r#"</tbody></table></section><section><h2>Governance</h2><dl class="facts" data-testid="governance"><dt>Redacted before storing</dt><dd data-field="redact">{}</dd><dt>Transcripts</dt><dd data-field="transcript-retention">{}</dd><dt>Recordings</dt><dd data-field="recording-retention">{}</dd><dt>Purge runs every</dt><dd>{} min</dd></dl></section>"#,
        escape(&redact),
        escape(&retention(admin.transcript_retention_days)),
        escape(&retention(admin.recording_retention_days)),
        admin.purge_interval_mins,
    );
    layout(viewer, "Admin", "/admin", &body, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = r#"<script>alert('x')</script>" onmouseover="x"&"#;

    fn viewer() -> Viewer<'static> {
        Viewer {
            name: "ann<b>",
            role: "supervisor",
            csrf: "tok\"en",
            is_admin: false,
        }
    }

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain £5"), "plain £5");
    }

    #[test]
    fn url_segment_encodes_everything_but_unreserved() {
        assert_eq!(url_segment("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(url_segment("../x y"), "..%2Fx%20y");
        assert_eq!(url_segment("\"><"), "%22%3E%3C");
    }

    #[test]
    fn caller_controlled_values_never_reach_the_board_unescaped() {
        let call = LiveCall {
            id: NASTY.into(),
            caller: NASTY.into(),
            callee: NASTY.into(),
            route: NASTY.into(),
            state: NASTY.into(),
            started_at: NASTY.into(),
            intent: Some(NASTY.into()),
            flags: vec![NASTY.into(), "distress".into()],
            last_text: Some(NASTY.into()),
            ..LiveCall::default()
        };
        let html = board_page(&viewer(), &[call], &[], &[]);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("\" onmouseover"), "{html}");
        assert!(!html.contains("ann<b>"));
        assert!(html.contains(r#"content="tok&quot;en""#));
        assert!(html.contains(r#"<span class="flag flag-risk" data-flag="distress">"#));
        assert!(html.contains(r#"data-testid="whoami""#));
        assert!(html.contains(r#"data-action="logout""#));
    }

    #[test]
    fn call_page_escapes_live_transcript_and_disables_actions_when_ended() {
        let live = LiveCallDetail {
            call: LiveCall {
                id: "c1".into(),
                caller: NASTY.into(),
                state: "assistant".into(),
                flags: vec!["complexity".into()],
                ..LiveCall::default()
            },
            transcript: vec![crate::dashboard::live::LiveLine {
                speaker: "caller".into(),
                text: NASTY.into(),
                is_final: false,
                at: "t".into(),
            }],
            decisions: vec![],
        };
        let targets = vec![("queue:main".to_string(), "Queue main".to_string())];
        let html = call_page(
            &viewer(),
            &CallPage {
                id: "c1",
                live: Some(&live),
                detail: None,
                targets: &targets,
            },
        );
        assert!(!html.contains("<script>alert"));
        assert!(html.contains(r#"data-speaker="caller" data-final="false""#));
        assert!(html.contains(r#"<option value="queue:main">"#));
        assert!(html.contains(r#"data-flag="complexity""#));
        assert!(html.contains(r#"<button type="button" data-action="listen">"#));

        let ended = call_page(
            &viewer(),
            &CallPage {
                id: "c1",
                live: None,
                detail: None,
                targets: &targets,
            },
        );
        assert!(ended.contains(r#"data-action="listen" disabled"#));
    }

    #[test]
    fn a_finished_call_shows_stored_turns_decisions_flags_and_recording() {
        use crate::store::{AuditEntry, CallRecord, TurnRecord};
        let turn = |speaker: &str, text: &str, intent: Option<&str>, escalation: Option<&str>| {
            TurnRecord {
                call_id: "c9".into(),
                at: Utc::now(),
                speaker: speaker.into(),
                text: text.into(),
                intent: intent.map(str::to_string),
                confidence: Some(0.9),
                escalation: escalation.map(str::to_string),
                reason: Some("rule".into()),
            }
        };
        let detail = CallDetail {
            call: CallRecord {
                id: "c9".into(),
                sip_call_id: "s".into(),
                caller: "07700".into(),
                callee: "100".into(),
                route: Some("council".into()),
                state: "ended".into(),
                started_at: "2026-01-01T10:00:00Z".into(),
                answered_at: None,
                ended_at: Some("2026-01-01T10:01:00Z".into()),
                end_reason: None,
                hangup_by: None,
                sip_status: None,
                codec: None,
                rtp_packets_rx: None,
                rtp_packets_tx: None,
                rtp_lost: None,
                rtp_jitter_ms: None,
                recording_path: Some("/rec/c9.wav".into()),
            },
            turns: vec![
                turn("caller", NASTY, None, None),
                turn(
                    "assistant",
                    "Sorry to hear that",
                    Some("bin_missed"),
                    Some("distress"),
                ),
            ],
            events: vec![],
            audit: vec![AuditEntry {
                at: Utc::now(),
                actor: "sam".into(),
                action: "view_transcript".into(),
                call_id: Some("c9".into()),
                detail: NASTY.into(),
            }],
            requests: vec![],
            transfers: vec![],
        };
        let html = call_page(
            &viewer(),
            &CallPage {
                id: "c9",
                live: None,
                detail: Some(&detail),
                targets: &[],
            },
        );
        assert!(html.contains(r#"data-testid="call-state">ended<"#));
        assert!(html.contains(r#"<dd data-testid="intent">bin_missed</dd>"#));
        assert!(html.contains(r#"data-speaker="caller" data-final="true""#));
        assert!(html.contains(r#"data-flag="distress""#));
        assert!(html.contains(r#"<td data-field="escalation">distress</td>"#));
        assert!(html.contains(r#"src="/calls/c9/recording""#));
        assert!(html.contains(r#"data-testid="audit""#));
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn kpi_page_has_every_figure_and_both_charts() {
        let kpis = Kpis {
            calls_handled: 10,
            contained: 7,
            deflection_rate: 0.7,
            escalations_by_reason: vec![("distress".into(), 2), (NASTY.into(), 1)],
            calls_by_hour: vec![1; 24],
            ..Kpis::default()
        };
        let html = kpis_page(&viewer(), "2026-01-01", "2026-01-08", &kpis);
        for id in [
            "kpi-calls-handled",
            "kpi-deflection-rate",
            "kpi-avg-wait",
            "kpi-time-to-answer",
        ] {
            assert!(html.contains(&format!(r#"data-testid="{id}""#)), "{id}");
        }
        assert!(html.contains(r#"data-chart="escalations""#));
        assert!(html.contains(r#"data-chart="hours""#));
        assert!(html.contains(">70%<"));
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn durations_are_minutes_and_seconds() {
        assert_eq!(format_duration(65.4), "1:05");
        assert_eq!(format_duration(f64::NAN), "—");
        assert_eq!(format_duration(-1.0), "—");
    }
}
