// The console's shell: sign-in, navigation, the live alert stream, and the views.

import { h, clear, notify } from './dom.js';
import { api, setCsrf, whenSignedOut } from './api.js';
import * as map from './map.js';
import * as alerts from './alerts.js';
import * as incidents from './incidents.js';
import * as commands from './commands.js';
import * as device from './device.js';
import * as sharing from './sharing.js';
import * as advisories from './advisories.js';
import * as readiness from './readiness.js';
import * as audit from './audit.js';
import * as reports from './reports.js';

const VIEWS = [
  ['map', 'City map', map],
  ['alerts', 'Alerts', alerts],
  ['incidents', 'Incidents', incidents],
  ['commands', 'Commands', commands],
  ['sharing', 'Threat sharing', sharing],
  ['advisories', 'Advisories', advisories],
  ['reports', 'Reports', reports],
  ['readiness', 'Readiness', readiness],
  ['audit', 'Audit log', audit],
];
const HIDDEN = { devices: device };

const root = document.getElementById('app');
const ctx = {
  session: null,
  live: new EventTarget(),
  unseen: 0,
};
let cleanup = null;
let source = null;

function signedOut() {
  if (source) { source.close(); source = null; }
  ctx.session = null;
  showLogin('Your session ended; sign in again.');
}
whenSignedOut(signedOut);

function showLogin(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  const user = h('input', { name: 'user', autocomplete: 'username', required: true, id: 'login-user' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, id: 'login-password' });
  const error = h('p.error', { role: 'alert' }, message || '');
  const form = h('form.login', {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        const s = await api('/api/v1/console/login', { method: 'POST', body: { user: user.value, password: password.value } });
        start(s);
      } catch (err) {
        error.textContent = err.message;
      }
    },
  },
  h('h1', null, 'citysec'),
  h('p.muted', null, 'Security operations console'),
  h('label.field', null, h('span', null, 'User'), user),
  h('label.field', null, h('span', null, 'Password'), password),
  h('button.primary', { type: 'submit' }, 'Sign in'),
  error);
  clear(root).appendChild(h('main.login-page', null, form));
  user.focus();
}

function connectLive() {
  if (source) source.close();
  source = new EventSource('/api/v1/console/alerts/stream');
  source.addEventListener('alert', (e) => {
    let alert;
    try { alert = JSON.parse(e.data); } catch { return; }
    ctx.unseen += 1;
    updateCounter();
    ctx.live.dispatchEvent(new CustomEvent('alert', { detail: alert }));
  });
  source.addEventListener('lagged', () => ctx.live.dispatchEvent(new Event('lagged')));
  source.addEventListener('open', () => setLive(true));
  source.addEventListener('error', () => setLive(false));
}

function setLive(on) {
  const el = document.getElementById('live');
  if (el) { el.textContent = on ? 'live' : 'reconnecting'; el.dataset.on = on ? '1' : '0'; }
}

function updateCounter() {
  const el = document.getElementById('unseen');
  if (el) el.textContent = ctx.unseen ? String(ctx.unseen) : '';
}

function start(session) {
  ctx.session = session;
  setCsrf(session.csrf || null);
  const nav = h('nav.main', null, VIEWS.map(([id, title]) => h('a', { href: `#/${id}`, 'data-view': id }, title,
    id === 'alerts' ? h('span.count', { id: 'unseen' }) : null)));
  const shell = h('div.shell', null,
    h('header.top', null,
      h('a.brand', { href: '#/map' }, 'citysec'),
      nav,
      h('span.live', { id: 'live', 'data-on': '0' }, 'connecting'),
      h('span.who', null, session.user, ' · ', session.role),
      h('button.link', { id: 'logout', onclick: logout }, 'Sign out')),
    h('div.notice', { id: 'notice', role: 'status' }),
    h('main', { id: 'view' }));
  clear(root).appendChild(shell);
  connectLive();
  window.onhashchange = render;
  if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/alerts';
  else render();
}

async function logout() {
  try { await api('/api/v1/console/logout', { method: 'POST' }); } catch (err) { notify(err.message, 'error'); }
  if (source) { source.close(); source = null; }
  ctx.session = null;
  setCsrf(null);
  showLogin('Signed out.');
}

function render() {
  if (!ctx.session) return;
  if (cleanup) { cleanup(); cleanup = null; }
  const parts = location.hash.replace(/^#\/?/, '').split('/').map((p) => {
    try { return decodeURIComponent(p); } catch { return ''; }
  });
  const [name, ...params] = parts;
  const entry = VIEWS.find(([id]) => id === name);
  const view = entry ? entry[2] : HIDDEN[name];
  const main = document.getElementById('view');
  clear(main);
  for (const a of document.querySelectorAll('nav.main a')) {
    a.classList.toggle('active', a.dataset.view === name || (name === 'devices' && a.dataset.view === 'map'));
  }
  if (name === 'alerts') { ctx.unseen = 0; updateCounter(); }
  if (!view) { main.appendChild(h('p', null, 'No such page.')); return; }
  try {
    cleanup = view.render(main, params, ctx) || null;
  } catch (err) {
    main.appendChild(h('p.error', null, String(err.message || err)));
  }
}

(async () => {
  try {
    const s = await api('/api/v1/console/session');
    start(s);
  } catch {
    showLogin('');
  }
})();
