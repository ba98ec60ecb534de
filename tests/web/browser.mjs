// Drive the demo in Debian's real Chromium with playwright-core (no downloaded browser).
//
//   node tests/web/browser.mjs PLAN.json
//
// PLAN: {"url": ".../demo/", "vectors": "churn.json", "out": "DIR", "scenarios": ["parity", "tamper",
// "offline", "bench"], "bench_rows": 200}. Prints one JSON result line per scenario, prefixed "@@result ".
// The offline scenario needs the caller to stop (and later restart) the server: it prints
// "@@wait <event>" and reads one line from stdin before going on (tests/web/test_browser.py).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const vectors = plan.vectors ? JSON.parse(readFileSync(plan.vectors, 'utf8')) : null;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (kind, obj) => console.log(`@@${kind} ${JSON.stringify(obj)}`);
async function waitFor(event) {
  emit('wait', { event });
  const { value } = await lines.next();
  return value;
}

const browser = await chromium.launch({ executablePath: plan.chromium || '/usr/bin/chromium', args: FLAGS, timeout: 60000 });
const consoleLog = [];

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 980 }, deviceScaleFactor: 1, ...options });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleLog.push(`${m.type()}: ${m.text()}`.slice(0, 300)); });
  page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`.slice(0, 300)));
  return { context, page };
}

const waitState = (page, state, timeout = 90000) => page.waitForSelector(`body[data-state="${state}"]`, { timeout });

function maxDiff(got, want) {
  let m = 0;
  got.forEach((row, i) => row.forEach((x, k) => { m = Math.max(m, Math.abs(x - want[i][k])); }));
  return m;
}

async function scoreVectors(page) {
  const sc = vectors.scoring;
  const out = {};
  for (const rt of ['onnx', 'tfjs']) {
    const got = await page.evaluate(([records, runtime]) => window.edgefleetDemo.scoreRecords(records, runtime), [sc.records, rt]);
    out[rt] = { rows: got.length, max_abs_diff: maxDiff(got, sc.expected[rt]) };
  }
  return out;
}

/** The encoding vectors, run inside Chromium's JS engine with the served runtime module. */
async function encodingInBrowser(page) {
  return page.evaluate(async (v) => {
    const { encodeRecords, InputError } = await import('./runtime/encoding.mjs');
    const decode = (x) => {
      if (x && typeof x === 'object' && !Array.isArray(x)) {
        const keys = Object.keys(x);
        if (keys.length === 1 && keys[0] === '$float') return Number(x.$float.replace('inf', 'Infinity').replace('nan', 'NaN'));
        return Object.fromEntries(keys.map((k) => [k, decode(x[k])]));
      }
      return Array.isArray(x) ? x.map(decode) : x;
    };
    const failures = [];
    for (const c of v.encoding) {
      let got;
      try { got = { encoded: Array.from(encodeRecords(v.schemas[c.schema], decode(c.records)), (x) => (Number.isNaN(x) ? null : x)) }; }
      catch (e) { if (!(e instanceof InputError)) throw e; got = { error: { field: e.field, reason: e.reason, message: e.message } }; }
      const want = c.error ? { error: c.error } : { encoded: c.encoded.flat() };
      if (JSON.stringify(got) !== JSON.stringify(want)) failures.push({ case: c.about, want, got });
    }
    return { cases: v.encoding.length, failures };
  }, vectors);
}

async function uiScore(page) {
  // Edit the form like a user: the score must follow.
  await page.fill('#f-tenure', '5');
  await page.dispatchEvent('#f-tenure', 'input');
  await page.waitForFunction(() => window.edgefleetDemo.state.last?.record?.tenure === 5, null, { timeout: 20000 });
  return page.evaluate(() => ({ probability: Number(document.querySelector('#probability').dataset.value),
    text: document.querySelector('#probability').textContent, label: document.querySelector('#label').textContent,
    runtime: document.querySelector('#fact-runtime').dataset.runtime, net: document.querySelector('#net-pill').dataset.state }));
}

const scenarios = {
  async parity() {
    const { context, page } = await newPage();
    const t0 = Date.now();
    await page.goto(plan.url);
    await waitState(page, 'ready');
    const loadMs = Date.now() - t0;
    const result = { load_ms: loadMs, scores: await scoreVectors(page), encoding: await encodingInBrowser(page), ui: await uiScore(page) };
    await page.click('.segmented button[data-runtime="tfjs"]');
    await page.waitForFunction(() => document.querySelector('#fact-runtime').dataset.runtime === 'tfjs' && window.edgefleetDemo.state.last, null, { timeout: 30000 });
    await page.click('[data-preset="risky"]');
    await page.waitForFunction(() => window.edgefleetDemo.state.last?.record?.tenure === 3, null, { timeout: 20000 });
    result.ui_tfjs = await page.evaluate(() => ({ probability: Number(document.querySelector('#probability').dataset.value), runtime: document.querySelector('#fact-runtime').textContent }));
    await page.click('.segmented button[data-runtime="onnx"]');
    await page.waitForFunction(() => document.querySelector('#fact-runtime').dataset.runtime === 'onnx', null, { timeout: 30000 });
    await page.waitForTimeout(300);
    result.ui_onnx = await page.evaluate(() => ({ probability: Number(document.querySelector('#probability').dataset.value) }));
    result.parity_rows = await page.$$eval('#parity tbody tr', (trs) => trs.map((tr) => tr.dataset.format));
    if (plan.out) {
      result.screenshot = join(plan.out, 'demo.png');
      await page.screenshot({ path: result.screenshot, fullPage: true });
    }
    await context.close();
    return result;
  },

  async tamper() {
    // No service worker here, so page.route sees the runtime's own artifact download.
    const { context, page } = await newPage({ serviceWorkers: 'block' });
    let tampered = 0;
    await page.route('**/bundle/**/artifacts/**', async (route) => {
      const resp = await route.fetch();
      const body = Buffer.from(await resp.body());
      body[Math.floor(body.length / 2)] ^= 0x01;
      tampered += 1;
      await route.fulfill({ response: resp, body });
    });
    await page.goto(plan.url);
    await waitState(page, 'error', 60000);
    const error = await page.evaluate(() => ({ visible: !document.querySelector('#error').hidden && document.querySelector('#error').offsetHeight > 0,
      title: document.querySelector('#error-title').textContent, text: document.querySelector('#error-text').textContent,
      label: document.querySelector('#label').textContent, scored: Boolean(window.edgefleetDemo.state.last) }));
    if (plan.out) await page.screenshot({ path: join(plan.out, 'tampered.png'), fullPage: true });
    await context.close();
    return { tampered_responses: tampered, ...error };
  },

  async offline() {
    const t0 = Date.now();
    const steps = {};
    const mark = (name) => { steps[name] = Date.now() - t0; };
    const { context, page } = await newPage();
    await page.goto(plan.url);
    await waitState(page, 'ready');
    mark('ready');
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30000 });
    mark('controlled');
    const online = await page.evaluate(() => document.querySelector('#net-pill').dataset.state);
    await waitFor('stop-server');
    mark('stopped');
    await page.reload();
    await waitState(page, 'ready');
    mark('ready_offline');
    const result = { online_before: online, net_after_reload: await page.evaluate(() => document.querySelector('#net-pill').dataset.state),
      offline_scorer: await page.evaluate(() => window.edgefleetDemo.state.scorers[window.edgefleetDemo.state.runtime].offline),
      scores: await scoreVectors(page), ui: await uiScore(page) };
    mark('scored');
    result.queued = await page.evaluate(() => window.edgefleetDemo.state.telemetry.stats());
    await waitFor('restart-server');
    mark('restarted');
    result.flushed = await page.evaluate(() => window.edgefleetDemo.state.telemetry.flush());
    result.after_flush = await page.evaluate(() => window.edgefleetDemo.state.telemetry.stats());
    mark('flushed');
    await context.close();
    result.steps_ms = steps;
    return result;
  },

  async bench() {
    const out = {};
    for (const rt of ['onnx', 'tfjs']) {
      const { context, page } = await newPage();
      const url = `${plan.url}?runtime=${rt}`;
      await page.goto(url);
      await waitState(page, 'ready');
      const first = await page.evaluate(() => window.edgefleetDemo.state.timings.firstScore);
      await page.goto(url);  // second visit: service worker + verified cache, no downloads of wasm or artifacts
      await waitState(page, 'ready');
      const cached = await page.evaluate(() => window.edgefleetDemo.state.timings.firstScore);
      const n = plan.bench_rows || 200;
      const timing = await page.evaluate(async ([records, runtime, reps]) => {
        const s = window.edgefleetDemo.state.scorers[runtime];
        for (let i = 0; i < 20; i++) await s.score(records[i % records.length]);  // warm up
        let t = performance.now();
        for (let i = 0; i < reps; i++) await s.score(records[i % records.length]);
        const single = (performance.now() - t) / reps;
        t = performance.now();
        await s.scoreMany(records);
        const batch = (performance.now() - t) / records.length;
        return { single_row_ms: single, batch_per_row_ms: batch, batch_rows: records.length };
      }, [vectors.scoring.records, rt, n]);
      out[rt] = { first_load_ms: first, cached_load_ms: cached, ...timing };
      await context.close();
    }
    return out;
  },
};

async function run(name) {
  const t0 = Date.now();
  try {
    emit('result', { scenario: name, ok: true, seconds: 0, ...(await scenarios[name]()), seconds: (Date.now() - t0) / 1000 });
  } catch (exc) {
    emit('result', { scenario: name, ok: false, error: String(exc?.stack || exc).slice(0, 2000), console: consoleLog.slice(-20) });
  }
}

// parity and tamper only read the server, each in its own browser context, so they run at once; the others run
// alone after them, in order (offline stops and restarts the server; bench measures timings).
const TOGETHER = new Set(['parity', 'tamper']);

try {
  await Promise.all(plan.scenarios.filter((n) => TOGETHER.has(n)).map(run));
  for (const name of plan.scenarios.filter((n) => !TOGETHER.has(n))) await run(name);
  emit('console', consoleLog.slice(-40));
} finally {
  await browser.close();
}
process.exit(0);
