// Threat sharing: partners and their clearance, collections and grants, partner feeds,
// the indicators detection holds, and which indicators were seen in the city.

import { h, clear, route, fmtTime, badge, table, notify, facts } from './dom.js';
import { api } from './api.js';

export function render(main) {
  const box = h('section', { id: 'sharing' }, h('p.muted', null, 'Loading…'));
  main.appendChild(box);
  (async () => {
    let s;
    try { s = await api('/api/v1/console/sharing'); } catch (err) { clear(box).appendChild(h('p.error', null, err.message)); return; }
    const c = s.config || { partners: [], collections: [], feeds: [] };
    clear(box).appendChild(h('div', null,
      h('div.view-head', null, h('h2', null, 'Threat sharing'), h('p.muted', null, 'STIX 2.1 over TAXII 2.1 at /taxii2/')),
      facts([
        ['TAXII server', c.enabled ? `on, API root /taxii2/${c.root}/` : 'off'],
        ['Unmarked objects count as', c.unmarked ? `TLP:${String(c.unmarked).toUpperCase()}` : '—'],
        ['Indicators matched live', String(s.indicators_loaded)],
        ['Written by the city', String(s.city_indicators)],
      ]),
      h('h3', null, 'Partners'),
      table([
        ['Partner', (p) => p.name], ['Clearance', (p) => badge('tlp', `TLP:${String(p.tlp).toUpperCase()}`)],
        ['Authenticates with', (p) => (p.auth || []).join(', ')],
      ], c.partners || [], { empty: 'No partners configured ([[taxii.partners]]).' }),
      h('h3', null, 'Collections'),
      table([
        ['Collection', (k) => k.title], ['Id', (k) => h('code', null, k.id)], ['Public', (k) => (k.public ? 'yes' : 'no')],
        ['Read', (k) => (k.read || []).join(', ') || '—'], ['Write', (k) => (k.write || []).join(', ') || '—'],
        ['City sharing', (k) => (k.sharing ? 'yes' : '')],
      ], c.collections || [], { empty: 'No collections configured ([[taxii.collections]]).' }),
      h('h3', null, 'Feeds received'),
      table([
        ['Feed', (f) => f.name], ['Server', (f) => f.api_root], ['Collection', (f) => h('code', null, f.collection)],
        ['Every', (f) => `${f.interval_s} s`], ['Last received', (f) => f.last_added || 'nothing yet'],
        ['Objects received', (f) => `${f.received ?? 0} (${f.received_30d ?? 0} in 30 days)`],
      ], c.feeds || [], { empty: 'No partner feeds configured ([[taxii.feeds]]).' }),
      h('h3', null, 'Indicators seen in the city'),
      table([
        ['Indicator', (x) => h('code', null, x.indicator)], ['What', (x) => x.title], ['Alerts', (x) => String(x.alerts)],
        ['Sightings', (x) => String(x.sightings)], ['Last seen', (x) => fmtTime(x.last_seen)],
        ['Devices', (x) => x.devices.map((d, i) => [i ? ', ' : '', h('a', { href: route('devices', d) }, d)])],
      ], s.hits || [], { empty: 'No indicator has matched yet.' })));
  })().catch((err) => notify(err.message, 'error'));
  return null;
}
