// Live board: rows follow /api/events (a `board` snapshot on connect, then
// `call` events); queues and agents refresh from /api/live every few seconds.
"use strict";

(function () {
  const { el, flagSpan, since } = window.frontdoor;
  const tbody = document.querySelector('[data-testid="live-calls"] tbody');
  const connection = document.querySelector('[data-testid="connection"]');
  const count = document.querySelector('[data-testid="live-count"]');
  if (!tbody) return;

  const rowOf = (id) => {
    for (const tr of tbody.querySelectorAll("tr[data-call-id]")) {
      if (tr.getAttribute("data-call-id") === id) return tr;
    }
    return null;
  };
  const cell = (tr, field) => tr.querySelector(`[data-field="${field}"]`);

  const setState = (tr, state) => {
    const td = cell(tr, "state");
    td.replaceChildren(el("span", { class: `state state-${state}` }, String(state).replace(/_/g, " ")));
  };

  const setFlags = (tr, flags) => {
    const td = cell(tr, "flags");
    td.replaceChildren(...(flags || []).map(flagSpan));
  };

  const addFlag = (tr, flag) => {
    const td = cell(tr, "flags");
    for (const span of td.querySelectorAll("span.flag")) {
      if (span.getAttribute("data-flag") === flag) return;
    }
    td.appendChild(flagSpan(flag));
  };

  const newRow = (call) => {
    const tr = el("tr", { "data-call-id": call.id });
    tr.appendChild(el("td", { "data-field": "state" }));
    tr.appendChild(el("td", { "data-field": "route" }, call.route || ""));
    tr.appendChild(el("td", { "data-field": "caller" }, call.caller || ""));
    tr.appendChild(el("td", { "data-field": "intent" }, call.intent || "—"));
    tr.appendChild(el("td", { "data-field": "duration", "data-since": call.started_at || "" }, "—"));
    tr.appendChild(el("td", { "data-field": "flags" }));
    tr.appendChild(el("td", { "data-field": "last-text", class: "last-text" }, call.last_text || "—"));
    const open = el("td");
    open.appendChild(el("a", { "data-action": "open", href: `/calls/${encodeURIComponent(call.id)}` }, "Open"));
    tr.appendChild(open);
    setState(tr, call.state || "assistant");
    setFlags(tr, call.flags);
    return tr;
  };

  const upsert = (call) => {
    const existing = rowOf(call.id);
    const tr = newRow(call);
    if (existing) existing.replaceWith(tr); else tbody.appendChild(tr);
    return tr;
  };

  const updateCount = () => {
    const n = tbody.querySelectorAll("tr[data-call-id]").length;
    if (count) count.textContent = n ? `(${n})` : "";
  };

  const tick = () => {
    for (const td of tbody.querySelectorAll('[data-field="duration"]')) {
      td.textContent = since(td.getAttribute("data-since"));
    }
  };

  const renderQueues = (queues) => {
    const body = document.querySelector('[data-testid="queues"] tbody');
    if (!body || !queues) return;
    for (const q of queues) {
      let tr = [...body.querySelectorAll("tr[data-queue]")].find((r) => r.getAttribute("data-queue") === q.name);
      if (!tr) {
        tr = el("tr", { "data-queue": q.name });
        tr.appendChild(el("td", { "data-field": "name" }, q.name));
        tr.appendChild(el("td", { "data-field": "waiting" }));
        body.appendChild(tr);
      }
      tr.querySelector('[data-field="waiting"]').textContent = String(q.waiting);
    }
  };

  const renderAgents = (agents) => {
    const body = document.querySelector('[data-testid="agents"] tbody');
    if (!body || !agents) return;
    for (const a of agents) {
      let tr = [...body.querySelectorAll("tr[data-agent]")].find((r) => r.getAttribute("data-agent") === a.id);
      if (!tr) {
        tr = el("tr", { "data-agent": a.id });
        tr.appendChild(el("td", { "data-field": "id" }, a.id));
        tr.appendChild(el("td", { "data-field": "state" }));
        tr.appendChild(window.frontdoor.agentStateCell());
        body.appendChild(tr);
      }
      tr.querySelector('[data-field="state"]').replaceChildren(
        el("span", { class: `agent-state agent-${a.state}` }, a.state));
    }
  };

  const applySnapshot = (snap) => {
    const live = new Set((snap.calls || []).map((c) => c.id));
    for (const tr of tbody.querySelectorAll("tr[data-call-id]")) {
      if (!live.has(tr.getAttribute("data-call-id"))) tr.remove();
    }
    for (const call of snap.calls || []) upsert(call);
    renderQueues(snap.queues);
    renderAgents(snap.agents);
    updateCount();
    tick();
  };

  const applyEvent = (ev) => {
    const id = ev.call_id;
    if (ev.type === "started") {
      if (!rowOf(id)) {
        tbody.appendChild(newRow({ id, caller: ev.caller, callee: ev.callee, route: ev.route,
                                   state: "assistant", started_at: ev.at, flags: [] }));
      }
    } else if (ev.type === "ended") {
      const tr = rowOf(id);
      if (tr) tr.remove();
    } else {
      const tr = rowOf(id);
      if (!tr) return;
      if (ev.type === "state") setState(tr, ev.state);
      else if (ev.type === "decision") {
        if (ev.intent) cell(tr, "intent").textContent = ev.intent;
        if (ev.escalation && ev.escalation !== "none") addFlag(tr, ev.escalation);
      } else if (ev.type === "transcript" && ev.is_final) {
        cell(tr, "last-text").textContent = ev.text;
      }
    }
    updateCount();
    tick();
  };

  const connect = () => {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      connection.textContent = "Live";
      connection.classList.remove("down");
    });
    source.addEventListener("error", () => {
      connection.textContent = "Reconnecting…";
      connection.classList.add("down");
      // The browser retries a dropped stream itself, but gives up on an
      // error status; then retry here (an expired session is sent to the
      // login page by the periodic refresh).
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    });
    source.addEventListener("board", (e) => {
      try { applySnapshot(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    source.addEventListener("call", (e) => {
      try { applyEvent(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
  };

  const refresh = async () => {
    try {
      const res = await fetch("/api/live", { credentials: "same-origin" });
      if (res.status === 401) { window.location.assign("/login?next=/"); return; }
      if (!res.ok) return;
      const snap = await res.json();
      renderQueues(snap.queues);
      renderAgents(snap.agents);
    } catch (_) { /* the next refresh tries again */ }
  };

  updateCount();
  tick();
  connect();
  setInterval(tick, 1000);
  setInterval(refresh, 3000);
})();
