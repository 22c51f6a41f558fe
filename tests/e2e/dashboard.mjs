// End-to-end test of the supervisor dashboard in headless Chromium.
//
// tests/dashboard_e2e.rs starts the engine, a registered agent phone and
// this script; the script drives the browser and asks the Rust side to place
// each SIP call at the moment it is watching the board, by printing a
// control line on stdout:
//
//   @e2e place routine     a caller asks a routine question and stays on
//   @e2e place distress    a caller says something that must be flagged
//   @e2e result {...}      JSON with the call ids the Rust side checks in the DB
//
// Every other line is a log line. A failing step prints which step, which
// selector and what the page looked like, saves a screenshot and exits 1.
//
// Environment (all set by the Rust test; defaults suit a manual run):
//   BASE_URL            dashboard, e.g. http://127.0.0.1:8080 (required)
//   E2E_USER / E2E_PASSWORD                the supervisor (has an agent phone)
//   E2E_ADMIN_USER / E2E_ADMIN_PASSWORD    an admin (optional checks)
//   SCREENSHOT_DIR      where screenshots go (default target/e2e-screenshots)
//   CHROMIUM            browser binary (default /usr/bin/chromium)
//   ROUTINE_WORDS       comma-separated words the routine caller says
//   SEARCH_WORD         word to search history for (default: first of ROUTINE_WORDS)
//   TAKEOVER_TARGET     select value for the take-over (default "me")
//   AGENT_ID            the agent the take-over rings (default agent1)
//   TIMEOUT_SCALE       multiplies every wait (slow machines)
// USER/PASSWORD are deliberately not used: USER is the login name of whoever
// runs the script, so a manual run would silently log in as "root".

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE_URL = (env.BASE_URL ?? '').replace(/\/+$/, '');
const USER = env.E2E_USER ?? 'sue';
const PASSWORD = env.E2E_PASSWORD ?? '';
const ADMIN_USER = env.E2E_ADMIN_USER ?? '';
const ADMIN_PASSWORD = env.E2E_ADMIN_PASSWORD ?? '';
const SCREENSHOT_DIR = resolve(env.SCREENSHOT_DIR ?? 'target/e2e-screenshots');
const CHROMIUM = env.CHROMIUM ?? '/usr/bin/chromium';
const ROUTINE_WORDS = (env.ROUTINE_WORDS ?? 'bin,collection')
  .split(',')
  .map((w) => w.trim().toLowerCase())
  .filter(Boolean);
const SEARCH_WORD = env.SEARCH_WORD ?? ROUTINE_WORDS[ROUTINE_WORDS.length - 1];
const TAKEOVER_TARGET = env.TAKEOVER_TARGET ?? 'me';
const AGENT_ID = env.AGENT_ID ?? 'agent1';
const SCALE = Math.max(1, Number(env.TIMEOUT_SCALE ?? '1') || 1);

// Generous: CI is a 2-core machine running Whisper on the CPU.
const secs = (s) => Math.round(s * 1000 * SCALE);
const T = {
  page: secs(30),
  newCall: secs(45),
  transcript: secs(150),
  takeover: secs(90),
  listen: secs(30),
  ended: secs(60),
  history: secs(60),
  recording: secs(45),
  distress: secs(150),
};

const started = Date.now();
const log = (msg) =>
  console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const control = (line) => console.log(`@e2e ${line}`);

class StepFailure extends Error {}

let currentPage = null;
const pageProblems = [];
let failureShots = 0;

/// Runs one named step; on failure explains what was being waited for,
/// saves a screenshot of the page and ends the run.
async function step(name, body) {
  log(`STEP ${name}`);
  try {
    const value = await body();
    log(`  ok: ${name}`);
    return value;
  } catch (err) {
    const shot = join(SCREENSHOT_DIR, `failure-${++failureShots}-${slug(name)}.png`);
    let url = '(no page)';
    let excerpt = '';
    if (currentPage && !currentPage.isClosed()) {
      url = currentPage.url();
      await currentPage.screenshot({ path: shot, fullPage: true }).catch(() => {});
      excerpt = await currentPage
        .evaluate(() => document.body?.innerText ?? '')
        .catch(() => '');
    }
    console.error(`\nE2E FAILED at step "${name}"`);
    console.error(`  why: ${err?.message ?? err}`);
    console.error(`  page: ${url}`);
    console.error(`  screenshot: ${shot}`);
    if (pageProblems.length) {
      console.error(`  browser console errors:\n    ${pageProblems.slice(-15).join('\n    ')}`);
    }
    if (excerpt) {
      console.error(`  page text (first 3000 chars):\n${indent(excerpt.slice(0, 3000))}`);
    }
    throw new StepFailure(name);
  }
}

const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
const indent = (s) => s.split('\n').map((l) => `    | ${l}`).join('\n');

/// Throws a message that names the selector and what it showed instead.
async function expectVisible(page, selector, timeout = T.page) {
  try {
    await page.locator(selector).first().waitFor({ state: 'visible', timeout });
  } catch {
    throw new Error(`selector ${selector} not visible within ${timeout / 1000}s`);
  }
}

/// For containers that may be empty (an empty table has no size, so it is
/// never "visible"): present in the page is enough.
async function expectPresent(page, selector, timeout = T.page) {
  try {
    await page.locator(selector).first().waitFor({ state: 'attached', timeout });
  } catch {
    throw new Error(`selector ${selector} not in the page within ${timeout / 1000}s`);
  }
}

async function textOf(page, selector) {
  const el = page.locator(selector).first();
  return (await el.count()) ? ((await el.innerText()) ?? '').trim() : `(no ${selector})`;
}

const boardRows = '[data-testid=live-calls] tr[data-call-id]';
const rowOf = (id) => `[data-testid=live-calls] tr[data-call-id="${id}"]`;

/// Ids of the calls on the live board right now.
async function boardIds(page) {
  return page.$$eval(boardRows, (rows) => rows.map((r) => r.getAttribute('data-call-id')));
}

/// Waits for a call id that was not on the board before (the one just placed).
async function waitForNewCall(page, known, timeout) {
  try {
    const handle = await page.waitForFunction(
      ({ sel, known }) => {
        const ids = [...document.querySelectorAll(sel)].map((r) => r.getAttribute('data-call-id'));
        return ids.find((id) => id && !known.includes(id)) ?? null;
      },
      { sel: boardRows, known },
      { timeout, polling: 250 },
    );
    return await handle.jsonValue();
  } catch {
    throw new Error(
      `no new ${boardRows} appeared within ${timeout / 1000}s (board had ${JSON.stringify(known)}; ` +
        `now ${JSON.stringify(await boardIds(page).catch(() => []))})`,
    );
  }
}

/// The live state text of a call, from the board cell or the call view.
const stateMatches = (text, want) => text.toLowerCase().replace(/[\s-]+/g, '_').includes(want);

async function waitForText(page, selector, predicate, what, timeout) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = await textOf(page, selector).catch(() => '');
    if (predicate(last)) return last;
    await page.waitForTimeout(500);
  }
  throw new Error(`${selector} never showed ${what} within ${timeout / 1000}s; last text: ${JSON.stringify(last)}`);
}

async function main() {
  if (!BASE_URL) throw new Error('BASE_URL is not set');
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  // A fresh profile each run: nothing cached, no cookies from an earlier run.
  const profile = mkdtempSync(join(tmpdir(), 'frontdoor-e2e-chromium-'));
  log(`chromium ${CHROMIUM}, profile ${profile}, dashboard ${BASE_URL}, screenshots ${SCREENSHOT_DIR}`);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    // This machine has no network but loopback: without the
    // background-networking flags Chromium floods refused connections.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Listen-in plays audio from a WebSocket; headless has no user to click "allow".
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  context.setDefaultTimeout(T.page);
  const watch = (page, label) => {
    page.on('console', (m) => {
      if (m.type() === 'error') pageProblems.push(`${label}: ${m.text()}`);
    });
    page.on('pageerror', (e) => pageProblems.push(`${label}: uncaught ${e.message}`));
    // A confirm() before hang-up or take-over is answered yes.
    page.on('dialog', (d) => d.accept().catch(() => {}));
  };

  try {
    await scenario(context, watch);
  } finally {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

async function scenario(context, watch) {
  const result = {};

  await step('no session: call data is refused', async () => {
    for (const path of ['/api/live', '/api/calls']) {
      const r = await fetch(BASE_URL + path, { redirect: 'manual' });
      if (r.status !== 401) throw new Error(`GET ${path} without a session gave ${r.status}, want 401`);
    }
    const r = await fetch(BASE_URL + '/', { redirect: 'manual' });
    const to = r.headers.get('location') ?? '';
    if (r.status !== 303 || !to.includes('/login')) {
      throw new Error(`GET / without a session gave ${r.status} location ${JSON.stringify(to)}, want 303 to /login`);
    }
  });

  const board = context.pages()[0] ?? (await context.newPage());
  watch(board, 'board');
  currentPage = board;

  await step('wrong password is refused on the login page', async () => {
    await board.goto(BASE_URL + '/', { waitUntil: 'domcontentloaded' });
    if (!board.url().includes('/login')) throw new Error(`/ did not redirect to /login (at ${board.url()})`);
    await board.fill('input[name=username]', USER);
    await board.fill('input[name=password]', `${PASSWORD}-wrong`);
    await board.click('button[type=submit]');
    await expectVisible(board, '[data-testid=login-error]');
  });

  await step(`log in as ${USER}`, async () => {
    await board.fill('input[name=username]', USER);
    await board.fill('input[name=password]', PASSWORD);
    await Promise.all([board.waitForURL((u) => !u.pathname.startsWith('/login')), board.click('button[type=submit]')]);
    await expectVisible(board, '[data-testid=whoami]');
    const who = await textOf(board, '[data-testid=whoami]');
    if (!who.includes(USER) || !/supervisor/i.test(who)) {
      throw new Error(`[data-testid=whoami] shows ${JSON.stringify(who)}, want "${USER}" and "supervisor"`);
    }
    if (new URL(board.url()).pathname !== '/') throw new Error(`after login at ${board.url()}, want /`);
    await expectPresent(board, '[data-testid=live-calls]');
    await expectVisible(board, `[data-testid=agents] [data-agent="${AGENT_ID}"]`);
  });

  await step(`agent ${AGENT_ID} shows as available`, async () => {
    await waitForText(
      board,
      `[data-testid=agents] [data-agent="${AGENT_ID}"] [data-field=state]`,
      (t) => stateMatches(t, 'available'),
      '"available"',
      T.page,
    );
  });

  // ---------------------------------------------------------------- routine call
  const routine = await step('a routine call placed now appears on the live board', async () => {
    const known = await boardIds(board);
    control('place routine');
    const id = await waitForNewCall(board, known, T.newCall);
    log(`  routine call id ${id}`);
    await expectVisible(board, `${rowOf(id)} [data-field=state]`);
    return id;
  });
  result.routine_call = routine;

  const view = await context.newPage();
  watch(view, 'call view');

  await step('the call view shows what the caller said', async () => {
    currentPage = board;
    const link = board.locator(`${rowOf(routine)} a[data-action=open]`);
    const href = await link.getAttribute('href');
    if (href !== `/calls/${routine}` && !href?.endsWith(`/calls/${routine}`)) {
      throw new Error(`a[data-action=open] href is ${JSON.stringify(href)}, want /calls/${routine}`);
    }
    currentPage = view;
    await view.goto(new URL(href, BASE_URL).href, { waitUntil: 'domcontentloaded' });
    await expectPresent(view, '[data-testid=transcript]');
    await expectVisible(view, '[data-testid=call-state]');
    const heard = await textOf(view, '[data-testid=transcript]').catch(() => '');
    log(`  transcript so far: ${JSON.stringify(heard.slice(0, 200))}`);
    // Live: the turn arrives over the event stream, no reload.
    try {
      await view.waitForFunction(
        (words) =>
          [...document.querySelectorAll('[data-testid=transcript] .turn[data-speaker=caller]')].some((t) => {
            const text = (t.textContent ?? '').toLowerCase();
            return words.some((w) => text.includes(w));
          }),
        ROUTINE_WORDS,
        { timeout: T.transcript, polling: 500 },
      );
    } catch {
      const turns = await view
        .$$eval('[data-testid=transcript] .turn', (ts) =>
          ts.map((t) => `${t.getAttribute('data-speaker')}/${t.getAttribute('data-final')}: ${t.textContent?.trim()}`),
        )
        .catch(() => []);
      throw new Error(
        `no .turn[data-speaker=caller] containing any of ${JSON.stringify(ROUTINE_WORDS)} within ` +
          `${T.transcript / 1000}s; turns: ${JSON.stringify(turns)}`,
      );
    }
    const said = await view.$$eval('[data-testid=transcript] .turn[data-speaker=caller]', (ts) =>
      ts.map((t) => t.textContent?.trim()),
    );
    log(`  caller turns: ${JSON.stringify(said)}`);
  });

  await step('screenshot: board with the call live, and the call view', async () => {
    currentPage = board;
    await board.screenshot({ path: join(SCREENSHOT_DIR, 'board-live-call.png'), fullPage: true });
    await view.screenshot({ path: join(SCREENSHOT_DIR, 'call-view.png'), fullPage: true });
    const state = await textOf(board, `${rowOf(routine)} [data-field=state]`);
    const route = await textOf(board, `${rowOf(routine)} [data-field=route]`);
    log(`  board row: state ${JSON.stringify(state)}, route ${JSON.stringify(route)}`);
  });

  await step('listen in: audio frames reach the browser', async () => {
    currentPage = view;
    await expectVisible(view, 'button[data-action=listen]');
    await view.click('button[data-action=listen]');
    try {
      await view.waitForFunction(() => (window.frontdoorListenFrames ?? 0) > 0, null, {
        timeout: T.listen,
        polling: 250,
      });
    } catch {
      const n = await view.evaluate(() => window.frontdoorListenFrames).catch(() => undefined);
      throw new Error(
        `window.frontdoorListenFrames is ${JSON.stringify(n)} ${T.listen / 1000}s after clicking button[data-action=listen]`,
      );
    }
    const frames = await view.evaluate(() => window.frontdoorListenFrames);
    log(`  ${frames} listen frames so far`);
  });

  await step(`take over (${TAKEOVER_TARGET}) moves the call to ${AGENT_ID}`, async () => {
    currentPage = view;
    const select = view.locator('select[name=takeover-target]');
    await select.waitFor({ state: 'visible' });
    const options = await select.locator('option').evaluateAll((os) => os.map((o) => o.value));
    if (!options.includes(TAKEOVER_TARGET)) {
      throw new Error(`select[name=takeover-target] has options ${JSON.stringify(options)}, no ${TAKEOVER_TARGET}`);
    }
    await select.selectOption(TAKEOVER_TARGET);
    const [response] = await Promise.all([
      view.waitForResponse((r) => r.url().includes(`/api/calls/${routine}/takeover`), { timeout: T.page }),
      view.click('button[data-action=takeover]'),
    ]);
    if (response.status() !== 202) {
      throw new Error(`POST /api/calls/${routine}/takeover answered ${response.status()}: ${await response.text()}`);
    }
    await waitForText(view, '[data-testid=call-state]', (t) => stateMatches(t, 'with_agent'), '"with_agent"', T.takeover);
    currentPage = board;
    await waitForText(
      board,
      `${rowOf(routine)} [data-field=state]`,
      (t) => stateMatches(t, 'with_agent'),
      '"with_agent"',
      T.page,
    );
    await waitForText(
      board,
      `[data-testid=agents] [data-agent="${AGENT_ID}"] [data-field=state]`,
      (t) => stateMatches(t, 'on_call'),
      '"on_call"',
      T.page,
    );
    await board.screenshot({ path: join(SCREENSHOT_DIR, 'board-with-agent.png'), fullPage: true });
  });

  await step('hang up from the call view; the call leaves the board', async () => {
    currentPage = view;
    const [response] = await Promise.all([
      view.waitForResponse((r) => r.url().includes(`/api/calls/${routine}/hangup`), { timeout: T.page }),
      view.click('button[data-action=hangup]'),
    ]);
    if (response.status() !== 202) {
      throw new Error(`POST /api/calls/${routine}/hangup answered ${response.status()}: ${await response.text()}`);
    }
    currentPage = board;
    try {
      await board.locator(rowOf(routine)).waitFor({ state: 'detached', timeout: T.ended });
    } catch {
      throw new Error(`${rowOf(routine)} still on the board ${T.ended / 1000}s after hang-up`);
    }
  });

  // ---------------------------------------------------------------- history
  await step(`history: searching "${SEARCH_WORD}" finds the call`, async () => {
    currentPage = view;
    await view.goto(BASE_URL + '/history', { waitUntil: 'domcontentloaded' });
    const form = 'form[data-testid=history-search]';
    await expectPresent(view, form);
    await view.fill(`${form} input[name=q]`, SEARCH_WORD);
    await Promise.all([
      view.waitForURL((u) => u.pathname === '/history' && u.searchParams.get('q') === SEARCH_WORD).catch(() => {}),
      view.locator(`${form} input[name=q]`).press('Enter'),
    ]);
    const hit = `[data-testid=history-results] tr[data-call-id="${routine}"]`;
    await expectVisible(view, hit, T.history);
    await view.screenshot({ path: join(SCREENSHOT_DIR, 'history.png'), fullPage: true });
  });

  await step('history: the call opens with its transcript and plays its recording', async () => {
    currentPage = view;
    const link = view.locator(`[data-testid=history-results] tr[data-call-id="${routine}"] a`).first();
    await Promise.all([view.waitForURL((u) => u.pathname === `/calls/${routine}`), link.click()]);
    await expectVisible(view, '[data-testid=transcript] .turn[data-speaker=caller]');
    await expectPresent(view, '[data-testid=audit]');
    const audio = 'audio[data-testid=recording]';
    await view.locator(audio).waitFor({ state: 'attached' });
    const src = await view.locator(audio).getAttribute('src');
    if (!src || !src.endsWith(`/calls/${routine}/recording`)) {
      throw new Error(`${audio} src is ${JSON.stringify(src)}, want /calls/${routine}/recording`);
    }
    // preload="none" would never fetch metadata on its own.
    await view.evaluate((sel) => {
      const a = document.querySelector(sel);
      if (a && a.readyState === 0) {
        a.preload = 'metadata';
        a.load();
      }
    }, audio);
    try {
      await view.waitForFunction(
        (sel) => {
          const a = document.querySelector(sel);
          return a && a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 1;
        },
        audio,
        { timeout: T.recording, polling: 250 },
      );
    } catch {
      const st = await view.evaluate((sel) => {
        const a = document.querySelector(sel);
        return a && { readyState: a.readyState, duration: a.duration, error: a.error?.message ?? a.error?.code };
      }, audio);
      throw new Error(`${audio} never loaded metadata with duration > 1 s: ${JSON.stringify(st)}`);
    }
    const duration = await view.evaluate((sel) => document.querySelector(sel).duration, audio);
    const fetched = await view.evaluate(async (src) => {
      const r = await fetch(src);
      const bytes = new Uint8Array(await r.arrayBuffer());
      return {
        status: r.status,
        type: r.headers.get('content-type'),
        size: bytes.length,
        magic: String.fromCharCode(...bytes.slice(0, 4)),
      };
    }, src);
    log(`  recording ${duration.toFixed(1)} s; GET ${src}: ${JSON.stringify(fetched)}`);
    if (fetched.status !== 200 || !/^audio\/(x-)?wav/.test(fetched.type ?? '') || fetched.magic !== 'RIFF') {
      throw new Error(`GET ${src} gave ${JSON.stringify(fetched)}, want 200 audio/wav starting RIFF`);
    }
    await view.screenshot({ path: join(SCREENSHOT_DIR, 'history-call.png'), fullPage: true });
  });

  // ---------------------------------------------------------------- distress
  await step('a distress call shows its flag on the board', async () => {
    currentPage = board;
    // The assistant hands a distressed caller to agent1 at once: it must be
    // free again after the take-over call.
    await waitForText(
      board,
      `[data-testid=agents] [data-agent="${AGENT_ID}"] [data-field=state]`,
      (t) => stateMatches(t, 'available'),
      '"available" again after the hang-up',
      T.ended,
    );
    const known = await boardIds(board);
    control('place distress');
    const id = await waitForNewCall(board, known, T.newCall);
    result.distress_call = id;
    log(`  distress call id ${id}`);
    const flag = `${rowOf(id)} [data-field=flags] span.flag[data-flag=distress]`;
    await expectVisible(board, flag, T.distress);
    await board.screenshot({ path: join(SCREENSHOT_DIR, 'board-distress.png'), fullPage: true });
    const colour = await board.locator(flag).evaluate((el) => getComputedStyle(el).backgroundColor + ' / ' + getComputedStyle(el).color);
    log(`  distress flag colours: ${colour}`);
  });

  await step('the distress call view shows the flag and the escalation', async () => {
    currentPage = view;
    const id = result.distress_call;
    await view.goto(`${BASE_URL}/calls/${id}`, { waitUntil: 'domcontentloaded' });
    await expectVisible(view, '[data-testid=flags] span.flag[data-flag=distress]');
    await waitForText(view, '[data-testid=decisions]', (t) => /distress/i.test(t), '"distress"', T.page);
    await view.screenshot({ path: join(SCREENSHOT_DIR, 'call-view-distress.png'), fullPage: true });
  });

  // ---------------------------------------------------------------- roles
  await step('a supervisor cannot open /admin', async () => {
    currentPage = view;
    const r = await view.goto(BASE_URL + '/admin', { waitUntil: 'domcontentloaded' });
    if (r?.status() !== 403) throw new Error(`/admin as ${USER} gave ${r?.status()}, want 403`);
  });

  if (ADMIN_USER && ADMIN_PASSWORD) {
    await step(`log out, log in as admin ${ADMIN_USER}, /admin lists users and agents`, async () => {
      currentPage = board;
      await Promise.all([board.waitForURL((u) => u.pathname.startsWith('/login')), board.click('[data-action=logout]')]);
      await board.fill('input[name=username]', ADMIN_USER);
      await board.fill('input[name=password]', ADMIN_PASSWORD);
      await Promise.all([board.waitForURL((u) => !u.pathname.startsWith('/login')), board.click('button[type=submit]')]);
      const r = await board.goto(BASE_URL + '/admin', { waitUntil: 'domcontentloaded' });
      if (r?.status() !== 200) throw new Error(`/admin as ${ADMIN_USER} gave ${r?.status()}, want 200`);
      const text = await board.evaluate(() => document.body.innerText);
      for (const want of [USER, ADMIN_USER, AGENT_ID]) {
        if (!text.includes(want)) throw new Error(`/admin does not mention ${want}`);
      }
      if (/\$argon2/.test(await board.content())) throw new Error('/admin shows a password hash');
      await board.screenshot({ path: join(SCREENSHOT_DIR, 'admin.png'), fullPage: true });
    });
  }

  control(`result ${JSON.stringify(result)}`);
  if (pageProblems.length) log(`browser console errors (not fatal):\n  ${pageProblems.join('\n  ')}`);
  log('PASS');
}

main().then(
  () => process.exit(0),
  (err) => {
    if (!(err instanceof StepFailure)) console.error(`E2E FAILED: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
