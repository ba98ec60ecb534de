// The demo and the dashboard on phones and on a fresh server, in Debian's real Chromium (playwright-core).
//
//   node tests/web/pages.mjs PLAN.json
//
// PLAN: {"demo_url": ".../demo/" (two published versions), "empty_url": "http://host:port" (nothing published, no device),
// "empty_token", "dashboard_url": ".../dashboard/" (one model, a device with an hour of telemetry), "token",
// "out": "DIR", "chromium": "/usr/bin/chromium"}. Prints one JSON line per scenario, prefixed "@@result ";
// "@@wait <event>" asks the caller to change the server's data and reads one line from stdin (tests/web/test_pages.py).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const emit = (kind, obj) => console.log(`@@${kind} ${JSON.stringify(obj)}`);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function waitFor(event) {
  emit('wait', { event });
  const { value } = await lines.next();
  return value;
}

const browser = await chromium.launch({ executablePath: plan.chromium || '/usr/bin/chromium', args: FLAGS, timeout: 60000 });
const consoleLog = [];

async function newPage(width, height = 900, extra = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, ...extra });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleLog.push(`${m.type()}: ${m.text()}`.slice(0, 300)); });
  page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`.slice(0, 300)));
  return { context, page };
}

const waitState = (page, state, timeout = 90000) => page.waitForSelector(`body[data-state="${state}"]`, { timeout });

/** Page width against the viewport, and the widest elements that stick out (for the failure message). */
function overflow(page) {
  return page.evaluate(() => {
    const W = window.innerWidth;
    const scrolls = (e) => { for (let p = e.parentElement; p; p = p.parentElement) if (/(auto|scroll|hidden)/.test(getComputedStyle(p).overflowX)) return true; return false; };
    const out = [...document.querySelectorAll('body *')].filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > W + 0.5 && !scrolls(e); })
      .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${typeof e.className === 'string' && e.className ? `.${e.className.trim().split(/\s+/).join('.')}` : ''} right=${Math.round(e.getBoundingClientRect().right)}`);
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: W, sticking_out: out };
  });
}

/** Each chart's datasets, and for every horizontal line (reference, alert, threshold) the share of the plot's width it inks. */
function charts(page) {
  return page.evaluate(() => {
    const out = {};
    for (const c of document.querySelectorAll('[data-card]')) {
      const name = c.dataset.card;
      const canvas = c.querySelector('canvas');
      const chart = canvas && window.Chart.getChart(canvas);
      const empty = c.querySelector('.empty');
      out[name] = { empty: c.dataset.empty === 'true', empty_text: empty && !empty.hidden ? empty.textContent : '' };
      if (!chart) continue;
      const copy = document.createElement('canvas');  // read back a copy: the chart's own context stays untouched
      copy.width = canvas.width;
      copy.height = canvas.height;
      const ctx = copy.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(canvas, 0, 0);
      const { left, right } = chart.chartArea;
      const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      out[name].labels = chart.data.labels.length;
      out[name].datasets = chart.data.datasets.map((ds, i) => {
        const d = { label: ds.label, hidden: !chart.isDatasetVisible(i), points: ds.data.filter((v) => v !== null && v !== undefined).length };
        if (ds.hline !== undefined) {
          const y = Math.round(chart.scales.y.getPixelForValue(ds.hline));
          const want = rgb(ds.borderColor);
          const px = ctx.getImageData(Math.round(left), y - 2, Math.round(right - left), 5).data;
          const width = Math.round(right - left);
          let inked = 0;
          for (let x = 0; x < width; x += 1) {
            for (let dy = 0; dy < 5; dy += 1) {
              const k = 4 * (dy * width + x);
              if (px[k + 3] > 60 && Math.abs(px[k] - want[0]) + Math.abs(px[k + 1] - want[1]) + Math.abs(px[k + 2] - want[2]) < 90) { inked += 1; break; }
            }
          }
          d.hline_coverage = inked / width;
        }
        return d;
      });
    }
    return out;
  });
}

const text = (page, sel) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, sel);

const scenarios = {
  async demo_phone() {
    const result = {};
    for (const [width, mobile] of [[360, false], [375, true], [390, false]]) {
      const { context, page } = await newPage(width, 800, mobile ? { isMobile: true, hasTouch: true } : {});
      await page.goto(plan.demo_url);
      await waitState(page, 'ready');
      result[`w${width}`] = { ...(await overflow(page)), mobile, probability: await text(page, '#probability') };
      if (width === 390) {
        result.screenshot = join(plan.out, 'demo-390.png');
        await page.screenshot({ path: result.screenshot, fullPage: true });
      }
      await context.close();
    }
    return result;
  },

  async demo_picker() {
    const { context, page } = await newPage(1360, 980);
    await page.goto(plan.demo_url);
    await waitState(page, 'ready');
    const options = () => page.$$eval('#model-picker option', (os) => os.map((o) => ({ value: o.value, text: o.textContent, selected: o.selected })));
    const result = { options: await options(), model: await text(page, '#fact-model'), picker_visible: await page.isVisible('#model-picker'),
      overflow: await overflow(page) };
    result.screenshot = join(plan.out, 'demo-1360.png');
    await page.screenshot({ path: result.screenshot, fullPage: true });
    const older = result.options.find((o) => !o.selected);
    await Promise.all([page.waitForNavigation(), page.selectOption('#model-picker', older.value)]);
    await waitState(page, 'ready');
    result.picked = { url: page.url(), model: await text(page, '#fact-model'), options: await options() };
    await page.goto(`${plan.demo_url}?model=nosuch`);  // a model that is not there: the reason, and the picker to choose another
    await waitState(page, 'error', 30000);
    result.unknown = { error: await text(page, '#error-text'), picker_visible: await page.isVisible('#model-picker'), options: (await options()).length,
      pill: await text(page, '#model-pill') };
    await context.close();
    return result;
  },

  async demo_empty() {
    const { context, page } = await newPage(390, 800);
    await page.goto(`${plan.empty_url}/demo/`);
    await waitState(page, 'empty', 30000);
    const result = { pill: await text(page, '#model-pill'), empty_visible: await page.isVisible('#empty'), empty_text: await text(page, '#empty'),
      error_visible: await page.isVisible('#error'), label: await text(page, '#label'), overflow: await overflow(page) };
    await page.screenshot({ path: join(plan.out, 'demo-empty-390.png'), fullPage: true });
    await context.close();
    return result;
  },

  async dashboard_fresh() {
    const { context, page } = await newPage(1360, 900);
    await page.goto(`${plan.dashboard_url}#token=${encodeURIComponent(plan.token)}`);
    await waitState(page, 'ready');
    const selection = () => page.evaluate(() => ({ window: document.querySelector('#sel-window').value,
      window_options: [...document.querySelectorAll('#sel-window option')].map((o) => o.textContent),
      cohort: document.querySelector('#sel-cohort').value, cohorts: [...document.querySelectorAll('#sel-cohort option')].map((o) => o.value),
      footnote: document.querySelector('#footnote').textContent }));
    const rollouts = () => page.evaluate(() => ({ kpi: document.querySelector('#kpi-rollout').textContent, kpi_sub: document.querySelector('#kpi-rollout-sub').textContent,
      rows: [...document.querySelectorAll('#rollout-list li')].map((li) => ({ id: Number(li.dataset.rollout), look: li.dataset.look,
        badge: li.querySelector('.badge').textContent, pct: li.querySelector('.pct').textContent })) }));
    const result = { selection: await selection(), charts: await charts(page), rollouts: await rollouts() };
    result.screenshot = join(plan.out, 'dashboard-fresh.png');
    await page.screenshot({ path: result.screenshot, fullPage: true });
    await page.selectOption('#sel-window', '86400');
    await page.waitForFunction(() => /Windows of 24 h/.test(document.querySelector('#footnote').textContent), null, { timeout: 15000 });
    result.daily = { selection: await selection(), charts: await charts(page) };
    await waitFor('add-empty-rollouts');  // old rows of rollouts that reached nobody
    await page.reload();
    await waitState(page, 'ready');
    result.after = await rollouts();
    await context.close();
    return result;
  },

  async dashboard_phone() {
    const { context, page } = await newPage(390, 800);
    await page.goto(`${plan.dashboard_url}#token=${encodeURIComponent(plan.token)}`);
    await waitState(page, 'ready');
    const result = { overflow: await overflow(page) };
    await page.screenshot({ path: join(plan.out, 'dashboard-390.png'), fullPage: true });
    await context.close();
    return result;
  },

  async dashboard_empty() {
    const { context, page } = await newPage(1360, 900);
    await page.goto(`${plan.empty_url}/dashboard/#token=${encodeURIComponent(plan.empty_token)}`);
    await waitState(page, 'ready');
    const result = { cards: await charts(page) };
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
  // Two lanes at once, each in its own browser contexts: the fresh server's data changes during dashboard_fresh
  // (add-empty-rollouts), so dashboard_phone runs after it; the demo and empty servers are only read.
  const lanes = [['demo_phone', 'demo_picker', 'demo_empty', 'dashboard_empty'], ['dashboard_fresh', 'dashboard_phone']];
  await Promise.all(lanes.map(async (lane) => { for (const name of lane) await run(name); }));
  emit('console', { console: consoleLog.slice(-40) });
} finally {
  await browser.close();
}
process.exit(0);
