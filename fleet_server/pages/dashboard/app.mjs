// The fleet dashboard: reads the admin API with the admin token and plots it with Chart.js
// (window.Chart, served from node_modules by fleet_server/api/dashboard.py).
//
// Data:   GET /api/v1/devices, /rollouts, /models, /alerts, /models/<m>/policy,
//         /models/<m>/drift?version=v&window_seconds=W, /models/<m>/performance?version=v&window_seconds=W,
//         /models/<m>/fairness?version=v&window_seconds=W (the fairness card: fairness.mjs)
// Window: the picker's width (1 h ... 7 d) regroups the same telemetry; "auto" keeps the policy's
//         width unless that shows fewer than MIN_WINDOWS windows (a fresh server), then 1 h.
// Token:  typed once into the gate (kept in sessionStorage for this tab) or passed as
//         /dashboard/#token=...; the fragment is removed from the address bar at once.
// Tests:  window.edgefleetDashboard exposes the state and the Chart instances;
//         body[data-state] is "loading", "token", "ready" or "error".
import { renderFairness } from './fairness.mjs';

const Chart = window.Chart;
const TOKEN_KEY = 'edgefleet.adminToken';
const API = new URL('../api/v1/', window.location.href);
const REFRESH_MS = 60_000;
const PALETTE = ['#4f46e5', '#0891b2', '#ea580c', '#16a34a', '#db2777', '#7c3aed', '#ca8a04', '#0d9488', '#2563eb', '#65a30d', '#9333ea', '#be123c'];
const STATE_COLORS = { installed: '#16a34a', assigned: '#4f46e5', pending: '#cbd5e1', failed: '#dc2626', incapable: '#d97706', rolled_back: '#9333ea' };
const SCORE = '<score>';
const VISIBLE_FIELDS = 6;
const MIN_WINDOWS = 3;
const HOUR = 3600;

const $ = (sel) => document.querySelector(sel);
const state = { token: null, data: null, reports: {}, model: null, version: null, cohort: null, window: 'auto', windowSeconds: null,
  charts: {}, timer: null, updatedAt: null, fairMetric: 'equalized_odds_difference' };

class AuthError extends Error {}

Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
Chart.defaults.font.size = 12;
Chart.defaults.color = '#4b5563';
Chart.defaults.borderColor = '#eef0f5';
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.plugins.legend.labels.boxWidth = 12;
Chart.defaults.plugins.legend.labels.boxHeight = 12;
Chart.defaults.plugins.tooltip.backgroundColor = '#111827';

// Reference, alert and threshold lines: drawn across the whole plot at their value, so they show
// with one window as well as with many (a line dataset of one point draws nothing). Their
// datasets keep the values (legend, tooltip, scale) but Chart.js itself draws no line for them.
const hlinePlugin = {
  id: 'edgefleetHlines',
  afterDatasetsDraw(chart) {
    const { ctx, chartArea: area, scales: { y } } = chart;
    chart.data.datasets.forEach((ds, i) => {
      if (ds.hline === undefined || !chart.isDatasetVisible(i)) return;
      const py = y.getPixelForValue(ds.hline);
      if (!(py >= area.top - 1 && py <= area.bottom + 1)) return;
      ctx.save();
      ctx.strokeStyle = ds.borderColor;
      ctx.lineWidth = ds.borderWidth || 1.5;
      ctx.setLineDash(ds.borderDash || []);
      ctx.beginPath();
      ctx.moveTo(area.left, py);
      ctx.lineTo(area.right, py);
      ctx.stroke();
      ctx.restore();
    });
  },
};
Chart.register(hlinePlugin);
const hline = (label, value, n, style) => ({ label, data: Array.from({ length: n }, () => value), hline: value, showLine: false,
  pointRadius: 0, pointHoverRadius: 0, borderWidth: 1.5, backgroundColor: style.borderColor, ...style });

// ---- token and API ---------------------------------------------------------------------------

function takeFragmentToken() {
  const m = window.location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path) {
  const resp = await fetch(new URL(path, API), { headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store' });
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: reported below */ }
  if (resp.status === 401 || resp.status === 403) throw new AuthError(body?.error || `HTTP ${resp.status}`);
  if (!resp.ok) throw new Error(`${path}: ${body?.error || `HTTP ${resp.status}`}`);
  return body;
}

function showGate(message) {
  document.body.dataset.state = 'token';
  $('#main').hidden = true;
  $('#controls').hidden = true;
  $('#token-gate').hidden = false;
  $('#token-error').hidden = !message;
  $('#token-error').textContent = message || '';
  $('#token-input').focus();
}

function showError(title, text) {
  $('#error').hidden = !title;
  $('#error-title').textContent = title || '';
  $('#error-text').textContent = text || '';
}

// ---- formatting ------------------------------------------------------------------------------

function fmtWindow(ts, width) {
  const d = new Date(ts * 1000);
  const opts = { timeZone: 'UTC', month: 'short', day: 'numeric' };
  if (width < 86400) Object.assign(opts, { hour: '2-digit', minute: '2-digit', hour12: false });
  return d.toLocaleString('en-US', opts);
}

function fmtTime(iso) {
  if (!iso) return '';
  return `${new Date(iso).toLocaleString('en-US', { timeZone: 'UTC', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false })} UTC`;
}

const num = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(d));
const versionLabel = (d) => (d.active_version === null || d.active_version === undefined ? 'no model' : `${d.active_model || '?'} v${d.active_version}`);
const cohortsOf = (d) => [`group=${d.group}`, ...(d.tags || []).map((t) => `tag=${t}`)];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- cards and charts ------------------------------------------------------------------------

function card(name) { return document.querySelector(`[data-card="${name}"]`); }

function setEmpty(name, title, text) {
  const c = card(name);
  const box = c.querySelector('.empty');
  c.classList.toggle('is-empty', Boolean(title));
  box.hidden = !title;
  box.replaceChildren();
  if (title) box.append(el('strong', '', title), el('span', 'small', text || ''));
  c.dataset.empty = title ? 'true' : 'false';
  if (title) drop(name);
}

function drop(name) {
  if (state.charts[name]) {
    state.charts[name].destroy();
    delete state.charts[name];
  }
}

function draw(name, canvasId, config) {
  drop(name);
  setEmpty(name, null);
  state.charts[name] = new Chart(document.getElementById(canvasId), config);
  return state.charts[name];
}

const axisTitle = (text) => ({ display: true, text, color: '#6b7280', font: { weight: '600' } });

function renderVersions(devices) {
  if (!devices.length) {
    return setEmpty('versions', 'No devices enrolled yet', 'Enroll one: edgefleet devices token --group stores, then on the device edgefleet agent enroll --token enr_... --device-id store-1 --out cred.json. Its running version shows here.');
  }
  const cohorts = [...new Set(devices.flatMap(cohortsOf))].sort((a, b) => (a.startsWith('group=') === b.startsWith('group=') ? a.localeCompare(b) : a.startsWith('group=') ? -1 : 1));
  const labels = [...new Set(devices.map(versionLabel))].sort((a, b) => (a === 'no model') - (b === 'no model') || a.localeCompare(b, 'en', { numeric: true }));
  const datasets = labels.map((v, i) => ({
    label: v, backgroundColor: v === 'no model' ? '#cbd5e1' : PALETTE[i % PALETTE.length], borderRadius: 4, maxBarThickness: 28,
    data: cohorts.map((c) => devices.filter((d) => versionLabel(d) === v && cohortsOf(d).includes(c)).length),
  }));
  draw('versions', 'chart-versions', {
    type: 'bar', data: { labels: cohorts, datasets },
    options: { indexAxis: 'y', plugins: { legend: { position: 'bottom' } },
      scales: { x: { stacked: true, title: axisTitle('Devices'), ticks: { precision: 0 } }, y: { stacked: true, title: axisTitle('Cohort') } } },
  });
}

function renderRollouts(rollouts) {
  const list = $('#rollout-list');
  list.replaceChildren();
  if (!rollouts.length) {
    const m = state.data.models.find((x) => x.name === state.model);
    const cmd = m ? `edgefleet rollout start --model ${m.name} --version ${m.latest} --steps 10,50,100` : 'edgefleet publish build/churn-v1.tar, then edgefleet rollout start --model churn --version 1';
    return setEmpty('rollouts', 'No rollouts yet', `Start one: ${cmd}. Its steps and per-device states show here.`);
  }
  const shown = rollouts.slice(0, 6);
  const labels = shown.map((r) => `#${r.id} ${r.model} v${r.version}${r.targets ? '' : ' · no devices'}`);
  const states = Object.keys(STATE_COLORS).filter((s) => shown.some((r) => r.counts[s]));
  draw('rollouts', 'chart-rollouts', {
    type: 'bar',
    data: { labels, datasets: states.map((s) => ({ label: s.replace('_', ' '), backgroundColor: STATE_COLORS[s], borderRadius: 4, maxBarThickness: 26, data: shown.map((r) => r.counts[s] || 0) })) },
    options: { indexAxis: 'y', plugins: { legend: { position: 'bottom' } },
      scales: { x: { stacked: true, title: axisTitle('Target devices'), ticks: { precision: 0 } }, y: { stacked: true } } },
  });
  for (const r of shown.slice(0, 3)) {
    const li = el('li');
    li.dataset.rollout = String(r.id);
    const look = rolloutLook(r);
    li.dataset.look = look.badge;
    const bar = el('span', 'bar');
    const fill = el('i');
    fill.style.width = `${Math.round(r.progress * 100)}%`;
    bar.append(fill);
    const step = `step ${Math.min(r.step_index + 1, r.steps.length)}/${r.steps.length} · ${r.steps[Math.min(r.step_index, r.steps.length - 1)]}%`;
    li.append(el('span', 'what', `#${r.id} v${r.version}`), el('span', `badge badge-${look.badge}`, look.text),
      el('span', 'muted', r.targets ? step : 'no target device'), bar, el('span', 'pct', look.value));
    li.title = r.reason || (r.targets ? '' : 'this rollout matched no enrolled device');
    list.append(li);
  }
}

/** How a rollout reads: a rollout that reached no device is never a green "completed 0 %". */
function rolloutLook(r) {
  const installed = r.counts.installed || 0;
  if (!r.targets) return { badge: 'empty', text: `${r.state.replace('_', ' ')} · no devices`, value: '0/0', sub: 'reached no device' };
  return { badge: r.state, text: r.state.replace('_', ' '), value: `${Math.round(r.progress * 100)}%`, sub: `${installed}/${r.targets} installed` };
}

function driftSeries(windows) {
  const fields = new Set();
  for (const w of windows) {
    const p = w[w.primary];
    if (p) { Object.keys(p.fields).forEach((f) => fields.add(f)); fields.add(SCORE); }
  }
  const pick = (w, f) => { const p = w[w.primary]; return p ? (f === SCORE ? p.score : p.fields[f]) : null; };
  return [...fields].map((f) => {
    const points = windows.map((w) => pick(w, f));
    const values = points.map((r) => (r ? (r.psi_excess ?? r.psi ?? null) : null));
    return { field: f, points, values, peak: Math.max(-Infinity, ...values.filter((v) => v !== null)) };
  }).sort((a, b) => b.peak - a.peak);
}

function renderDrift(report, cohort, policy) {
  const pill = $('#drift-verdict');
  pill.hidden = true;
  const windows = (report?.windows || []).filter((w) => w.cohort === cohort);
  const series = driftSeries(windows).filter((s) => s.values.some((v) => v !== null));
  if (!windows.length || !series.length) {
    return setEmpty('drift', report?.windows?.length ? `No drift comparison for ${cohort} yet` : 'No drift windows yet',
      'A device agent sends a histogram sketch when its sketch window closes (every hour by default) or when it stops; drift compares it with the manifest\'s reference statistics.');
  }
  const W = report.window_seconds;
  const labels = windows.map((w) => fmtWindow(w.window_start, W));
  const threshold = policy?.psi_threshold ?? report.policy?.psi_threshold ?? 0.1;
  const datasets = series.map((s, i) => ({
    label: s.field === SCORE ? 'score' : s.field, data: s.values, spanGaps: true, cubicInterpolationMode: 'monotone', borderWidth: 2,
    borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length], hidden: i >= VISIBLE_FIELDS,
    pointRadius: s.points.map((r) => (r?.verdict === 'drift' ? 5 : 2.5)),
    pointBackgroundColor: s.points.map((r) => (r?.verdict === 'drift' ? '#dc2626' : PALETTE[i % PALETTE.length])),
    verdicts: s.points.map((r) => r?.verdict ?? 'no comparison'), raw: s.points.map((r) => r?.psi ?? null),
  }));
  datasets.push({ ...hline(`threshold ${threshold}`, threshold, labels.length, { borderColor: '#dc2626', borderDash: [6, 5] }), isThreshold: true });
  draw('drift', 'chart-drift', {
    type: 'line', data: { labels, datasets },
    options: { interaction: { mode: 'nearest', intersect: false },
      plugins: { legend: { position: window.innerWidth < 700 ? 'bottom' : 'right', labels: { usePointStyle: true, pointStyle: 'line' } },
        tooltip: { callbacks: { label: (ctx) => (ctx.dataset.isThreshold ? `threshold ${threshold}`
          : `${ctx.dataset.label}: ${num(ctx.parsed.y)} above noise (PSI ${num(ctx.dataset.raw[ctx.dataIndex])}, ${ctx.dataset.verdicts[ctx.dataIndex]})`) } } },
      scales: { y: { title: axisTitle('PSI above noise'), suggestedMin: 0, suggestedMax: threshold * 2 }, x: { title: axisTitle('Window (UTC)'), offset: labels.length < 3 } } },
  });
  const last = windows[windows.length - 1];
  const drifting = last[last.primary]?.drifting || [];
  pill.hidden = false;
  pill.className = `pill ${last.verdict === 'drift' ? 'bad' : last.verdict === 'no_drift' ? 'good' : 'neutral'}`;
  pill.textContent = last.verdict === 'drift' ? `Latest window: drift in ${drifting.map((f) => (f === SCORE ? 'score' : f)).join(', ')}`
    : last.verdict === 'no_drift' ? 'Latest window: no drift' : 'Latest window: not enough data';
  $('#drift-sub').textContent = `Noise-corrected PSI per input and the score, ${cohort}, v${report.model_version} (${last.primary === 'vs_baseline' ? 'against its own baseline' : 'against the reference'}). Red points: drift verdict. Fields outside the top ${VISIBLE_FIELDS} are hidden; click a legend entry to show it.`;
}

function renderPerf(name, canvasId, report, cohort, metric, limit) {
  const windows = (report?.windows || []).filter((w) => w.cohort === cohort);
  const title = metric === 'auroc' ? 'AUROC' : 'Average precision';
  if (!windows.length) return setEmpty(name, `No predictions for ${cohort} yet`, 'Devices send sampled predictions; labels recorded later (record_outcome) give the realized values.');
  const labels = windows.map((w) => fmtWindow(w.window_start, report.window_seconds));
  const ref = report.reference?.[metric];
  const datasets = [
    { label: `realized ${title}`, data: windows.map((w) => w.realized?.[metric] ?? null), borderColor: '#4f46e5', backgroundColor: '#4f46e5', borderWidth: 2.5, pointRadius: 3, spanGaps: true, cubicInterpolationMode: 'monotone',
      n: windows.map((w) => w.realized?.n_labeled ?? 0) },
    { label: `estimated ${title} (CBPE)`, data: windows.map((w) => w.estimated?.[metric] ?? null), borderColor: '#0891b2', backgroundColor: '#0891b2', borderDash: [6, 4], borderWidth: 2, pointRadius: 2.5, spanGaps: true, cubicInterpolationMode: 'monotone',
      n: windows.map((w) => w.n_predictions) },
  ];
  if (ref !== undefined && ref !== null) {
    datasets.push(hline(`reference ${num(ref)}`, ref, labels.length, { borderColor: '#6b7280', borderDash: [2, 3], borderWidth: 1.5 }));
    if (limit !== undefined && limit !== null) {
      datasets.push(hline(`alert below ${num(ref - limit)}`, ref - limit, labels.length, { borderColor: '#dc2626', borderDash: [6, 5], borderWidth: 1.5 }));
    }
  }
  draw(name, canvasId, {
    type: 'line', data: { labels, datasets },
    options: { interaction: { mode: 'index', intersect: false },
      plugins: { legend: { position: 'bottom', labels: { usePointStyle: true, pointStyle: 'line' } },
        tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${num(ctx.parsed.y)}${ctx.dataset.n ? ` (n=${ctx.dataset.n[ctx.dataIndex]})` : ''}` } } },
      scales: { y: { title: axisTitle(title), suggestedMin: Math.min(metric === 'auroc' ? 0.5 : 0, ref == null ? 1 : ref - (limit ?? 0) - 0.05), suggestedMax: 1 },
        x: { title: axisTitle('Window (UTC)'), offset: labels.length < 3 } } },  // one or two windows sit mid-plot, not on its edge
  });
}

function alertText(a) {
  const d = a.details || {};
  if (a.kind === 'drift') return `PSI ${num(d.psi)} (${num(d.psi_excess)} above noise, threshold ${d.psi_threshold ?? '–'}), n=${d.n ?? '–'}`;
  if (a.kind === 'fairness') return `${num(d.value)} [${num(d.ci?.[0])}, ${num(d.ci?.[1])}] vs ${d.reference_group} (limit ${d.limit ?? '–'}), n ${d.n_group ?? '–'} vs ${d.n_reference ?? '–'}`;
  return `${num(d.value)} vs reference ${num(d.reference)} (max drop ${d.max_drop ?? '–'}), ${d.n_labeled ?? 0} labeled`;
}

function renderAlerts(alerts, windowSeconds) {
  const list = $('#alert-list');
  list.replaceChildren();
  if (!alerts.length) return setEmpty('alerts', 'No alerts', 'The monitor raises an alert after consecutive bad windows and clears it after consecutive good ones.');
  const when = (a) => a.details?.fired_in_window ?? a.details?.window_start ?? Date.parse(a.created_at) / 1000;
  const W = windowSeconds || 86400;
  const slots = [...new Set(alerts.map((a) => Math.floor(when(a) / W) * W))].sort((x, y) => x - y);
  const groups = [['drift', 'firing', '#dc2626'], ['performance', 'firing', '#ea580c'], ['fairness', 'firing', '#9333ea'], ['drift', 'cleared', '#cbd5e1'],
    ['performance', 'cleared', '#e5c9b0'], ['fairness', 'cleared', '#ddd6fe']];
  const datasets = groups.map(([kind, st, color]) => ({
    label: `${kind} · ${st}`, backgroundColor: color, borderRadius: 4, maxBarThickness: 36,
    data: slots.map((s) => alerts.filter((a) => a.kind === kind && a.state === st && Math.floor(when(a) / W) * W === s).length),
  })).filter((ds) => ds.data.some((v) => v > 0));
  draw('alerts', 'chart-alerts', {
    type: 'bar', data: { labels: slots.map((s) => fmtWindow(s, W)), datasets },
    options: { plugins: { legend: { position: 'bottom' } },
      scales: { x: { stacked: true, title: axisTitle('Window the alert fired in (UTC)') }, y: { stacked: true, title: axisTitle('Alerts'), ticks: { precision: 0 } } } },
  });
  for (const a of alerts.slice(0, 100)) {
    const li = el('li', a.state);
    li.dataset.alertId = String(a.id);
    li.dataset.state = a.state;
    const body = el('div');
    body.append(el('div', 'title', `${a.subject === SCORE ? 'score' : a.subject} · ${a.kind}`), el('div', 'meta', `${a.cohort} · ${a.model} v${a.version} · ${alertText(a)}`));
    const whenEl = el('div', 'when', fmtTime(a.created_at));
    if (a.cleared_at) whenEl.append(el('div', '', `cleared ${fmtTime(a.cleared_at)}`));
    li.append(el('span', `badge badge-${a.state}`, a.state), body, whenEl);
    list.append(li);
  }
}

function renderKpis(d) {
  const groups = new Set(d.devices.map((x) => x.group));
  $('#kpi-devices').textContent = String(d.devices.length);
  $('#kpi-devices-sub').textContent = d.devices.length ? `${groups.size} group${groups.size === 1 ? '' : 's'} · ${d.devices.filter((x) => x.active_version !== null && x.active_version !== undefined).length} running a model` : 'none enrolled';
  const m = d.models.find((x) => x.name === state.model);
  $('#kpi-model').textContent = m ? `${m.name} v${m.latest}` : '–';
  $('#kpi-model-sub').textContent = m ? `${m.versions.length} version${m.versions.length === 1 ? '' : 's'} registered` : 'no model registered';
  const r = d.rollouts[0];
  const look = r ? rolloutLook(r) : null;
  $('#kpi-rollout').textContent = r ? look.value : '–';
  $('#kpi-rollout-sub').textContent = r ? `#${r.id} ${r.model} v${r.version} · ${r.state} · ${look.sub}` : 'no rollout yet';
  const firing = d.alerts.filter((a) => a.state === 'firing');
  $('#kpi-alerts').textContent = String(firing.length);
  $('#kpi-alerts-sub').textContent = firing.length ? `newest: ${firing[0].subject === SCORE ? 'score' : firing[0].subject} in ${firing[0].cohort}` : 'all clear';
  $('#kpi-alerts-card').classList.toggle('alarm', firing.length > 0);
}

// ---- selection -------------------------------------------------------------------------------

function fillSelect(sel, options, value) {
  sel.replaceChildren(...options.map(([v, text]) => { const o = el('option', '', text); o.value = String(v); return o; }));
  sel.value = String(value ?? '');
  sel.disabled = options.length === 0;
}

async function report(model, version, width = null) {
  const key = `${model}:${version}:${width ?? 'policy'}`;
  if (!state.reports[key]) {
    const q = `?version=${version}${width ? `&window_seconds=${width}` : ''}`;
    const [drift, perf, policy, fair] = await Promise.all([api(`models/${encodeURIComponent(model)}/drift${q}`), api(`models/${encodeURIComponent(model)}/performance${q}`),
      api(`models/${encodeURIComponent(model)}/policy`), api(`models/${encodeURIComponent(model)}/fairness${q}`)]);
    state.reports[key] = { drift, perf, policy: policy.policy, fair };
  }
  return state.reports[key];
}

const fmtWidth = (w) => (w > 86400 && w % 86400 === 0 ? `${w / 86400} d` : w % 3600 === 0 ? `${w / 3600} h` : `${w} s`);

/** The reports at the chosen width; "auto" is the policy's unless that shows too few windows. */
async function windowedReport(model, version) {
  if (state.window !== 'auto') return report(model, version, Number(state.window));
  const r = await report(model, version);
  const starts = new Set([...r.drift.windows, ...r.perf.windows].map((w) => w.window_start));
  if (starts.size >= MIN_WINDOWS || !starts.size || (r.policy?.window_seconds ?? 86400) <= HOUR) return r;
  return report(model, version, HOUR);
}

function cohortOrder(a, b) {
  const rank = (c) => (c === 'all' ? 0 : c.startsWith('group=') ? 1 : c.startsWith('tag=') ? 2 : 3);
  return rank(a) - rank(b) || a.localeCompare(b);
}

async function chooseVersion(d) {
  const m = d.models.find((x) => x.name === state.model);
  if (!m) return null;
  if (state.version && m.versions.some((v) => v.version === state.version)) return state.version;
  // What most of the fleet runs, else the newest version with telemetry, else the newest.
  const running = new Map();
  for (const dev of d.devices) if (dev.active_model === m.name) running.set(dev.active_version, (running.get(dev.active_version) || 0) + 1);
  const [top] = [...running].filter(([v]) => m.versions.some((x) => x.version === v)).sort((a, b) => b[1] - a[1] || b[0] - a[0]);
  if (top) return top[0];
  for (const v of [...m.versions].reverse()) {
    const r = await report(m.name, v.version);
    if (r.drift.windows.length || r.perf.windows.length) return v.version;
  }
  return m.latest;
}

async function renderModel() {
  const d = state.data;
  const modelAlerts = d.alerts.filter((a) => a.model === state.model);
  const m = d.models.find((x) => x.name === state.model);
  fillSelect($('#sel-model'), d.models.map((x) => [x.name, x.name]), state.model);
  fillSelect($('#sel-version'), m ? [...m.versions].reverse().map((v) => [v.version, `v${v.version}${v.version === m.latest ? ' (latest)' : ''}`]) : [], state.version);
  if (!m) {
    fillSelect($('#sel-cohort'), [], null);
    const msg = ['No model registered yet', 'Publish a signed bundle to see drift and performance: edgefleet publish build/churn-v1.tar'];
    setEmpty('drift', ...msg); setEmpty('auroc', ...msg); setEmpty('ap', ...msg); setEmpty('fairness', ...msg);
    renderAlerts(modelAlerts, 86400);
    return;
  }
  const r = await windowedReport(state.model, state.version);
  // every cohort of the fleet, not only those with windows in this report: a cohort without
  // telemetry for this version shows its own empty state rather than vanishing from the list
  const cohorts = [...new Set(['all', ...d.devices.flatMap(cohortsOf), ...[...r.drift.windows, ...r.perf.windows].map((w) => w.cohort)])].sort(cohortOrder);
  if (!cohorts.includes(state.cohort)) {
    // the broadest cohort with a firing drift alert on this version, else the whole fleet
    const alerted = modelAlerts.filter((a) => a.state === 'firing' && a.kind === 'drift' && a.version === state.version && cohorts.includes(a.cohort))
      .sort((a, b) => cohortOrder(a.cohort, b.cohort))[0];
    state.cohort = alerted ? alerted.cohort : (cohorts.includes('all') ? 'all' : cohorts[0] ?? 'all');
  }
  fillSelect($('#sel-cohort'), cohorts.map((c) => [c, c]), state.cohort);
  renderDrift(r.drift, state.cohort, r.policy);
  renderPerf('auroc', 'chart-auroc', r.perf, state.cohort, 'auroc', r.policy?.max_auroc_drop);
  renderPerf('ap', 'chart-ap', r.perf, state.cohort, 'average_precision', r.policy?.max_ap_drop);
  renderFairness({ el, num, fmtWindow, setEmpty, draw, hline, axisTitle, PALETTE }, r.fair, state.fairMetric);
  renderAlerts(modelAlerts, r.policy?.window_seconds);
  const W = r.drift.window_seconds;
  const P = r.policy?.window_seconds;
  $('#sel-window').value = state.window;
  $('#sel-window').options[0].textContent = `auto (${fmtWidth(W)})`;
  $('#footnote').textContent = `Windows of ${fmtWidth(W)} (UTC)${P && P !== W ? `; alerts use the policy's ${fmtWidth(P)}` : ''}, last ${r.policy?.lookback_windows ?? '–'} windows. Estimated metrics: ${r.perf.assumptions}. Updated ${state.updatedAt.toLocaleTimeString('en-GB', { timeZone: 'UTC' })} UTC.`;
}

async function load() {
  try {
    const [models, devices, rollouts, alerts] = await Promise.all([api('models'), api('devices'), api('rollouts'), api('alerts?limit=500')]);
    state.data = { models: models.models, devices: devices.devices, rollouts: rollouts.rollouts, alerts: alerts.alerts };
    state.reports = {};
    state.updatedAt = new Date();
    const names = state.data.models.map((x) => x.name);
    if (!names.includes(state.model)) state.model = state.data.alerts.find((a) => a.state === 'firing' && names.includes(a.model))?.model ?? names[0] ?? null;
    state.version = await chooseVersion(state.data);
    $('#token-gate').hidden = true;
    $('#main').hidden = false;
    $('#controls').hidden = false;
    showError(null);
    renderKpis(state.data);
    renderVersions(state.data.devices);
    renderRollouts(state.data.rollouts);
    await renderModel();
    document.body.dataset.state = 'ready';
  } catch (exc) {
    if (exc instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      return showGate(`The server refused the token: ${exc.message}`);
    }
    showError('The dashboard could not load its data', String(exc.message || exc));
    document.body.dataset.state = 'error';
  }
}

async function reselect(change) {
  try {
    await change();
    await renderModel();
  } catch (exc) {
    showError('The dashboard could not load its data', String(exc.message || exc));
  }
}

$('#sel-model').addEventListener('change', (e) => reselect(async () => {
  state.model = e.target.value;
  state.version = null;
  state.cohort = null;
  state.version = await chooseVersion(state.data);
}));
$('#sel-version').addEventListener('change', (e) => reselect(() => { state.version = Number(e.target.value); }));
$('#sel-cohort').addEventListener('change', (e) => reselect(() => { state.cohort = e.target.value; }));
$('#sel-window').addEventListener('change', (e) => reselect(() => { state.window = e.target.value; }));
$('#sel-fair-metric').addEventListener('change', (e) => reselect(() => { state.fairMetric = e.target.value; }));
$('#btn-refresh').addEventListener('click', () => load());
$('#btn-signout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); state.token = null; showGate(null); });
$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const tok = $('#token-input').value.trim();
  if (!tok) return;
  sessionStorage.setItem(TOKEN_KEY, tok);
  state.token = tok;
  $('#token-input').value = '';
  document.body.dataset.state = 'loading';
  load();
});

window.edgefleetDashboard = { state, reload: load };
state.token = takeFragmentToken();
if (state.token) {
  load();
} else {
  showGate(null);
}
state.timer = setInterval(() => { if (state.token && document.visibilityState === 'visible') load(); }, REFRESH_MS);
