// Commands through the gateway: the approval queue (a second, different person approves
// the exact payload, by its SHA-256), the recent commands, and a form to send one.

import { h, clear, route, fmtTime, badge, table, field, notify, facts } from './dom.js';
import { api, enc } from './api.js';

export function render(main) {
  const queue = h('div', { id: 'approval-queue' });
  const recent = h('div', { id: 'command-list' });
  const detail = h('div', { id: 'command-detail' });
  // The recent commands, paged on the server (newest first, `before` the last one's time).
  let before = null;
  const more = h('button', { disabled: true, onclick: () => older() }, 'Older commands');
  const devices = h('input', { name: 'devices', placeholder: 'valve-0003, valve-0004', required: true });
  const action = h('input', { name: 'action', placeholder: 'close', required: true });
  const paramsInput = h('input', { name: 'params', placeholder: 'key=value, key=value' });
  const reason = h('input', { name: 'reason', placeholder: 'why' });
  const advisory = h('input', { name: 'advisory', placeholder: 'advisory id (siren activations)' });
  main.appendChild(h('section', null,
    h('div.view-head', null, h('h2', null, 'Commands')),
    h('h3', null, 'Waiting for approval'),
    h('p.muted', null, 'Safety-critical commands run only when a second, different person approves the exact payload shown here.'),
    queue,
    h('h3', null, 'Send a command'),
    h('form.filters', { id: 'command-form', onsubmit: send },
      field('Devices', devices), field('Action', action), field('Parameters', paramsInput), field('Reason', reason), field('Advisory', advisory),
      h('button.primary', { type: 'submit' }, 'Send')),
    detail,
    h('h3', null, 'Recent commands'),
    recent, h('div.pager', null, more)));

  function payload(c) {
    return JSON.stringify({ devices: c.devices, action: c.action, params: c.params || {}, advisory: c.advisory || undefined });
  }

  async function load() {
    try {
      const pending = await api('/api/v1/commands', { query: { state: 'pending_approval', limit: 100 } });
      clear(queue).appendChild(table([
        ['Command', (c) => h('a', { href: '#/commands', onclick: (e) => { e.preventDefault(); show(c.id); } }, c.id)],
        ['Payload', (c) => h('code', null, payload(c))],
        ['SHA-256', (c) => h('code.hash', null, c.payload_sha256)],
        ['Requested by', (c) => `${c.requested_by} (${c.requested_role || ''})`],
        ['Reason', (c) => c.reason || ''],
        ['Expires', (c) => fmtTime(c.approval_expires_at)],
        ['', (c) => h('button.small.primary', { 'data-approve': c.id, onclick: () => approve(c) }, 'Approve')],
      ], pending.items || [], { empty: 'Nothing waits for approval.' }));
      before = null;
      clear(recent);
      await older();
    } catch (err) { notify(err.message, 'error'); }
  }

  async function older() {
    more.disabled = true;
    try {
      const all = await api('/api/v1/commands', { query: { limit: 50, before } });
      const items = all.items || [];
      recent.appendChild(table([
        ['Command', (c) => h('a', { href: '#/commands', onclick: (e) => { e.preventDefault(); show(c.id); } }, c.id)],
        ['Devices', (c) => (c.devices || []).map((d, i) => [i ? ', ' : '', h('a', { href: route('devices', d) }, d)])],
        ['Action', (c) => c.action],
        ['State', (c) => badge(c.state, c.state)],
        ['By', (c) => c.requested_by],
        ['Approved by', (c) => (c.approvals || []).map((a) => a.by).join(', ') || '—'],
        ['Created', (c) => fmtTime(c.created_at)],
      ], items, { empty: before ? 'No older commands.' : 'No commands yet.' }));
      before = items.length === 50 ? items[items.length - 1].created_at : null;
      more.disabled = !before;
    } catch (err) { notify(err.message, 'error'); }
  }

  async function show(id) {
    try {
      const c = await api(`/api/v1/commands/${enc(id)}`);
      clear(detail).appendChild(h('div.card', null, h('h3', null, c.id),
        facts([
          ['Payload', h('code', null, payload(c))], ['SHA-256', h('code.hash', null, c.payload_sha256)],
          ['State', badge(c.state, c.state)], ['Outcome', c.outcome || c.refusal || '—'],
          ['Requested', `${c.requested_by}, ${fmtTime(c.created_at)}`],
          ['Approvals', (c.approvals || []).map((a) => `${a.by} (${a.role}) ${fmtTime(a.at)}`).join('; ') || '—'],
        ]),
        table([
          ['Device', (d) => d.device], ['Counter', (d) => String(d.counter ?? '')], ['State', (d) => badge(d.state, d.state)],
          ['Sent', (d) => fmtTime(d.sent_at)], ['Acknowledged', (d) => fmtTime(d.acked_at)], ['Error', (d) => d.error || ''],
        ], c.deliveries || [], { empty: 'No deliveries.' })));
    } catch (err) { notify(err.message, 'error'); }
  }

  async function approve(c) {
    try {
      const done = await api(`/api/v1/commands/${enc(c.id)}/approve`, { method: 'POST', body: { payload_sha256: c.payload_sha256 } });
      notify(`Command ${done.id} approved: ${done.state}.`);
      await load();
    } catch (err) { notify(err.message, 'error'); }
  }

  async function send(e) {
    e.preventDefault();
    const body = { devices: devices.value.split(',').map((s) => s.trim()).filter(Boolean), action: action.value.trim() };
    if (paramsInput.value.trim()) {
      body.params = {};
      for (const pair of paramsInput.value.split(',')) {
        const [k, ...v] = pair.split('=');
        const text = v.join('=').trim();
        body.params[k.trim()] = text !== '' && !Number.isNaN(Number(text)) ? Number(text) : text;
      }
    }
    if (reason.value.trim()) body.reason = reason.value.trim();
    if (advisory.value.trim()) body.advisory = advisory.value.trim();
    try {
      const c = await api('/api/v1/commands', { method: 'POST', body });
      notify(`Command ${c.id}: ${c.state}.`);
      await load();
    } catch (err) { notify(err.message, 'error'); }
  }
  load();
  return null;
}
