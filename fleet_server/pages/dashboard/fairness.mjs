// The dashboard's fairness card: each sensitive group's disparity against its reference group over
// windows (GET /api/v1/models/<m>/fairness), with the bootstrap interval as a band, the policy's
// tolerance as a line over a shaded "acceptable" band, and the group sizes (tooltip and list).
// app.mjs passes its helpers in (ui), so this module holds no state of its own.

export const FAIR_METRICS = {
  equalized_odds_difference: 'Equalized-odds difference',
  demographic_parity_difference: 'Demographic-parity difference',
  demographic_parity_ratio: 'Demographic-parity ratio',
};

const hexAlpha = (hex, a) => `${hex}${Math.round(a * 255).toString(16).padStart(2, '0')}`;

/** One series per (field, group) compared with the field's reference, over the report's windows. */
export function fairnessSeries(report, metric) {
  const windows = (report?.windows || []).filter((w) => Object.keys(w.fields || {}).length);
  const keys = new Map();
  for (const w of windows) {
    for (const [field, res] of Object.entries(w.fields)) {
      for (const group of Object.keys(res.comparisons || {})) keys.set(`${field}=${group}`, { field, group });
    }
  }
  return { windows, series: [...keys.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, { field, group }]) => {
    const at = windows.map((w) => w.fields[field]);
    const m = at.map((res) => res?.comparisons?.[group]?.[metric] ?? null);
    return {
      key, field, group, reference: at.find((r) => r)?.reference,
      values: m.map((x) => x?.value ?? null), lo: m.map((x) => x?.ci?.[0] ?? null), hi: m.map((x) => x?.ci?.[1] ?? null),
      verdicts: m.map((x) => x?.verdict ?? 'no comparison'), limit: m.find((x) => x)?.limit,
      n: at.map((res) => res?.groups?.[group]?.n ?? 0), nRef: at.map((res) => res?.groups?.[res.reference]?.n ?? 0),
      nLabeled: at.map((res) => res?.groups?.[group]?.n_labeled ?? 0),
    };
  }) };
}

function groupSizes(ui, list, report) {
  list.replaceChildren();
  const last = [...(report?.windows || [])].reverse().find((w) => Object.keys(w.fields || {}).length);
  if (!last) return;
  for (const [field, res] of Object.entries(last.fields)) {
    const li = ui.el('li');
    li.dataset.field = field;
    li.append(ui.el('strong', '', `${field}`), ui.el('span', 'muted', ` reference ${res.reference} · `));
    const parts = Object.entries(res.groups).map(([g, m]) => `${g}: ${m.n.toLocaleString('en-US')} rows, ${m.n_labeled.toLocaleString('en-US')} labeled (${m.n_positive.toLocaleString('en-US')} positive)`);
    li.append(ui.el('span', '', parts.join(' · ')));
    list.append(li);
  }
  list.append(ui.el('li', 'muted small', `Group sizes of the newest window (${ui.fmtWindow(last.window_start, report.window_seconds)}); no verdict below ${report.policy?.min_count} rows, positives or negatives per group.`));
}

export function renderFairness(ui, report, metric) {
  const list = document.getElementById('fair-groups');
  list.replaceChildren();
  const pill = document.getElementById('fair-verdict');
  pill.hidden = true;
  if (!report) return ui.setEmpty('fairness', 'No fairness report', '');
  if (report.privacy) return ui.setEmpty('fairness', 'Features are not sampled: no fairness per segment', report.privacy);
  if (!report.fields?.length) {
    return ui.setEmpty('fairness', 'No sensitive fields in the policy',
      `Name them, e.g. edgefleet policies set ${report.model} 'fairness_fields=["SeniorCitizen","gender"]' 'fairness_reference={"SeniorCitizen":0}'. Groups come from the sampled prediction features.`);
  }
  const { windows, series } = fairnessSeries(report, metric);
  if (!windows.length || !series.length) {
    const missing = report.missing_fields?.length ? ` No sampled prediction carries ${report.missing_fields.join(', ')}.` : '';
    return ui.setEmpty('fairness', 'No groups to compare yet', `Sampled predictions with features and their delayed labels give per-group rates.${missing}`);
  }
  const labels = windows.map((w) => ui.fmtWindow(w.window_start, report.window_seconds));
  const ratio = metric === 'demographic_parity_ratio';
  const limit = series.find((s) => s.limit !== undefined)?.limit ?? (ratio ? report.policy?.min_ratio : report.policy?.tolerance);
  const datasets = [{ label: ratio ? `acceptable (>= ${limit})` : `within tolerance (<= ${limit})`, data: labels.map(() => limit), fill: ratio ? 'end' : 'origin',
    backgroundColor: 'rgba(22,163,74,0.12)', borderColor: 'rgba(22,163,74,0.35)', borderWidth: 0, pointRadius: 0, pointHoverRadius: 0, band: 'tolerance' }];
  series.forEach((s, i) => {
    const color = ui.PALETTE[i % ui.PALETTE.length];
    datasets.push(
      { label: `${s.key} interval`, data: s.hi, borderWidth: 0, pointRadius: 0, pointHoverRadius: 0, fill: '+1', backgroundColor: hexAlpha(color, 0.16), band: 'interval', spanGaps: true },
      { label: `${s.key} interval low`, data: s.lo, borderWidth: 0, pointRadius: 0, pointHoverRadius: 0, fill: false, band: 'interval', spanGaps: true },
      { label: `${s.key} vs ${s.reference}`, data: s.values, borderColor: color, backgroundColor: color, borderWidth: 2.5, spanGaps: true,
        pointRadius: s.verdicts.map((v) => (v === 'disparity' ? 5.5 : 3)),
        pointBackgroundColor: s.verdicts.map((v) => (v === 'disparity' ? '#dc2626' : color)),
        pointBorderColor: s.verdicts.map((v) => (v === 'disparity' ? '#dc2626' : color)), series: s },
    );
  });
  datasets.push(ui.hline(`${ratio ? 'min ratio' : 'tolerance'} ${limit}`, limit, labels.length, { borderColor: '#dc2626', borderDash: [6, 5] }));
  ui.draw('fairness', 'chart-fairness', {
    type: 'line', data: { labels, datasets },
    options: { interaction: { mode: 'nearest', intersect: false },
      plugins: { legend: { position: window.innerWidth < 700 ? 'bottom' : 'right', labels: { usePointStyle: true, pointStyle: 'line', filter: (item, data) => data.datasets[item.datasetIndex].band !== 'interval' } },
        tooltip: { filter: (item) => Boolean(item.dataset.series), callbacks: { label: (ctx) => {
          const s = ctx.dataset.series, k = ctx.dataIndex;
          return `${s.key} vs ${s.reference}: ${ui.num(s.values[k])} [${ui.num(s.lo[k])}, ${ui.num(s.hi[k])}] ${s.verdicts[k]} · n ${s.n[k]} vs ${s.nRef[k]} (${s.nLabeled[k]} labeled)`;
        } } } },
      scales: { y: { title: ui.axisTitle(FAIR_METRICS[metric]), suggestedMin: ratio ? 0.5 : 0, suggestedMax: ratio ? 1 : Math.max(limit * 2, 0.2) },
        x: { title: ui.axisTitle('Window (UTC)'), offset: labels.length < 3 } } },
  });
  groupSizes(ui, list, report);
  const lastVerdicts = series.map((s) => [s.key, s.verdicts[s.verdicts.length - 1]]);
  const bad = lastVerdicts.filter(([, v]) => v === 'disparity').map(([k]) => k);
  const open = lastVerdicts.filter(([, v]) => v !== 'disparity' && v !== 'within_tolerance').map(([k]) => k);
  pill.hidden = false;
  pill.className = `pill ${bad.length ? 'bad' : open.length ? 'neutral' : 'good'}`;
  pill.textContent = bad.length ? `Latest window: disparity for ${bad.join(', ')}`
    : open.length ? `Latest window: no verdict for ${open.join(', ')} (interval spans the tolerance, or too few rows)` : 'Latest window: within tolerance';
  document.getElementById('fair-sub').textContent = `${FAIR_METRICS[metric]} of each group against its reference, v${report.model_version}, selected = score > ${report.threshold}. Bands: ${Math.round((report.policy?.confidence ?? 0.95) * 100)} % bootstrap intervals; red points: the interval is beyond the tolerance.`;
}
