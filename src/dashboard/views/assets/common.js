// Shared helpers for the dashboard pages. Data is only ever placed with
// textContent / setAttribute, never innerHTML: callers control much of it.
"use strict";

window.frontdoor = (function () {
  const csrf = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };

  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  const RISK = new Set(["distress", "safeguarding", "emergency"]);
  const flagSpan = (flag) =>
    el("span", { class: RISK.has(flag) ? "flag flag-risk" : "flag flag-attention", "data-flag": flag },
       String(flag).replace(/_/g, " "));

  // "m:ss" (or "h:mm:ss") since an RFC 3339 time.
  const since = (iso) => {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "—";
    let s = Math.max(0, Math.floor((Date.now() - t) / 1000));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  };

  // POSTs JSON with the session's CSRF token; resolves to {ok, status, body}.
  const post = async (url, payload) => {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(payload || {}),
    });
    let body = {};
    try { body = await res.json(); } catch (_) { /* empty or not JSON */ }
    return { ok: res.ok, status: res.status, body };
  };

  // The state buttons of an agent's row (the server renders the same).
  const AGENT_STATES = [["available", "Available"], ["break", "Break"], ["offline", "Offline"]];
  const agentStateCell = () => {
    const td = el("td", { "data-field": "set-state" });
    for (const [value, label] of AGENT_STATES) {
      td.appendChild(el("button", { type: "button", "data-action": "agent-state", "data-state": value }, label));
    }
    return td;
  };

  // One listener for every agents table, so rows added later work too.
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest ? ev.target.closest('button[data-action="agent-state"]') : null;
    if (!button) return;
    const row = button.closest("tr[data-agent]");
    if (!row) return;
    const agent = row.getAttribute("data-agent");
    const wanted = button.getAttribute("data-state");
    const status = document.querySelector('[data-testid="agent-status"]');
    button.disabled = true;
    try {
      const res = await post(`/api/agents/${encodeURIComponent(agent)}/state`, { state: wanted });
      if (res.ok) {
        row.querySelector('[data-field="state"]').replaceChildren(
          el("span", { class: `agent-state agent-${res.body.state}` }, res.body.state));
      }
      if (status) status.textContent = res.ok ? `${agent}: ${res.body.state}` : `${agent}: ${res.body.error || res.status}`;
    } catch (_) {
      if (status) status.textContent = `${agent}: not changed (connection problem)`;
    } finally {
      button.disabled = false;
    }
  });

  return { csrf, el, flagSpan, since, post, agentStateCell };
})();
