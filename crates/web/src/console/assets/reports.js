// What residents reported (anonymous, rate-limited at the intake): newest first, paged on
// the server. The text is a stranger's: it is only ever shown as text.

import { h, fmtTime, table, notify } from './dom.js';
import { api } from './api.js';

export function render(main) {
  const list = h('div', { id: 'report-list' });
  const more = h('button', { disabled: true }, 'Older reports');
  let before = null;
  main.appendChild(h('section', null,
    h('div.view-head', null, h('h2', null, 'Citizen reports'), h('p.muted', null, 'From the public form at /report; detection correlates siren reports with the sirens.')),
    list, h('div.pager', null, more)));
  async function page() {
    more.disabled = true;
    try {
      const res = await api('/api/v1/console/reports', { query: { before, limit: 50 } });
      list.appendChild(table([
        ['Time', (r) => fmtTime(r.ts)],
        ['Category', (r) => String(r.category).replaceAll('_', ' ')],
        ['Where', (r) => (r.location ? `${r.location.lat}, ${r.location.lon}` : '—')],
        ['Text', (r) => h('span.report-text', null, r.text)],
      ], res.items || [], { empty: before ? 'No older reports.' : 'No reports yet.' }));
      before = res.next_before;
      more.disabled = !before;
    } catch (err) { notify(err.message, 'error'); }
  }
  more.addEventListener('click', page);
  page();
  return null;
}
