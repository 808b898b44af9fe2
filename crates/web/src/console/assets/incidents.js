// Incidents: the list (paged on the server, filtered by state and severity) and one
// incident's story: its alerts and evidence, response actions (request, approve,
// reject), state changes, owner, notes and the whole timeline.

import { h, clear, route, fmtTime, badge, facts, table, field, select, notify } from './dom.js';
import { api, enc } from './api.js';

const STATES = ['new', 'triaged', 'contained', 'resolved', 'closed'];
const ACTIONS = ['quarantine', 'revoke_credentials', 'rotate_credentials', 'rate_limit', 'silence_siren', 'release'];

export function render(main, params, ctx) {
  if (params[0]) return renderOne(main, params[0], ctx);
  const state = select('state', [['', 'any'], ...STATES.map((s) => [s, s])], '');
  const severity = select('severity', [['', 'any'], 'info', 'low', 'medium', 'high', 'critical'], '');
  const list = h('div', { id: 'incident-list' });
  const more = h('button', { disabled: true }, 'Older incidents');
  let before = null;
  main.appendChild(h('section', null,
    h('div.view-head', null, h('h2', null, 'Incidents')),
    h('form.filters', { onsubmit: (e) => { e.preventDefault(); before = null; clear(list); page(); } },
      field('State', state), field('Severity', severity), h('button.primary', { type: 'submit' }, 'Filter')),
    list, h('div.pager', null, more)));
  async function page() {
    more.disabled = true;
    try {
      const res = await api('/api/v1/incidents', { query: { state: state.value, severity: severity.value, before, limit: 50 } });
      const items = res.items || [];
      list.appendChild(table([
        ['Incident', (i) => h('a', { href: route('incidents', i.id), 'data-incident': i.id }, i.id)],
        ['Title', (i) => i.title],
        ['Severity', (i) => badge(i.severity, i.severity)],
        ['State', (i) => badge(i.state, i.state)],
        ['Owner', (i) => i.owner || '—'],
        ['Alerts', (i) => String(Array.isArray(i.alerts) ? i.alerts.length : i.alerts)],
        ['Pending actions', (i) => String(i.pending_actions ?? 0)],
        ['Devices', (i) => (i.devices || []).slice(0, 3).join(', ') + ((i.devices || []).length > 3 ? '…' : '')],
        ['First alert', (i) => fmtTime(i.times && i.times.first_alert)],
      ], items, { empty: 'No incidents match.' }));
      before = res.next || null;
      more.disabled = !before;
    } catch (err) { notify(err.message, 'error'); }
  }
  more.addEventListener('click', page);
  page();
  return null;
}

function renderOne(main, id, ctx) {
  const box = h('section', { id: 'incident' }, h('p.muted', null, 'Loading…'));
  main.appendChild(box);
  let stopped = false;
  async function load() {
    let inc;
    try { inc = await api(`/api/v1/incidents/${enc(id)}`); } catch (err) { clear(box).appendChild(h('p.error', null, err.message)); return; }
    if (stopped) return;
    const canMove = STATES.slice(STATES.indexOf(inc.state) + 1);
    const owner = h('input', { name: 'owner', value: inc.owner || '', placeholder: 'owner' });
    const note = h('textarea', { name: 'note', rows: 2, placeholder: 'a note for the timeline' });
    const kind = select('action', ACTIONS, 'quarantine');
    const devices = inc.devices || [];
    const target = select('device_id', devices.length ? devices : [['', 'no device']], devices[0] || '');
    clear(box).appendChild(h('div', null,
      h('div.view-head', null, h('h2', null, inc.id, ' · ', inc.title), badge(inc.severity, inc.severity), badge(inc.state, inc.state)),
      h('div.cols', null,
        h('div', null,
          facts([
            ['Owner', inc.owner || '—'],
            ['Devices', devices.length ? devices.map((d, i) => [i ? ', ' : '', h('a', { href: route('devices', d) }, d)]) : '—'],
            ['Zones', (inc.zones || []).join(', ') || '—'],
            ['Sources', (inc.sources || []).join(', ') || '—'],
            ['Indicators', (inc.indicators || []).join(', ') || '—'],
            ['First evidence', fmtTime(inc.times && inc.times.first_evidence)],
            ['First alert', fmtTime(inc.times && inc.times.first_alert)],
            ['Time to detect / acknowledge / contain / resolve', ['detect', 'acknowledge', 'contain', 'resolve'].map((k) => {
              const ms = inc.durations && inc.durations[`time_to_${k}_ms`];
              return ms != null ? `${(ms / 1000).toFixed(1)} s` : '—';
            }).join(' / ')],
          ]),
          h('div.buttons', null,
            canMove.map((s) => h('button', { 'data-state': s, onclick: () => patch({ state: s }) }, `Mark ${s}`))),
          h('form.inline', { onsubmit: (e) => { e.preventDefault(); patch({ owner: owner.value }); } }, owner, h('button', { type: 'submit' }, 'Set owner')),
          h('form.inline', { onsubmit: async (e) => { e.preventDefault(); if (!note.value.trim()) return; await post(`/api/v1/incidents/${enc(id)}/notes`, { text: note.value }); } }, note, h('button', { type: 'submit' }, 'Add note'))),
        h('div', null,
          h('h3', null, 'Response actions'),
          table([
            ['Action', (a) => a.id],
            ['Kind', (a) => a.kind],
            ['Device', (a) => h('a', { href: route('devices', a.device_id) }, a.device_id)],
            ['Mode', (a) => a.mode],
            ['Status', (a) => badge(a.status, a.status)],
            ['Requested', (a) => `${a.requested_by}, ${fmtTime(a.requested_at)}`],
            ['Decided', (a) => (a.decided_by ? `${a.decided_by}, ${fmtTime(a.decided_at)}` : '—')],
            ['Outcome', (a) => a.outcome || ''],
            ['', (a) => (a.status === 'pending' ? [
              h('button.small', { 'data-approve-action': a.id, onclick: () => post(`/api/v1/incidents/${enc(id)}/actions/${enc(a.id)}/approve`, {}) }, 'Approve'),
              h('button.small', { onclick: () => post(`/api/v1/incidents/${enc(id)}/actions/${enc(a.id)}/reject`, {}) }, 'Reject')] : null)],
          ], inc.actions || [], { empty: 'No response actions yet.' }),
          h('form.inline', { onsubmit: (e) => { e.preventDefault(); const b = { action: kind.value }; if (target.value) b.device_id = target.value; post(`/api/v1/incidents/${enc(id)}/actions`, b); } },
            kind, target, h('button', { type: 'submit' }, 'Request action')))),
      h('h3', null, 'Alerts and evidence'),
      table([
        ['Time', (a) => fmtTime(a.ts)],
        ['Severity', (a) => badge(a.severity, a.severity)],
        ['Rule', (a) => h('span.mono', null, a.rule)],
        ['What', (a) => a.title || ''],
        ['Device / source', (a) => (a.device_id ? h('a', { href: route('devices', a.device_id) }, a.device_id) : a.source || '—')],
        ['Count', (a) => String(a.count)],
        ['Why grouped', (a) => (a.correlation ? JSON.stringify(a.correlation) : '')],
        ['Evidence', (a) => h('button.small', { 'data-evidence': a.id, onclick: (e) => evidence(a.id, e.target) }, 'Show')],
      ], inc.alerts || []),
      h('div', { id: 'evidence' }),
      h('h3', null, 'Timeline'),
      h('ol.timeline', { id: 'timeline' }, (inc.timeline || []).map((t) => h('li', null,
        h('span.ts', null, fmtTime(t.ts)), ' ', h('strong', null, t.actor), ' ', h('span.badge', null, t.type), ' ',
        describe(t))))));
  }
  function describe(t) {
    const { ts, actor, type, ...rest } = t;
    if (type === 'note' && rest.text !== undefined) return rest.text;
    if (type === 'state_changed') return `${rest.from ?? ''} → ${rest.to ?? ''}`;
    return Object.entries(rest).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
  }
  // An alert's explanation and evidence, fetched when asked for.
  async function evidence(alertId, button) {
    const box = document.getElementById('evidence');
    try {
      const a = await api(`/api/v1/alerts/${enc(alertId)}`);
      clear(box).appendChild(h('div.card', { 'data-alert-evidence': a.id }, h('h4', null, a.title),
        h('p', null, a.explanation),
        h('ul.evidence', null, (a.evidence || []).map((e) => h('li.mono', null, JSON.stringify(e))))));
      if (button) button.textContent = 'Shown below';
    } catch (err) { notify(err.message, 'error'); }
  }
  async function patch(body) { await post(`/api/v1/incidents/${enc(id)}`, body, 'PATCH'); }
  async function post(path, body, method = 'POST') {
    try { await api(path, { method, body }); notify('Done.'); await load(); } catch (err) { notify(err.message, 'error'); }
  }
  const onAlert = () => { clearTimeout(onAlert.t); onAlert.t = setTimeout(load, 1500); };
  ctx.live.addEventListener('alert', onAlert);
  load();
  return () => { stopped = true; clearTimeout(onAlert.t); ctx.live.removeEventListener('alert', onAlert); };
}
