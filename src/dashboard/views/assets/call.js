// A call's page: live transcript and decisions from /api/events, the
// supervisor's actions, and listen-in over a WebSocket played with Web Audio.
"use strict";

window.frontdoorListenFrames = 0;

(function () {
  const { el, flagSpan, post } = window.frontdoor;
  const root = document.querySelector(".call[data-call-id]");
  if (!root) return;
  const callId = root.getAttribute("data-call-id");
  const api = `/api/calls/${encodeURIComponent(callId)}`;
  const transcript = document.querySelector('[data-testid="transcript"]');
  const decisions = document.querySelector('[data-testid="decisions"] tbody');
  const flags = document.querySelector('[data-testid="flags"]');
  const stateEl = document.querySelector('[data-testid="call-state"]');
  const intentEl = document.querySelector('[data-testid="intent"]');
  const status = document.querySelector('[data-testid="action-status"]');
  const listenStatus = document.querySelector('[data-testid="listen-status"]');
  const listenButton = document.querySelector('button[data-action="listen"]');
  let source = null;

  const say = (text, isError) => {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  };

  const setState = (state) => {
    stateEl.textContent = String(state).replace(/_/g, " ");
    stateEl.className = `state state-${state}`;
  };

  const addFlag = (flag) => {
    for (const span of flags.querySelectorAll("span.flag")) {
      if (span.getAttribute("data-flag") === flag) return;
    }
    flags.appendChild(flagSpan(flag));
  };

  const turnNode = (speaker, text, isFinal, at) => {
    const div = el("div", { class: "turn", "data-speaker": speaker, "data-final": isFinal ? "true" : "false", "data-at": at });
    div.appendChild(el("span", { class: "speaker" }, speaker));
    div.appendChild(document.createTextNode(" "));
    div.appendChild(el("span", { class: "text" }, text));
    return div;
  };

  // A partial replaces the speaker's open partial; a final closes it. The
  // same final seen twice (snapshot and stream overlap) is kept once.
  const addLine = (speaker, text, isFinal, at) => {
    const turns = [...transcript.querySelectorAll(".turn")];
    const open = turns.reverse().find((t) => t.getAttribute("data-speaker") === speaker && t.getAttribute("data-final") === "false");
    if (open) open.remove();
    if (isFinal) {
      const dup = [...transcript.querySelectorAll('.turn[data-final="true"]')].some((t) =>
        t.getAttribute("data-speaker") === speaker && t.getAttribute("data-at") === at &&
        t.querySelector(".text").textContent === text);
      if (dup) return;
    }
    const stick = transcript.scrollTop + transcript.clientHeight >= transcript.scrollHeight - 8;
    transcript.appendChild(turnNode(speaker, text, isFinal, at));
    if (stick) transcript.scrollTop = transcript.scrollHeight;
  };

  const addDecision = (d) => {
    const tr = el("tr");
    tr.appendChild(el("td", {}, d.at));
    tr.appendChild(el("td", { "data-field": "intent" }, d.intent || "—"));
    tr.appendChild(el("td", {}, typeof d.confidence === "number" ? d.confidence.toFixed(2) : "—"));
    tr.appendChild(el("td", { "data-field": "escalation" }, d.escalation));
    tr.appendChild(el("td", { "data-field": "reason" }, d.reason));
    decisions.appendChild(tr);
    if (d.intent) intentEl.textContent = d.intent;
    if (d.escalation && d.escalation !== "none") addFlag(d.escalation);
  };

  const applySnapshot = (live) => {
    setState(live.call.state);
    if (live.call.intent) intentEl.textContent = live.call.intent;
    for (const f of live.call.flags || []) addFlag(f);
    transcript.replaceChildren(...live.transcript.map((l) => turnNode(l.speaker, l.text, l.is_final, l.at)));
    transcript.scrollTop = transcript.scrollHeight;
    decisions.replaceChildren();
    for (const d of live.decisions) addDecision(d);
  };

  const ended = () => {
    setState("ended");
    root.setAttribute("data-live", "false");
    for (const b of document.querySelectorAll('[data-action="listen"],[data-action="takeover"],[data-action="hangup"],select[name="takeover-target"]')) {
      b.disabled = true;
    }
    stopListening("The call has ended.");
    if (source) { source.close(); source = null; }
    const link = el("a", { href: window.location.pathname }, "Reload");
    say("The call has ended. ");
    status.appendChild(link);
    status.appendChild(document.createTextNode(" to see its record and recording."));
  };

  const applyEvent = (ev) => {
    if (ev.call_id !== callId) return;
    switch (ev.type) {
      case "transcript": addLine(ev.speaker, ev.text, ev.is_final, ev.at); break;
      case "decision": addDecision(ev); break;
      case "state": setState(ev.state); break;
      case "ended": ended(); break;
      default: break;
    }
  };

  const follow = () => {
    if (root.getAttribute("data-live") !== "true") return;
    source = new EventSource(`/api/events?call=${encodeURIComponent(callId)}`);
    source.addEventListener("error", () => {
      if (!source || source.readyState !== EventSource.CLOSED) return;
      source = null;
      // An error status: an expired session goes to the login page.
      fetch("/api/live", { credentials: "same-origin" }).then((res) => {
        if (res.status === 401) {
          window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
        } else {
          setTimeout(follow, 3000);
        }
      }, () => setTimeout(follow, 3000));
    });
    source.addEventListener("call_snapshot", (e) => {
      try { applySnapshot(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    source.addEventListener("call", (e) => {
      try { applyEvent(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    // A board without this call means it ended while we were not connected.
    source.addEventListener("board", (e) => {
      try {
        const snap = JSON.parse(e.data);
        if (!(snap.calls || []).some((c) => c.id === callId)) ended();
      } catch (err) { console.error(err); }
    });
  };
  follow();

  const act = async (button, url, payload, done) => {
    button.disabled = true;
    say("Working…");
    try {
      const res = await post(url, payload);
      if (res.ok) {
        // The end of the call may arrive before the hang-up's answer; the
        // "call has ended" message is the more useful one to keep.
        const superseded = root.getAttribute("data-live") === "false" && button.getAttribute("data-action") !== "flag";
        if (!superseded) say(res.body.status || "Done.");
        if (done) done();
      }
      else if (res.status === 401) { window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`); }
      else say(res.body.error || `Failed (${res.status}).`, true);
    } catch (err) {
      say(`Failed: ${err}`, true);
    } finally {
      if (root.getAttribute("data-live") === "true" || button.getAttribute("data-action") === "flag") button.disabled = false;
    }
  };

  const takeover = document.querySelector('button[data-action="takeover"]');
  const target = document.querySelector('select[name="takeover-target"]');
  if (takeover) takeover.addEventListener("click", () => act(takeover, `${api}/takeover`, { target: target ? target.value : "" }));
  const hangup = document.querySelector('button[data-action="hangup"]');
  if (hangup) hangup.addEventListener("click", () => act(hangup, `${api}/hangup`, {}));
  const flag = document.querySelector('button[data-action="flag"]');
  const note = document.querySelector('textarea[name="flag-note"]');
  if (flag) flag.addEventListener("click", () => act(flag, `${api}/flag`, { note: note ? note.value : "" }, () => {
    if (note) note.value = "";
    addFlag("review");
  }));

  // ---- listen-in: 640-byte frames, 160 caller samples then 160 of the
  // other side, 8 kHz signed 16-bit little-endian; both are mixed to mono.
  let socket = null;
  let audio = null;
  let playAt = 0;

  const play = (data) => {
    if (!audio) return;
    if (audio.state === "suspended") { audio.resume().catch(() => {}); }
    const view = new DataView(data);
    const half = Math.floor(view.byteLength / 4);
    if (half === 0) return;
    const buffer = audio.createBuffer(1, half, 8000);
    const out = buffer.getChannelData(0);
    for (let i = 0; i < half; i++) {
      const caller = view.getInt16(i * 2, true);
      const other = view.getInt16((half + i) * 2, true);
      out[i] = Math.max(-1, Math.min(1, (caller + other) / 65536));
    }
    const now = audio.currentTime;
    // Keep a small cushion against network jitter; if we fell far behind
    // (a suspended context, a stall) drop audio rather than grow latency.
    if (playAt < now + 0.02 || playAt > now + 1.0) playAt = now + 0.15;
    const node = audio.createBufferSource();
    node.buffer = buffer;
    node.connect(audio.destination);
    node.start(playAt);
    playAt += buffer.duration;
  };

  const stopListening = (why) => {
    if (socket) { const s = socket; socket = null; s.close(); }
    if (audio) { audio.close().catch(() => {}); audio = null; }
    if (listenButton) { listenButton.textContent = "Listen in"; listenButton.classList.remove("active"); }
    if (why) listenStatus.textContent = why;
  };

  const startListening = () => {
    try {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    } catch (_) {
      audio = null;
      listenStatus.textContent = "This browser cannot play audio; frames are still received.";
    }
    playAt = 0;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${window.location.host}${api}/listen`);
    ws.binaryType = "arraybuffer";
    socket = ws;
    listenButton.textContent = "Stop listening";
    listenButton.classList.add("active");
    listenStatus.textContent = "Connecting…";
    ws.addEventListener("open", () => { listenStatus.textContent = "Listening."; });
    ws.addEventListener("message", (e) => {
      if (!(e.data instanceof ArrayBuffer)) return;
      window.frontdoorListenFrames += 1;
      try { play(e.data); } catch (err) { /* audio trouble must not stop counting */ }
    });
    ws.addEventListener("close", () => {
      if (socket === ws) stopListening("Listening stopped.");
    });
    ws.addEventListener("error", () => { listenStatus.textContent = "Listen-in failed."; });
  };

  if (listenButton) {
    listenButton.addEventListener("click", () => {
      if (socket) stopListening("Listening stopped."); else startListening();
    });
  }
})();
