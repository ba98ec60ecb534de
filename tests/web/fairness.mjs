// Drive the dashboard's fairness card in Debian's real Chromium with playwright-core.
//
//   node tests/web/fairness.mjs PLAN.json
//
// PLAN: {"url": ".../dashboard/", "token": "...", "privacy_url": ".../dashboard/", "privacy_token": "...",
//        "out": "DIR", "chromium": "/usr/bin/chromium"}.
// Prints one "@@result {json}" line per scenario (tests/fleet_server/monitoring/test_fairness_dashboard.py).
import { join } from 'node:path';
import { readFileSync } from 'node:fs';

import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const emit = (obj) => console.log(`@@result ${JSON.stringify(obj)}`);
const browser = await chromium.launch({ executablePath: plan.chromium || '/usr/bin/chromium', args: FLAGS, timeout: 60000 });
const consoleLog = [];

async function open(url, token) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleLog.push(`${m.type()}: ${m.text()}`.slice(0, 300)); });
  page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(`${url}#token=${encodeURIComponent(token)}`);
  await page.waitForSelector('body[data-state="ready"]', { timeout: 30000 });
  return { context, page };
}

/** The fairness chart as Chart.js holds it, its canvas ink, the card's texts. */
const inspect = (page) => page.evaluate(() => {
  const c = document.querySelector('[data-card="fairness"]');
  const out = { empty: c.dataset.empty === 'true', empty_text: c.querySelector('.empty').hidden ? '' : c.querySelector('.empty').textContent,
    pill: document.querySelector('#fair-verdict').hidden ? null : document.querySelector('#fair-verdict').textContent,
    sub: document.querySelector('#fair-sub').textContent, groups: [...document.querySelectorAll('#fair-groups li')].map((li) => li.textContent) };
  const canvas = c.querySelector('canvas');
  const chart = window.Chart.getChart(canvas);
  if (chart) {
    const copy = document.createElement('canvas');
    copy.width = canvas.width;
    copy.height = canvas.height;
    const ctx = copy.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(canvas, 0, 0);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink += 1;
    out.chart = { labels: chart.data.labels.length, ink_fraction: ink / (px.length / 4), y_title: chart.options.scales.y.title.text,
      datasets: chart.data.datasets.map((ds) => ({ label: ds.label, band: ds.band ?? null, fill: ds.fill ?? null,
        values: ds.data.map((v) => (typeof v === 'number' ? v : null)), red: Array.isArray(ds.pointBackgroundColor) ? ds.pointBackgroundColor.filter((x) => x === '#dc2626').length : 0 })) };
    out.legend = chart.legend.legendItems.map((i) => i.text);
  }
  return out;
});

const scenarios = {
  async card() {
    const { context, page } = await open(plan.url, plan.token);
    const result = { eo: await inspect(page) };
    result.alerts = await page.$$eval('#alert-list li', (lis) => lis.map((li) => li.textContent));
    if (plan.out) {
      result.screenshot = join(plan.out, 'dashboard-fairness.png');
      await page.locator('[data-card="fairness"]').screenshot({ path: result.screenshot });
    }
    await page.selectOption('#sel-fair-metric', 'demographic_parity_ratio');
    await page.waitForFunction(() => window.edgefleetDashboard.state.fairMetric === 'demographic_parity_ratio', null, { timeout: 10000 });
    await page.waitForFunction(() => window.Chart.getChart(document.querySelector('#chart-fairness'))?.options.scales.y.title.text === 'Demographic-parity ratio',
      null, { timeout: 10000 });
    result.ratio = await inspect(page);
    await context.close();
    return result;
  },

  async privacy() {
    const { context, page } = await open(plan.privacy_url, plan.privacy_token);
    const result = await inspect(page);
    await context.close();
    return result;
  },
};

async function run(name) {
  try {
    emit({ scenario: name, ok: true, ...(await scenarios[name]()) });
  } catch (exc) {
    emit({ scenario: name, ok: false, error: String(exc?.stack || exc).slice(0, 2000), console: consoleLog.slice(-20) });
  }
}

try {
  // Both only read their server, each in its own browser context: they run at once.
  await Promise.all(['card', 'privacy'].map(run));
  emit({ scenario: 'console', ok: true, console: consoleLog.slice(-40) });
} finally {
  await browser.close();
}
process.exit(0);
