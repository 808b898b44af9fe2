// Public advisories (CAP 1.2): the list by state, a draft form, and the lifecycle:
// approve (a second person, for Actual warnings), issue (signed, with a ready cancel)
// and cancel (one step).

import { h, clear, fmtTime, badge, table, field, select, notify, facts } from './dom.js';
import { api, enc } from './api.js';

const STATES = ['draft', 'approved', 'issued', 'cancelled', 'superseded', 'withdrawn'];

export function render(main) {
  const stateFilter = select('state', [['', 'any'], ...STATES.map((s) => [s, s])], '');
  const list = h('div', { id: 'advisory-list' });
  const detail = h('div', { id: 'advisory-detail' });
  // Pages come from the server: each continues after the last advisory of the one before.
  const PAGE = 50;
  let after = '';
  const prev = [];
  const newer = h('button', { id: 'advisories-newer', disabled: true }, 'Newer advisories');
  const older = h('button', { id: 'advisories-older', disabled: true }, 'Older advisories');
  const f = {
    status: select('status', ['Actual', 'Exercise', 'Test'], 'Actual'),
    event: h('input', { name: 'event', required: true, placeholder: 'Siren false alarm' }),
    category: select('category', ['Safety', 'Security', 'Met', 'Geo', 'Rescue', 'Fire', 'Health', 'Env', 'Transport', 'Infra', 'CBRNE', 'Other'], 'Safety'),
    urgency: select('urgency', ['Immediate', 'Expected', 'Future', 'Past', 'Unknown'], 'Immediate'),
    severity: select('severity', ['Extreme', 'Severe', 'Moderate', 'Minor', 'Unknown'], 'Minor'),
    certainty: select('certainty', ['Observed', 'Likely', 'Possible', 'Unlikely', 'Unknown'], 'Observed'),
    headline: h('input', { name: 'headline', required: true, placeholder: 'headline' }),
    description: h('textarea', { name: 'description', rows: 2 }),
    instruction: h('textarea', { name: 'instruction', rows: 2 }),
    area: h('input', { name: 'area', required: true, placeholder: 'area description' }),
  };
  main.appendChild(h('section', null,
    h('div.view-head', null, h('h2', null, 'Public advisories'), h('p.muted', null, 'CAP 1.2, published at /cap/feed.atom once issued.')),
    h('details', { id: 'draft-box' }, h('summary', null, 'Draft an advisory'),
      h('form.filters', { id: 'draft-form', onsubmit: draft },
        field('Status', f.status), field('Event', f.event), field('Category', f.category), field('Urgency', f.urgency),
        field('Severity', f.severity), field('Certainty', f.certainty), field('Headline', f.headline),
        field('Description', f.description), field('Instruction', f.instruction), field('Area', f.area),
        h('button.primary', { type: 'submit' }, 'Save draft'))),
    h('form.filters', { onsubmit: (e) => { e.preventDefault(); after = ''; prev.length = 0; load(); } }, field('State', stateFilter), h('button', { type: 'submit' }, 'Filter')),
    list, h('div.pager', null, newer, older), detail));

  async function load() {
    try {
      const items = (await api('/api/v1/advisories', { query: { state: stateFilter.value, limit: PAGE, after } })) || [];
      newer.disabled = prev.length === 0;
      older.disabled = items.length < PAGE;
      older.onclick = () => { prev.push(after); after = items[items.length - 1].id; load(); };
      newer.onclick = () => { after = prev.pop() || ''; load(); };
      clear(list).appendChild(table([
        ['Advisory', (a) => h('a', { href: '#/advisories', 'data-advisory': a.id, onclick: (e) => { e.preventDefault(); show(a); } }, a.id)],
        ['Headline', (a) => (a.content.texts[0] || {}).headline || ''],
        ['Status', (a) => a.status], ['Type', (a) => a.msg_type], ['State', (a) => badge(a.state, a.state)],
        ['Drafted', (a) => `${a.drafted_by}, ${fmtTime(a.drafted_at)}`],
        ['Approved', (a) => (a.approved_by ? `${a.approved_by}, ${fmtTime(a.approved_at)}` : '—')],
        ['Issued', (a) => (a.issued_by ? `${a.issued_by}, ${fmtTime(a.issued_at)}` : '—')],
        ['', (a) => actions(a)],
      ], items || [], { empty: 'No advisories.', rowAttrs: (a) => ({ 'data-row': a.id }) }));
    } catch (err) { notify(err.message, 'error'); }
  }

  function actions(a) {
    const out = [];
    if (a.state === 'draft' && a.msg_type !== 'Cancel') out.push(h('button.small', { 'data-act': 'approve', onclick: () => step(a, 'approve') }, 'Approve'));
    if ((a.state === 'approved' || (a.state === 'draft' && a.status !== 'Actual')) && a.msg_type !== 'Cancel') out.push(h('button.small.primary', { 'data-act': 'issue', onclick: () => step(a, 'issue') }, 'Issue'));
    if (a.state === 'issued' && a.cancel_id) out.push(h('button.small.danger', { 'data-act': 'cancel', onclick: () => step(a, 'cancel') }, 'Cancel'));
    return out;
  }

  async function step(a, verb) {
    if (verb === 'cancel' && !window.confirm(`Cancel advisory ${a.id} in public now?`)) return;
    try {
      const res = await api(`/api/v1/advisories/${enc(a.id)}/${verb}`, { method: 'POST', body: {} });
      notify(`Advisory ${a.id}: ${verb} done (${res.state}).`);
      await load();
      show(res);
    } catch (err) { notify(err.message, 'error'); }
  }

  function show(a) {
    const t = a.content.texts[0] || {};
    clear(detail).appendChild(h('div.card', null, h('h3', null, t.headline || a.id),
      facts([
        ['Event', a.content.event], ['Status / type', `${a.status} / ${a.msg_type}`], ['State', badge(a.state, a.state)],
        ['Urgency / severity / certainty', `${a.content.urgency} / ${a.content.severity} / ${a.content.certainty}`],
        ['Description', t.description || ''], ['Instruction', t.instruction || ''],
        ['Areas', (a.content.areas || []).map((x) => x.description).join('; ')],
        a.cap_identifier && ['CAP identifier', a.cap_identifier],
        a.cancel_id && ['Prepared cancel', a.cancel_id],
      ]),
      a.document ? h('details', null, h('summary', null, 'CAP document (as signed)'), h('pre.cap', null, a.document)) : null));
  }

  async function draft(e) {
    e.preventDefault();
    const body = {
      status: f.status.value,
      content: {
        event: f.event.value, categories: [f.category.value], urgency: f.urgency.value, severity: f.severity.value,
        certainty: f.certainty.value,
        texts: [{ language: 'en-US', headline: f.headline.value, description: f.description.value || undefined, instruction: f.instruction.value || undefined }],
        areas: [{ description: f.area.value }],
      },
    };
    try {
      const a = await api('/api/v1/advisories', { method: 'POST', body });
      notify(`Advisory ${a.id} drafted.`);
      e.target.reset();
      await load();
      show(a);
    } catch (err) { notify(err.message, 'error'); }
  }
  load();
  return null;
}
