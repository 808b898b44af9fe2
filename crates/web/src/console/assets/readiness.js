// Readiness: the city index, each sector's scorecard by indicator, the trend over the
// stored history, and the changes that would raise the score most.

import { h, clear, fmtTime, table, notify, facts } from './dom.js';
import { api } from './api.js';
import { lineChart } from './chart.js';

const score = (v) => (v === null || v === undefined ? 'no data' : Number(v).toFixed(1));

export function render(main) {
  const box = h('section', { id: 'readiness' }, h('p.muted', null, 'Loading…'));
  main.appendChild(box);
  (async () => {
    let r;
    try { r = await api('/api/v1/readiness', { query: { history: 500 } }); } catch (err) { clear(box).appendChild(h('p.error', null, err.message)); return; }
    const names = new Map((r.indicators || []).map((i) => [i.id, i]));
    const ids = (r.city.values || []).map((v) => v.id);
    const trend = h('canvas.chart.wide', { id: 'readiness-trend', width: 900, height: 220 });
    clear(box).appendChild(h('div', null,
      h('div.view-head', null, h('h2', null, 'Readiness'), h('span.score', { id: 'city-score' }, score(r.city.score)),
        h('p.muted', null, `computed ${fmtTime(r.computed_at)} from ${r.city.devices} devices; incidents: ${r.incident_source}`)),
      r.trend ? facts([['Trend', `${r.trend.delta >= 0 ? '+' : ''}${r.trend.delta.toFixed(1)} since ${fmtTime(r.trend.since)} (${r.trend.per_day.toFixed(2)} a day)`]]) : null,
      h('h3', null, 'Trend'), trend,
      h('h3', null, 'What would raise it most'),
      table([['Indicator', (i) => (names.get(i.indicator) || {}).name || i.indicator], ['Gain', (i) => `+${i.gain.toFixed(1)}`], ['Change', (i) => i.change]], r.improvements || [], { empty: 'Nothing to suggest.' }),
      h('h3', null, 'Indicators per sector'),
      table([
        ['Indicator', (id) => h('span', { title: (names.get(id) || {}).formula || '' }, (names.get(id) || {}).name || id)],
        ['Weight', (id) => String(r.weights[id] ?? '')],
        ['City', (id) => cell(r.city, id)],
        ...(r.sectors || []).map((s) => [s.sector.replace('_', ' '), (id) => cell(s, id)]),
      ], ids),
      h('p', null, h('strong', null, 'Sector scores: '), (r.sectors || []).map((s) => `${s.sector.replace('_', ' ')} ${score(s.score)}`).join(' · ')),
      h('h3', null, 'Sources'),
      table([['Indicator', (i) => i.name], ['Source', (i) => i.source], ['Formula', (i) => i.formula]], r.indicators || [])));
    const points = (r.history || []).map((p) => [new Date(p.ts).getTime(), p.score]).filter(([, v]) => typeof v === 'number').sort((a, b) => a[0] - b[0]);
    if (typeof r.city.score === 'number') points.push([new Date(r.computed_at).getTime(), r.city.score]);
    lineChart(trend, [{ name: 'city readiness', points }], { min: 0, max: 100, empty: 'No history recorded yet.' });
  })().catch((err) => notify(err.message, 'error'));
  return null;
}

function cell(card, id) {
  const v = (card.values || []).find((x) => x.id === id);
  if (!v) return '—';
  // Indicator scores are 0-1; shown as percentages, with what they are made of on hover.
  return h('span', { title: v.no_data || v.detail || '' }, v.score === null || v.score === undefined ? 'no data' : `${Math.round(Number(v.score) * 100)}%`);
}
