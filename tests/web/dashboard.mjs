// Drive the fleet dashboard in Debian's real Chromium with playwright-core (no downloaded browser).
//
//   node tests/web/dashboard.mjs PLAN.json
//
// PLAN: {"url": ".../dashboard/", "token": "<admin token>", "empty_url": ".../dashboard/" (a server
// with no telemetry), "empty_token": "...", "out": "DIR", "chromium": "/usr/bin/chromium"}.
// Prints one JSON result line per scenario, prefixed "@@result " (tests/web/test_dashboard.py).
import { join } from 'node:path';
import { readFileSync } from 'node:fs';

import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const emit = (kind, obj) => console.log(`@@${kind} ${JSON.stringify(obj)}`);
const CHARTS = ['versions', 'rollouts', 'drift', 'auroc', 'ap', 'alerts'];

const browser = await chromium.launch({ executablePath: plan.chromium || '/usr/bin/chromium', args: FLAGS, timeout: 60000 });
const consoleLog = [];
const requests = [];

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleLog.push(`${m.type()}: ${m.text()}`.slice(0, 300)); });
  page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`.slice(0, 300)));
  page.on('request', (r) => requests.push(r.url()));
  return { context, page };
}

const waitState = (page, state, timeout = 30000) => page.waitForSelector(`body[data-state="${state}"]`, { timeout });

/** What each chart holds (from Chart.js's own objects) and whether its canvas has ink. */
function inspect(page) {
  return page.evaluate((names) => {
    const out = { charts: {}, cards: {} };
    for (const name of names) {
      const c = document.querySelector(`[data-card="${name}"]`);
      const empty = c.querySelector('.empty');
      out.cards[name] = { empty: c.dataset.empty === 'true', empty_text: empty.hidden ? '' : empty.textContent };
      const canvas = c.querySelector('canvas');
      const chart = window.Chart.getChart(canvas);
      if (!chart) continue;
      const copy = document.createElement('canvas');  // read back a copy: the chart's own context stays untouched
      copy.width = canvas.width;
      copy.height = canvas.height;
      const ctx = copy.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(canvas, 0, 0);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let ink = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink += 1;
      out.charts[name] = {
        type: chart.config.type, labels: chart.data.labels.length, ink_fraction: ink / (px.length / 4),
        width: canvas.width, height: canvas.height,
        datasets: chart.data.datasets.map((ds, i) => ({ label: ds.label, hidden: !chart.isDatasetVisible(i),
          points: ds.data.filter((v) => v !== null && v !== undefined && !Number.isNaN(v)).length,
          nonzero: ds.data.filter((v) => typeof v === 'number' && v !== 0).length,
          drawn: chart.getDatasetMeta(i).data.length })),
      };
    }
    return out;
  }, CHARTS);
}

const scenarios = {
  async gate() {
    const { context, page } = await newPage();
    await page.goto(plan.url);
    await waitState(page, 'token');
    const prompt = await page.isVisible('#token-form');
    await page.fill('#token-input', 'not-the-admin-token');
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-error:not([hidden])', { timeout: 15000 });
    const refused = await page.textContent('#token-error');
    await page.fill('#token-input', plan.token);
    await page.click('#token-form button[type="submit"]');
    await waitState(page, 'ready');
    const stored = await page.evaluate(() => sessionStorage.getItem('edgefleet.adminToken') !== null);
    await page.reload();  // the token outlives a reload of the tab
    await waitState(page, 'ready');
    await context.close();
    return { prompt, refused, stored };
  },

  async full() {
    const { context, page } = await newPage();
    const t0 = Date.now();
    await page.goto(`${plan.url}#token=${encodeURIComponent(plan.token)}`);
    await waitState(page, 'ready');
    const loadMs = Date.now() - t0;
    const result = { load_ms: loadMs, ...(await inspect(page)) };
    result.hash = await page.evaluate(() => window.location.hash);
    result.selection = await page.evaluate(() => ({ model: document.querySelector('#sel-model').value, version: document.querySelector('#sel-version').value,
      cohort: document.querySelector('#sel-cohort').value, cohorts: [...document.querySelectorAll('#sel-cohort option')].map((o) => o.value) }));
    result.alerts = await page.$$eval('#alert-list li', (lis) => lis.map((li) => ({ id: Number(li.dataset.alertId), state: li.dataset.state,
      badge: li.querySelector('.badge').textContent, text: li.textContent })));
    result.kpis = await page.evaluate(() => Object.fromEntries(['devices', 'model', 'rollout', 'alerts'].map((k) => [k, document.querySelector(`#kpi-${k}`).textContent])));
    result.drift_pill = await page.textContent('#drift-verdict');
    result.rollout_rows = await page.$$eval('#rollout-list li', (lis) => lis.map((li) => li.textContent));
    if (plan.out) {
      result.screenshot = join(plan.out, 'dashboard.png');
      await page.screenshot({ path: result.screenshot, fullPage: true });
    }
    // Another cohort re-draws the drift and performance plots from the same reports.
    const other = result.selection.cohorts.find((c) => c !== result.selection.cohort);
    if (other) {
      await page.selectOption('#sel-cohort', other);
      await page.waitForFunction((c) => window.edgefleetDashboard.state.cohort === c, other, { timeout: 10000 });
      result.other_cohort = { cohort: other, ...(await inspect(page)).charts.drift };
    }
    await context.close();
    return result;
  },

  async empty() {
    const { context, page } = await newPage();
    await page.goto(`${plan.empty_url}#token=${encodeURIComponent(plan.empty_token)}`);
    await waitState(page, 'ready');
    const result = await inspect(page);
    if (plan.out) await page.screenshot({ path: join(plan.out, 'dashboard-empty.png'), fullPage: true });
    await context.close();
    return result;
  },
};

async function run(name) {
  const t0 = Date.now();
  try {
    emit('result', { scenario: name, ok: true, ...(await scenarios[name]()), seconds: (Date.now() - t0) / 1000 });
  } catch (exc) {
    emit('result', { scenario: name, ok: false, error: String(exc?.stack || exc).slice(0, 2000), console: consoleLog.slice(-20) });
  }
}

try {
  // The three only read the servers, each in its own browser context: they run at once.
  await Promise.all(['gate', 'full', 'empty'].map(run));
  const origins = [...new Set(requests.map((u) => new URL(u).origin))];
  emit('console', { console: consoleLog.slice(-40), origins });
} finally {
  await browser.close();
}
process.exit(0);
