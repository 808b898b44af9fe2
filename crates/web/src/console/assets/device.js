// A device's page: identity, security posture, its telemetry over time (one chart per
// numeric reading), its alerts and the commands sent to it.

import { h, clear, route, fmtTime, ago, badge, facts, table, notify } from './dom.js';
import { api, enc } from './api.js';
import { lineChart } from './chart.js';

export function render(main, params, ctx) {
  const id = params[0] || '';
  const box = h('section', { id: 'device' }, h('p.muted', null, 'Loading…'));
  main.appendChild(box);
  let stopped = false;
  async function load() {
    let data;
    try { data = await api(`/api/v1/console/devices/${enc(id)}`); } catch (err) { clear(box).appendChild(h('p.error', null, err.message)); return; }
    if (stopped) return;
    const d = data.device, p = data.posture;
    const creds = d.credentials.map((c) => (c.type === 'certificate' ? `certificate ${String(c.sha256).slice(0, 16)}…` : 'secret (hash only)')).join(', ') || 'none';
    const charts = h('div.charts', { id: 'telemetry' });
    clear(box).appendChild(h('div', null,
      h('div.view-head', null, h('h2', { id: 'device-id' }, d.id), badge(d.status, d.status),
        h('a', { href: '#/map' }, 'back to the map')),
      h('div.cols', null,
        h('div.card', null, h('h3', null, 'Identity'), facts([
          ['Sector', d.sector], ['Class', d.class], ['Zone', d.zone], ['Owner', d.owner],
          ['Vendor', d.vendor], ['Model', d.model], ['Firmware', d.firmware],
          ['Location', d.location ? `${d.location.lat}, ${d.location.lon}` : '—'],
          ['Registered', fmtTime(d.created_at)],
        ])),
        h('div.card', null, h('h3', null, 'Posture'), facts([
          ['Status', badge(p.status, p.status)],
          ['Credentials', creds],
          ['Unique credential', p.credentials > 0 ? 'yes (per-device)' : 'none registered'],
          ['Certificate identity', p.certificates > 0 ? 'yes' : 'no (shared-secret login)'],
          ['Firmware', p.firmware],
          ['Last heard', p.last_event ? `${fmtTime(p.last_event)} (${ago(p.last_event)})` : 'never'],
          ['Alerts not acknowledged', String(p.open_alerts)],
        ]))),
      h('h3', null, 'Telemetry'), charts,
      h('h3', null, 'Alerts'),
      table([
        ['Time', (a) => fmtTime(a.last_ts || a.ts)], ['Severity', (a) => badge(a.severity, a.severity)],
        ['Rule', (a) => h('span.mono', null, a.rule)], ['What', (a) => a.title], ['Count', (a) => String(a.count)],
        ['State', (a) => (a.ack ? `acknowledged by ${a.ack.by}` : 'open')],
      ], data.alerts, { empty: 'No alerts for this device.' }),
      h('h3', null, 'Commands'),
      table([
        ['Command', (c) => c.id], ['Action', (c) => c.action], ['State', (c) => badge(c.state, c.state)],
        ['By', (c) => c.requested_by], ['Approved by', (c) => (c.approvals || []).map((a) => a.by).join(', ') || '—'],
        ['Created', (c) => fmtTime(c.created_at)],
      ], data.commands, { empty: 'No commands to this device.' })));
    drawTelemetry(charts, data.telemetry);
  }
  function drawTelemetry(el, events) {
    const series = new Map();
    for (const e of events) {
      const t = new Date(e.ts).getTime();
      for (const r of e.readings || []) {
        if (typeof r.value !== 'number' || !Number.isFinite(r.value)) continue;
        const key = r.unit ? `${r.name} (${r.unit})` : r.name;
        if (!series.has(key)) { if (series.size >= 8) continue; series.set(key, []); }
        series.get(key).push([t, r.value]);
      }
    }
    if (!series.size) { el.appendChild(h('p.muted', null, 'No numeric telemetry stored for this device.')); return; }
    for (const [name, points] of series) {
      points.sort((a, b) => a[0] - b[0]);
      const canvas = h('canvas.chart', { width: 560, height: 180, 'aria-label': `telemetry ${name}` });
      el.appendChild(h('figure', null, canvas, h('figcaption', null, name, ` · ${points.length} readings`)));
      lineChart(canvas, [{ name, points }]);
    }
  }
  const onAlert = (e) => { if (e.detail.device_id === id) { clearTimeout(onAlert.t); onAlert.t = setTimeout(load, 1000); } };
  ctx.live.addEventListener('alert', onAlert);
  load().catch((err) => notify(err.message, 'error'));
  return () => { stopped = true; clearTimeout(onAlert.t); ctx.live.removeEventListener('alert', onAlert); };
}
