// The live alert queue: paged on the server, filtered by rule, device, least severity
// and acknowledgement; new alerts arrive over server-sent events and are put on top.
// Each alert can be acknowledged, learned (normal from now on) or muted.

import { h, clear, route, fmtTime, badge, field, select, notify, facts } from './dom.js';
import { api, enc } from './api.js';

const SEVERITIES = ['', 'info', 'low', 'medium', 'high', 'critical'];

export function render(main, params, ctx) {
  const filters = { rule: '', device_id: '', min_severity: '', state: 'all' };
  const rule = h('input', { name: 'rule', placeholder: 'e.g. auth.brute_force.device' });
  const deviceId = h('input', { name: 'device_id', placeholder: 'device id' });
  const severity = select('min_severity', SEVERITIES.map((s) => [s, s || 'any']), '');
  const state = select('state', [['all', 'all'], ['open', 'not acknowledged'], ['acked', 'acknowledged']], 'all');
  const body = h('tbody', { id: 'alert-rows' });
  const more = h('button', { id: 'alerts-more', disabled: true }, 'Older alerts');
  const detail = h('aside.detail', { id: 'alert-detail' });
  let next = null;
  const rows = new Map();

  main.appendChild(h('section.view-alerts', null,
    h('div.view-head', null, h('h2', null, 'Alert queue'),
      h('p.muted', null, 'Newest first; new alerts appear here as they are raised.')),
    h('form.filters', {
      onsubmit: (e) => {
        e.preventDefault();
        Object.assign(filters, { rule: rule.value.trim(), device_id: deviceId.value.trim(), min_severity: severity.value, state: state.value });
        reload();
      },
    }, field('Rule', rule), field('Device', deviceId), field('Least severity', severity), field('State', state),
    h('button.primary', { type: 'submit' }, 'Filter')),
    h('div.split', null,
      h('table.grid.alerts', null,
        h('thead', null, h('tr', null, ['Time', 'Severity', 'Rule', 'What', 'Device / source', 'Count', 'State', ''].map((t) => h('th', null, t)))),
        body),
      detail),
    h('div.pager', null, more)));

  function matches(a) {
    if (filters.rule && a.rule !== filters.rule) return false;
    if (filters.device_id && a.device_id !== filters.device_id) return false;
    if (filters.min_severity && SEVERITIES.indexOf(a.severity) < SEVERITIES.indexOf(filters.min_severity)) return false;
    if (filters.state === 'acked' && !a.ack) return false;
    return true;
  }

  function row(a, live) {
    const tr = h('tr', { 'data-alert': a.id, class: live ? 'fresh' : '' },
      h('td', null, fmtTime(a.last_ts || a.ts)),
      h('td', null, badge(a.severity, a.severity)),
      h('td.mono', null, a.rule),
      h('td', null, h('a', { href: '#/alerts', onclick: (e) => { e.preventDefault(); show(a); } }, a.title)),
      h('td', null, a.device_id ? h('a', { href: route('devices', a.device_id) }, a.device_id) : (a.source || a.zone || '—')),
      h('td.num', null, String(a.count)),
      h('td', null, a.ack ? h('span', { title: a.ack.note || '' }, `acknowledged by ${a.ack.by}`) : badge('open', 'open')),
      h('td.actions', null,
        a.ack ? null : h('button.small', { 'data-act': 'ack', onclick: () => ack(a) }, 'Acknowledge'),
        h('button.small', { 'data-act': 'learn', onclick: () => learn(a) }, 'Learn'),
        h('button.small', { 'data-act': 'mute', onclick: () => mute(a) }, 'Mute')));
    return tr;
  }

  function put(a, live) {
    const old = rows.get(a.id);
    if (old && old.ack && !a.ack) a.ack = old.ack;
    const tr = row(a, live);
    const existing = body.querySelector(`tr[data-alert="${CSS.escape(a.id)}"]`);
    if (existing) existing.remove();
    if (live) body.insertBefore(tr, body.firstChild);
    else body.appendChild(tr);
    rows.set(a.id, a);
    const empty = body.querySelector('td.empty');
    if (empty) empty.parentElement.remove();
  }

  async function reload() {
    clear(body); rows.clear(); next = null;
    await page();
  }

  async function page() {
    more.disabled = true;
    try {
      const res = await api('/api/v1/console/alerts', { query: { ...filters, before: next, limit: 50 } });
      for (const a of res.items) put(a, false);
      next = res.next_before;
      more.disabled = !next;
      if (!rows.size) body.appendChild(h('tr', null, h('td.empty', { colspan: 8 }, 'No alerts match.')));
    } catch (err) {
      notify(err.message, 'error');
    }
  }
  more.addEventListener('click', page);

  function show(a) {
    clear(detail).appendChild(h('div.card', null,
      h('h3', null, a.title),
      facts([
        ['Rule', a.rule], ['Key', a.key], ['Severity', badge(a.severity, a.severity)],
        ['First', fmtTime(a.ts)], ['Last', fmtTime(a.last_ts)], ['Count', String(a.count)],
        a.device_id && ['Device', h('a', { href: route('devices', a.device_id) }, a.device_id)],
        a.zone && ['Zone', a.zone], a.source && ['Source', a.source],
        a.ack && ['Acknowledged', `${a.ack.by}, ${fmtTime(a.ack.at)} ${a.ack.note || ''}`],
      ]),
      h('p', null, a.explanation),
      h('h4', null, 'Evidence'),
      h('ul.evidence', null, (a.evidence || []).map((e) => h('li.mono', null, JSON.stringify(e)))),
      h('div.buttons', null,
        h('button', { onclick: () => draftAdvisory(a) }, 'Draft a public advisory from this alert'))));
  }

  async function ack(a) {
    try {
      const updated = await api(`/api/v1/console/alerts/${enc(a.id)}/ack`, { method: 'POST', body: { note: '' } });
      put(updated, false);
      const tr = body.querySelector(`tr[data-alert="${CSS.escape(a.id)}"]`);
      if (tr) body.insertBefore(tr, body.firstChild);
      notify(`Alert acknowledged.`);
    } catch (err) { notify(err.message, 'error'); }
  }

  async function learn(a) {
    const reason = window.prompt(`Learn: what ${a.rule} saw for ${a.key} is normal from now on. Why?`, '');
    if (!reason) return;
    try {
      await api(`/api/v1/alerts/${enc(a.id)}/learn`, { method: 'POST', body: { reason } });
      notify('Learned: the rule stays quiet for this key.');
    } catch (err) { notify(err.message, 'error'); }
  }

  async function mute(a) {
    const hours = window.prompt(`Mute ${a.rule} for ${a.key}: for how many hours? (empty: until lifted)`, '24');
    if (hours === null) return;
    const reason = window.prompt('Why?', '');
    if (!reason) return;
    const bodyJson = { reason };
    if (hours.trim()) {
      const n = Number(hours);
      if (!(n > 0)) { notify('hours must be a positive number', 'error'); return; }
      bodyJson.duration_s = Math.round(n * 3600);
    }
    try {
      await api(`/api/v1/alerts/${enc(a.id)}/mute`, { method: 'POST', body: bodyJson });
      notify('Muted.');
    } catch (err) { notify(err.message, 'error'); }
  }

  async function draftAdvisory(a) {
    try {
      const adv = await api(`/api/v1/advisories/from-alert/${enc(a.id)}`, { method: 'POST', body: { status: 'Actual' } });
      notify(`Advisory ${adv.id} drafted.`);
      location.hash = '#/advisories';
    } catch (err) { notify(err.message, 'error'); }
  }

  const onAlert = (e) => { const a = e.detail; if (matches(a)) put(a, true); };
  const onLagged = () => reload();
  ctx.live.addEventListener('alert', onAlert);
  ctx.live.addEventListener('lagged', onLagged);
  reload();
  return () => {
    ctx.live.removeEventListener('alert', onAlert);
    ctx.live.removeEventListener('lagged', onLagged);
  };
}
