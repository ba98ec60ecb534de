// Churn Insight: the edgefleet browser demo. Loads the newest bundle the fleet server offers (or
// the one picked: ?model=&version=; with none published it says which command to run),
// verifies it in the page (runtimes/js), scores the form on every edit with ONNX Runtime Web or
// TF.js, and keeps working with the server gone (service worker + verified-artifact cache).
import { loadBundle, openScorer, TelemetryQueue } from './runtime/edgefleet.mjs';
import { InputError } from './runtime/encoding.mjs';
import { importPublicKey } from './runtime/verify.mjs';

const $ = (sel) => document.querySelector(sel);
const LIBRARIES = {
  onnx: async () => {
    const ort = await import('./vendor/ort/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = new URL('./vendor/ort/', location.href).href;  // same origin: works offline via the service worker
    ort.env.wasm.numThreads = 1;  // threads need COOP/COEP; one row takes microseconds anyway
    return ort;
  },
  tfjs: () => import('./vendor/tfjs/tf.fesm.min.js'),
};
const RUNTIME_LABEL = { onnx: ['ONNX Runtime Web', 'wasm'], tfjs: ['TensorFlow.js', 'cpu'] };
const runtimeText = (rt, scorer) => {
  const [name, backend] = RUNTIME_LABEL[rt];
  const version = scorer?.runtime.match(/\d+\.\d+\.\d+/)?.[0];
  return `${name}${version ? ` ${version}` : ''} · ${backend}`;
};
const GROUPS = [
  ['Account', ['tenure', 'Contract', 'PaymentMethod', 'PaperlessBilling', 'MonthlyCharges', 'TotalCharges']],
  ['Services', ['PhoneService', 'MultipleLines', 'InternetService', 'OnlineSecurity', 'TechSupport', 'StreamingTV']],
  ['Profile', ['gender', 'SeniorCitizen', 'Partner', 'Dependents']],
];
const LABELS = { tenure: 'Tenure', Contract: 'Contract', PaymentMethod: 'Payment method', PaperlessBilling: 'Paperless billing',
  MonthlyCharges: 'Monthly charges', TotalCharges: 'Total charges', PhoneService: 'Phone service', MultipleLines: 'Multiple lines',
  InternetService: 'Internet service', OnlineSecurity: 'Online security', TechSupport: 'Tech support', StreamingTV: 'Streaming TV',
  gender: 'Gender', SeniorCitizen: 'Senior citizen', Partner: 'Partner', Dependents: 'Dependents' };
const UNITS = { tenure: 'months', MonthlyCharges: '$ / month', TotalCharges: '$' };
const PRESETS = {
  risky: { gender: 'Female', SeniorCitizen: 1, Partner: 'No', Dependents: 'No', tenure: 3, PhoneService: 'Yes', MultipleLines: 'Yes',
    InternetService: 'Fiber optic', OnlineSecurity: 'No', TechSupport: 'No', StreamingTV: 'Yes', Contract: 'Month-to-month',
    PaperlessBilling: 'Yes', PaymentMethod: 'Electronic check', MonthlyCharges: 94.4, TotalCharges: 283.2 },
  loyal: { gender: 'Male', SeniorCitizen: 0, Partner: 'Yes', Dependents: 'Yes', tenure: 61, PhoneService: 'Yes', MultipleLines: 'No',
    InternetService: 'DSL', OnlineSecurity: 'Yes', TechSupport: 'Yes', StreamingTV: 'No', Contract: 'Two year',
    PaperlessBilling: 'No', PaymentMethod: 'Bank transfer (automatic)', MonthlyCharges: 58.2, TotalCharges: 3550.2 },
};

const state = { current: null, trusted: null, scorers: {},
  runtime: new URLSearchParams(location.search).get('runtime') || localStorage.getItem('edgefleet.demo.runtime') || 'onnx',
  manifest: null, online: true, last: null, error: null, telemetry: null, timings: {} };

function setOnline(online) {
  state.online = online;
  const pill = $('#net-pill');
  pill.dataset.state = online ? 'online' : 'offline';
  pill.className = `pill ${online ? 'pill-online' : 'pill-offline'}`;
  pill.querySelector('span').textContent = online ? 'Online' : 'Offline · scoring on this device';
}

function showError(title, exc) {
  state.error = `${exc?.name || 'Error'}: ${exc?.message || exc}`;
  if ($('#model-pill').textContent.startsWith('Loading')) $('#model-pill').textContent = 'No model';
  $('#error-title').textContent = title;
  $('#error-text').textContent = state.error;
  $('#error').hidden = false;
  $('#label').className = 'verdict verdict-none';
  $('#label').textContent = 'No score: the model was refused';
  document.body.dataset.state = 'error';
}

function check(id, status, note) {
  const el = $(id);
  el.classList.remove('ok', 'fail', 'wait');
  el.classList.add(status);
  if (note !== undefined) el.dataset.note = note;
}

/** The server has no model the page can run: nothing was published yet. */
class NoModelError extends Error {}

/** The model and version asked for in the address (?model=&version=), else the newest upload. */
function wanted() {
  const q = new URLSearchParams(location.search);
  return { model: q.get('model') || '', version: q.get('version') || '' };
}

/** current.json from the server, else the copy kept from the last visit (offline). */
async function currentBundle() {
  const w = wanted();
  const q = new URLSearchParams(Object.entries(w).filter(([, v]) => v));
  const url = `bundle/current.json${q.size ? `?${q}` : ''}`;
  const fallback = (exc) => {  // the copy kept from the last visit, if it is the model asked for
    const saved = JSON.parse(localStorage.getItem('edgefleet.demo.current') || 'null');
    if (!saved || (w.model && saved.name !== w.model) || (w.version && String(saved.version) !== w.version)) throw exc;
    setOnline(false);
    return saved;
  };
  let r;
  try {
    r = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(4000) });
  } catch (exc) {
    return fallback(exc);
  }
  if (!r.ok) {
    const error = (await r.json().catch(() => ({}))).error || '';
    if (r.status === 404 && /^model: no registered model/.test(error)) throw new NoModelError(error);
    const exc = new Error(`${url}: HTTP ${r.status} ${error}`);
    return r.status === 404 || r.status === 400 ? Promise.reject(exc) : fallback(exc);
  }
  setOnline(true);
  const cur = await r.json();
  localStorage.setItem('edgefleet.demo.current', JSON.stringify(cur));
  return cur;
}

/** The picker: every model and version the server offers to the page, newest first. */
async function fillPicker(cur) {
  let list;
  try {
    const r = await fetch('bundle/models.json', { cache: 'no-store', signal: AbortSignal.timeout(4000) });
    if (!r.ok) return;
    list = (await r.json()).models;
  } catch {
    return;  // offline: the page runs what it has
  }
  const sel = $('#model-picker');
  const options = list.flatMap((m) => m.versions.map((v, i) => {
    const o = document.createElement('option');
    o.value = `${m.name}@${v.version}`;
    o.textContent = `${m.name} v${v.version}${i === 0 ? ' (newest)' : ''}`;
    return o;
  }));
  sel.replaceChildren(...options);
  if (cur) sel.value = `${cur.name}@${cur.version}`;
  else sel.selectedIndex = -1;
  $('#model-picker-wrap').hidden = options.length === 0;
  $('#model-pill').hidden = options.length > 0;
  sel.onchange = () => {
    const [name, version] = [sel.value.slice(0, sel.value.lastIndexOf('@')), sel.value.slice(sel.value.lastIndexOf('@') + 1)];
    const q = new URLSearchParams(location.search);
    q.set('model', name);
    q.set('version', version);
    location.search = q.toString();
  };
}

function showNoModel(exc) {
  $('#empty').hidden = false;
  document.querySelector('main.layout').hidden = true;
  $('#model-pill').textContent = 'No model yet';
  $('#model-pill').classList.add('pill-muted');
  $('#empty').dataset.reason = exc.message;
  $('#label').textContent = 'No model published yet';
  document.body.dataset.state = 'empty';
}

/** Trust on first use: the publisher keys seen on the first visit stay the only trusted ones. */
async function trustedKeys(cur) {
  let pems = JSON.parse(localStorage.getItem('edgefleet.demo.trusted') || 'null');
  if (!pems) {
    pems = cur.trusted_keys;
    localStorage.setItem('edgefleet.demo.trusted', JSON.stringify(pems));
  }
  return pems;
}

function fieldInput(f) {
  const label = document.createElement('label');
  label.className = 'field';
  label.dataset.field = f.name;
  const title = document.createElement('span');
  title.textContent = LABELS[f.name] || f.name;
  if (UNITS[f.name]) {
    const hint = document.createElement('span');
    hint.className = 'hint';
    hint.textContent = ` · ${UNITS[f.name]}`;
    title.append(hint);
  }
  let input;
  if (f.type === 'categorical' || (f.type === 'numeric' && f.min === 0 && f.max === 1 && f.name === 'SeniorCitizen')) {
    input = document.createElement('select');
    const options = f.type === 'categorical' ? f.categories.filter((c) => c !== null) : [0, 1];
    for (const c of options) {
      const o = document.createElement('option');
      o.value = JSON.stringify(c);
      o.textContent = f.type === 'categorical' ? String(c) : (c ? 'Yes' : 'No');
      input.append(o);
    }
    if (f.type === 'categorical' && f.missing !== 'reject') {
      const o = document.createElement('option');
      o.value = 'null';
      o.textContent = 'Unknown';
      input.append(o);
    }
  } else if (f.type === 'boolean') {
    input = document.createElement('select');
    for (const [v, t] of [['true', 'Yes'], ['false', 'No']]) { const o = document.createElement('option'); o.value = v; o.textContent = t; input.append(o); }
  } else {
    input = document.createElement('input');
    input.type = 'number';
    input.step = 'any';
    if (Number.isFinite(f.min)) input.placeholder = `${f.min} – ${f.max}`;
  }
  input.name = f.name;
  input.id = `f-${f.name}`;
  label.append(title, input);
  return label;
}

function renderForm(manifest) {
  const fields = manifest.input_schema.fields;
  const byName = new Map(fields.map((f) => [f.name, f]));
  const used = new Set();
  const box = $('#form-groups');
  box.replaceChildren();
  const groups = GROUPS.map(([t, names]) => [t, names.filter((n) => byName.has(n))]);
  groups.push(['Other', fields.map((f) => f.name).filter((n) => !GROUPS.some(([, ns]) => ns.includes(n)))]);
  for (const [title, names] of groups) {
    if (!names.length) continue;
    const g = document.createElement('div');
    g.className = 'group';
    g.innerHTML = `<div class="group-title">${title}</div><div class="grid"></div>`;
    for (const n of names) { g.querySelector('.grid').append(fieldInput(byName.get(n))); used.add(n); }
    box.append(g);
  }
}

function readRecord(manifest) {
  const rec = {};
  for (const f of manifest.input_schema.fields) {
    const el = document.getElementById(`f-${f.name}`);
    if (el.tagName === 'SELECT') rec[f.name] = JSON.parse(el.value);
    else rec[f.name] = el.value.trim() === '' ? null : Number(el.value);
  }
  return rec;
}

function fillRecord(manifest, rec) {
  for (const f of manifest.input_schema.fields) {
    if (!(f.name in rec)) continue;
    const el = document.getElementById(`f-${f.name}`);
    const v = rec[f.name];
    if (el.tagName === 'SELECT') {
      const want = JSON.stringify(v);
      if ([...el.options].some((o) => o.value === want)) el.value = want;
    } else el.value = v === null || v === undefined ? '' : String(v);
  }
}

function renderParity(manifest) {
  const rows = (manifest.parity || []).map((p) => {
    const tr = document.createElement('tr');
    tr.dataset.format = p.format;
    if (p.format === state.runtime) tr.className = 'active';
    const cells = [
      `<span class="fmt">${p.format}</span>`, `${p.runtime} ${p.runtime_version || ''}`, (p.rows ?? '–').toLocaleString(),
      p.max_abs_diff == null ? '–' : p.max_abs_diff.toExponential(1), p.mean_abs_diff == null ? '–' : p.mean_abs_diff.toExponential(1),
      p.label_agreement == null ? '–' : `${(100 * p.label_agreement).toFixed(2)} %`,
      `<span class="badge ${p.passed ? 'badge-pass' : 'badge-fail'}">${p.passed ? 'passed' : 'failed'}</span>`,
    ];
    tr.innerHTML = cells.map((c, i) => `<td class="${[2, 3, 4, 5].includes(i) ? 'num' : ''}">${c}</td>`).join('');
    return tr;
  });
  $('#parity tbody').replaceChildren(...rows);
  $('#parity-source').textContent = `tolerance ${(manifest.parity?.[0]?.tolerance ?? 1e-5).toExponential(0)} · signed ${manifest.created_at}`;
}

function renderResult(pred, ms) {
  const pct = 100 * pred.probability;
  $('#probability').textContent = `${pct.toFixed(1)}%`;
  $('#probability').dataset.value = String(pred.probability);
  $('#gauge-fill').setAttribute('stroke-dasharray', `${pct.toFixed(2)} 100`);
  const churn = String(pred.label) === String(state.manifest.output.classes[1]);
  $('#label').className = `verdict ${churn ? 'verdict-churn' : 'verdict-stay'}`;
  $('#label').textContent = churn ? 'Likely to churn' : 'Likely to stay';
  $('#label').dataset.label = String(pred.label);
  $('#fact-latency').textContent = `${ms < 1 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
}

let pending = null;
async function scoreForm() {
  const scorer = state.scorers[state.runtime];
  if (!scorer) return;
  const record = readRecord(state.manifest);
  document.querySelectorAll('label.field.invalid').forEach((l) => l.classList.remove('invalid'));
  $('#field-error').hidden = true;
  const t0 = performance.now();
  try {
    const pred = await scorer.score(record);
    const ms = performance.now() - t0;
    state.last = { record, pred, ms };
    renderResult(pred, ms);
    state.timings.firstScore ??= performance.now();  // ms since navigation start
    state.telemetry.prediction(state.manifest, record, pred, { includeFeatures: false });
    state.telemetry.flush();
  } catch (exc) {
    if (!(exc instanceof InputError)) throw exc;
    document.querySelector(`label.field[data-field="${CSS.escape(exc.field)}"]`)?.classList.add('invalid');
    $('#field-error').textContent = `${LABELS[exc.field] || exc.field}: ${exc.reason.replace(/^row \d+: /, '')}`;
    $('#field-error').hidden = false;
  }
}

function scheduleScore() {
  clearTimeout(pending);
  pending = setTimeout(() => scoreForm().catch((exc) => showError('Scoring failed', exc)), 60);
}

async function useRuntime(runtime) {
  state.runtime = runtime;
  localStorage.setItem('edgefleet.demo.runtime', runtime);
  document.querySelectorAll('.segmented button').forEach((b) => b.setAttribute('aria-checked', String(b.dataset.runtime === runtime)));
  document.querySelectorAll('#parity tbody tr').forEach((tr) => tr.classList.toggle('active', tr.dataset.format === runtime));
  $('#fact-runtime').textContent = `${RUNTIME_LABEL[runtime][0]} · loading…`;
  if (!state.scorers[runtime]) {
    state.scorers[runtime] = await openScorer(state.current.base, { trustedKeys: state.trusted, runtime, libraries: LIBRARIES, network: state.online });
  }
  const scorer = state.scorers[runtime];
  state.manifest = scorer.manifest;
  if (!scorer.offline) setOnline(true);
  $('#fact-runtime').textContent = runtimeText(runtime, scorer);
  $('#fact-runtime').dataset.runtime = runtime;
  $('#fact-runtime').title = scorer.runtime;
  check('#check-signature', 'ok');
  check('#check-hash', 'ok');
  await scoreForm();
}

async function cacheOtherFormats(cur, pems) {
  // Verify and cache every browser format now, so switching runtime also works offline later.
  try {
    const trusted = await Promise.all(pems.map(importPublicKey));
    await loadBundle(cur.base, trusted, { network: state.online });
    check('#check-offline', 'ok');
  } catch {
    check('#check-offline', 'wait');
  }
}

async function registerWorker() {
  if (!('serviceWorker' in navigator)) return false;
  try {
    await navigator.serviceWorker.register('sw.js');
    await navigator.serviceWorker.ready;
    return true;
  } catch {
    return false;
  }
}

async function main() {
  document.body.dataset.state = 'loading';
  const worker = registerWorker();
  const deviceId = localStorage.getItem('edgefleet.demo.device') || `web-${crypto.randomUUID().slice(0, 8)}`;
  localStorage.setItem('edgefleet.demo.device', deviceId);
  state.telemetry = new TelemetryQueue({ endpoint: 'telemetry', deviceId, backoffBase: 2000,
    onChange: (s) => { $('#telemetry-stats').textContent = `· ${s.sent} sent, ${s.depth} queued`; check('#check-telemetry', s.depth ? 'wait' : 'ok'); } });
  state.telemetry.onChange(state.telemetry.stats());
  addEventListener('online', () => setOnline(true));
  addEventListener('offline', () => setOnline(false));

  let cur;
  try {
    cur = await currentBundle();
    state.current = cur;
    state.trusted = await trustedKeys(cur);
    if (!cur.formats.includes(state.runtime)) state.runtime = cur.formats[0];
    document.querySelectorAll('.segmented button').forEach((b) => { b.disabled = !cur.formats.includes(b.dataset.runtime); });
    const first = await openScorer(cur.base, { trustedKeys: state.trusted, runtime: state.runtime, libraries: LIBRARIES, network: state.online });
    state.scorers[state.runtime] = first;
    state.manifest = first.manifest;
    if (first.offline) setOnline(false);
  } catch (exc) {
    if (exc instanceof NoModelError) return showNoModel(exc);
    $('#model-pill').textContent = 'No model';
    if (!state.current) {
      showError('The fleet server did not offer a model', exc);
      $('#label').textContent = 'No score: no model could be loaded';
      await fillPicker(null);  // a model or version asked for that is not there: pick one that is
      return;
    }
    check('#check-signature', /signature/.test(exc.message) ? 'fail' : 'wait');
    check('#check-hash', /sha256|bytes/.test(exc.message) ? 'fail' : 'wait');
    showError('This model was refused and will not be used', exc);
    return;
  }
  const m = state.manifest;
  $('#model-pill').textContent = `${m.name} · v${m.version}`;
  const picker = fillPicker(cur);
  $('#fact-model').textContent = `${m.name} v${m.version}`;
  $('#fact-threshold').textContent = `p > ${m.output.threshold}`;
  const t = m.output.threshold;
  const angle = Math.PI * (1 - t);
  const [x1, y1, x2, y2] = [100 + 70 * Math.cos(angle), 100 - 70 * Math.sin(angle), 100 + 90 * Math.cos(angle), 100 - 90 * Math.sin(angle)];
  Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => $('#gauge-threshold').setAttribute(k, v.toFixed(1)));
  renderForm(m);
  fillRecord(m, PRESETS.risky);
  renderParity(m);
  $('#customer').addEventListener('input', scheduleScore);
  $('#customer').addEventListener('change', scheduleScore);
  document.querySelectorAll('[data-preset]').forEach((b) => b.addEventListener('click', () => { fillRecord(m, PRESETS[b.dataset.preset]); scheduleScore(); }));
  document.querySelectorAll('.segmented button').forEach((b) => b.addEventListener('click', () => {
    useRuntime(b.dataset.runtime).catch((exc) => showError('This runtime could not load the model', exc));
  }));
  await useRuntime(state.runtime);
  check('#check-offline', 'wait');
  await Promise.all([cacheOtherFormats(cur, state.trusted), worker, picker]);
  document.body.dataset.state = 'ready';
  state.telemetry.flush();
}

// Hooks for tests and benches: score many records with one runtime, without touching the UI.
window.edgefleetDemo = {
  state,
  ready: null,
  async scoreRecords(records, runtime) {
    if (!state.scorers[runtime]) state.scorers[runtime] = await openScorer(state.current.base, { trustedKeys: state.trusted, runtime, libraries: LIBRARIES, network: state.online });
    return (await state.scorers[runtime].scoreMany(records)).map((p) => p.probabilities);
  },
  useRuntime,
};
window.edgefleetDemo.ready = main().catch((exc) => showError('Something went wrong', exc));
