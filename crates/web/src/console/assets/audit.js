// The audit log in order (paged on the server by sequence number), each record's body
// as stored, and a check of the hash chain.

import { h, clear, table, notify } from './dom.js';
import { api } from './api.js';

export function render(main) {
  const list = h('div', { id: 'audit-list' });
  const result = h('p', { id: 'audit-verify' });
  let after = 0;
  const prev = [];
  const older = h('button', { disabled: true }, 'Previous page');
  const newer = h('button', null, 'Next page');
  main.appendChild(h('section', null,
    h('div.view-head', null, h('h2', null, 'Audit log'), h('p.muted', null, 'Append-only and hash-chained; every command, approval, refusal, login and response action.'),
      h('button', { onclick: verify }, 'Verify the chain')),
    result, list, h('div.pager', null, older, newer)));
  async function load() {
    try {
      const res = await api('/api/v1/audit', { query: { after, limit: 100 } });
      const items = (res.items || res || []).map((r) => {
        let body = {};
        try { body = JSON.parse(r.body); } catch { body = {}; }
        return { ...r, b: body };
      });
      clear(list).appendChild(table([
        ['#', (r) => String(r.seq)],
        ['Time', (r) => (r.b.ts ? new Date(r.b.ts).toLocaleString(undefined, { hour12: false }) : '')],
        ['Actor', (r) => r.b.actor || ''], ['Action', (r) => r.b.action || ''], ['Subject', (r) => r.b.subject || ''],
        ['Outcome', (r) => r.b.outcome || ''], ['Detail', (r) => h('code', null, JSON.stringify(r.b.detail ?? null))],
        ['Hash', (r) => h('code.hash', null, String(r.hash).slice(0, 12))],
      ], items, { empty: 'No records on this page.' }));
      newer.disabled = items.length < 100;
      older.disabled = !prev.length;
      newer.onclick = () => { prev.push(after); after = items[items.length - 1].seq; load(); };
      older.onclick = () => { after = prev.pop() || 0; load(); };
    } catch (err) { clear(list).appendChild(h('p.error', null, err.message)); }
  }
  async function verify() {
    try {
      const r = await api('/api/v1/audit/verify');
      result.textContent = JSON.stringify(r);
    } catch (err) { notify(err.message, 'error'); }
  }
  load();
  return null;
}
