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

  return { csrf, el, flagSpan, since, post };
})();
