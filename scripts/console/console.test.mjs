// The console in a real browser (Debian's Chromium, driven by playwright-core) against a
// running `citysec demo` on free ports with a fresh data directory. Screenshots go to
// target/console-test/. Any failure fails the test command.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startCitysec, launchBrowser, signIn, artefacts, PASSWORD } from './demo.mjs';

let city;
let browser;
let ada; // operator
let sue; // supervisor
const shot = (page, name) => page.screenshot({ path: path.join(artefacts, `${name}.png`), fullPage: true });
const INDICATOR_IP = '198.51.100.77';

before(async () => {
  city = await startCitysec({ args: ['--devices', '300', '--seed', '3', '--catalogue', 'false'] });
  // The demo registers its city right after it starts listening: wait for all of it.
  for (let i = 0; ; i++) {
    const all = await city.api('GET', '/api/v1/devices?limit=1000');
    if (all.items.length >= 300) break;
    if (i > 240) throw new Error('the demo city did not register');
    await new Promise((r) => setTimeout(r, 500));
  }
  await city.addUser('ada', 'operator');
  await city.addUser('sue', 'supervisor');
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (city) await city.stop();
});

test('sign-in sets an HttpOnly, SameSite=Strict session cookie; a wrong password is refused', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(city.base + '/');
  await page.fill('#login-user', 'ada');
  await page.fill('#login-password', 'not-the-password');
  await page.click('form.login button[type=submit]');
  await page.waitForFunction(() => document.querySelector('form.login .error').textContent.length > 0);
  assert.match(await page.textContent('form.login .error'), /wrong user name or password/);
  await context.close();

  ada = await signIn(browser, city.base, 'ada');
  const cookies = await ada.context().cookies();
  const session = cookies.find((c) => c.name === 'citysec_session');
  assert.ok(session, 'a session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(session.path, '/');
  assert.equal(await ada.evaluate(() => document.cookie.includes('citysec_session')), false, 'scripts cannot read the session');
  assert.match(await ada.textContent('header.top .who'), /ada · operator/);
  // The page's policy forbids inline script and style and framing.
  const res = await fetch(city.base + '/');
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
});

test('a state-changing request with the cookie but without the CSRF token is refused', { timeout: 30_000 }, async () => {
  const outcome = await ada.evaluate(async () => {
    const res = await fetch('/api/v1/console/alerts/x/ack', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    return { status: res.status, body: await res.text() };
  });
  assert.equal(outcome.status, 403);
  assert.match(outcome.body, /csrf/i);
  // Machines keep their bearer tokens and need no CSRF token.
  const me = await city.api('GET', '/api/v1/console/session');
  assert.equal(me.user, 'admin');
  assert.equal(me.csrf, undefined);
});

test('an alert appears in the open console without a reload', { timeout: 90_000 }, async () => {
  await ada.goto(city.base + '/#/alerts');
  await ada.waitForSelector('#alert-rows');
  await ada.evaluate(() => {
    window.__marker = 'same page';
    window.__seen = {};
    new MutationObserver(() => {
      for (const tr of document.querySelectorAll('#alert-rows tr[data-alert]')) {
        if (!window.__seen[tr.dataset.alert]) window.__seen[tr.dataset.alert] = { at: Date.now(), text: tr.textContent };
      }
    }).observe(document.getElementById('alert-rows'), { childList: true });
  });
  await ada.waitForFunction(() => document.getElementById('live').dataset.on === '1');
  const indicator = {
    type: 'indicator', spec_version: '2.1', id: 'indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f',
    created: '2026-12-01T00:00:00.000Z', modified: '2026-12-01T00:00:00.000Z', name: 'console test C2',
    pattern: `[ipv4-addr:value = '${INDICATOR_IP}']`, pattern_type: 'stix', valid_from: '2026-12-01T00:00:00Z',
    indicator_types: ['malicious-activity'],
  };
  await city.api('POST', '/api/v1/indicators', indicator);
  const now = new Date().toISOString();
  const sent = Date.now();
  const res = await fetch(city.base + '/api/v1/flows', {
    method: 'POST',
    headers: { Authorization: `Bearer ${city.token}`, 'Content-Type': 'application/x-ndjson' },
    body: JSON.stringify({ src: '10.250.0.9', dst: INDICATOR_IP, src_port: 40001, dst_port: 443, protocol: 6, bytes: 900, packets: 6, start: now, end: now }) + '\n',
  });
  assert.equal(res.status, 200, await res.text());
  const handle = await ada.waitForFunction(() => Object.values(window.__seen).find((s) => s.text.includes('intel.indicator')), null, { timeout: 30_000 });
  const seen = await handle.jsonValue();
  assert.equal(await ada.evaluate(() => window.__marker), 'same page', 'the alert came without a reload');
  console.log(`alert on screen ${seen.at - sent} ms after the flow was posted`);
  await shot(ada, 'alerts-live');
});

test('the alert is acknowledged (audited), learned, muted and filtered in the queue', { timeout: 30_000 }, async () => {
  const row = ada.locator('#alert-rows tr', { hasText: 'intel.indicator' }).first();
  await row.locator('button[data-act=ack]').click();
  await ada.waitForSelector('#alert-rows tr:has-text("acknowledged by ada")');
  const audit = await city.api('GET', '/api/v1/audit?limit=1000');
  assert.ok(audit.items.some((r) => JSON.parse(r.body).action === 'alert.ack'), 'audit has alert.ack');
  // Learn it: what the rule saw for this key is normal from now on (one prompt: why).
  ada.once('dialog', (d) => d.accept('console test: sanctioned scanner'));
  await row.locator('button[data-act=learn]').click();
  await ada.waitForFunction(() => /Learned/.test(document.getElementById('notice').textContent));
  const learned = (await city.api('GET', '/api/v1/suppressions')).suppressions;
  assert.ok(learned.some((x) => x.rule === 'intel.indicator' && x.kind === 'learned' && x.actor === 'ada' && x.reason === 'console test: sanctioned scanner'), JSON.stringify(learned));
  // Mute it for an hour instead (two prompts: how long, and why).
  const answers = ['1', 'console test: known scanner'];
  const onDialog = (d) => d.accept(answers.shift());
  ada.on('dialog', onDialog);
  await row.locator('button[data-act=mute]').click();
  await ada.waitForFunction(() => /Muted/.test(document.getElementById('notice').textContent));
  ada.off('dialog', onDialog);
  const suppressions = await city.api('GET', '/api/v1/suppressions');
  const list = suppressions.suppressions;
  assert.ok(list.some((x) => x.rule === 'intel.indicator' && x.kind === 'muted' && x.actor === 'ada' && x.reason === 'console test: known scanner'), JSON.stringify(suppressions));
  // The filter shows only what is not acknowledged.
  await ada.selectOption('select[name=state]', 'open');
  await ada.click('form.filters button[type=submit]');
  await ada.waitForFunction(() => !document.querySelector('#alert-rows').textContent.includes('acknowledged by ada'));
});

test('an incident opens with its alerts, actions and timeline; a note joins the timeline', { timeout: 60_000 }, async () => {
  await ada.goto(city.base + '/#/incidents');
  const link = ada.locator('a[data-incident]').first();
  await link.waitFor({ timeout: 30_000 });
  await link.click();
  await ada.waitForSelector('#timeline li');
  await ada.locator('button[data-evidence]').first().click();
  await ada.waitForSelector('[data-alert-evidence] ul.evidence li');
  await ada.fill('textarea[name=note]', 'console test: looked at it');
  await ada.click('form.inline:has(textarea[name=note]) button[type=submit]');
  await ada.waitForSelector('#timeline li:has-text("console test: looked at it")');
  await shot(ada, 'incident');
});

test('a safety-critical command waits for a second person, who approves it in the console', { timeout: 90_000 }, async () => {
  const valves = await city.api('GET', '/api/v1/devices?class=valve&limit=1');
  const valve = valves.items[0].id;
  await ada.goto(city.base + '/#/commands');
  await ada.waitForSelector('#command-form');
  await ada.fill('#command-form input[name=devices]', valve);
  await ada.fill('#command-form input[name=action]', 'close');
  await ada.fill('#command-form input[name=reason]', 'console test: leak');
  await ada.click('#command-form button[type=submit]');
  const approve = ada.locator('#approval-queue button[data-approve]').first();
  await approve.waitFor();
  const id = await approve.getAttribute('data-approve');
  // The requester cannot approve their own command.
  await approve.click();
  await ada.waitForFunction(() => /different|second|own/i.test(document.getElementById('notice').textContent));
  assert.equal((await city.api('GET', `/api/v1/commands/${id}`)).state, 'pending_approval');

  sue = await signIn(browser, city.base, 'sue');
  await sue.goto(city.base + '/#/commands');
  await sue.locator(`#approval-queue button[data-approve="${id}"]`).click();
  await sue.waitForFunction(() => /approved/.test(document.getElementById('notice').textContent));
  const command = await city.api('GET', `/api/v1/commands/${id}`);
  assert.notEqual(command.state, 'pending_approval');
  assert.ok(command.approvals.some((a) => a.by === 'sue'), 'sue approved it');
  await shot(sue, 'command-approved');
});

test('an advisory is drafted, approved by a second person, issued and cancelled', { timeout: 60_000 }, async () => {
  await ada.goto(city.base + '/#/advisories');
  await ada.click('#draft-box summary');
  await ada.fill('#draft-form input[name=event]', 'Siren test');
  await ada.fill('#draft-form input[name=headline]', 'Console test: the sirens you heard were not a warning');
  await ada.fill('#draft-form input[name=area]', 'Central district');
  await ada.click('#draft-form button[type=submit]');
  await ada.waitForFunction(() => /drafted/.test(document.getElementById('notice').textContent));
  const id = (await ada.textContent('#notice')).match(/Advisory (\S+) drafted/)[1];

  await sue.goto(city.base + '/#/advisories');
  const row = sue.locator(`tr[data-row="${id}"]`);
  await row.locator('button[data-act=approve]').click();
  await row.locator('button[data-act=issue]').click();
  sue.once('dialog', (d) => d.accept());
  await row.locator('button[data-act=cancel]').click();
  await sue.waitForFunction(() => /cancel done/.test(document.getElementById('notice').textContent));
  const advisory = await city.api('GET', `/api/v1/advisories/${id}`);
  assert.equal(advisory.state, 'cancelled');
  assert.equal(advisory.approved_by, 'sue');
  const feed = await (await fetch(city.base + '/cap/feed.atom')).text();
  assert.match(feed, /Cancel/);
  await shot(sue, 'advisory-cancelled');
});

test('script planted in device fields and citizen reports is shown as text and never runs', { timeout: 90_000 }, async () => {
  const payloads = [
    '<img src=x onerror="window.__xss.push(1)">',
    '<script>window.__xss.push(2)</script>',
    '"><svg onload=window.__xss.push(3)>',
    "javascript:window.__xss.push(4)",
  ];
  await city.api('POST', '/api/v1/devices', {
    id: 'camera-xss-1', class: 'camera', zone: 'ps-field', owner: payloads[0], vendor: payloads[1], model: payloads[2],
    firmware: payloads[3], location: { lat: 52.37, lon: 4.9 }, generate_secret: true,
  });
  const report = await fetch(city.base + '/api/v1/reports', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ category: 'siren_no_storm', text: `siren at night ${payloads[0]} ${payloads[1]}`, location: { lat: 52.37, lon: 4.9 } }),
  });
  assert.equal(report.status, 202, await report.text());

  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__xss = [];
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));
  });
  const page = await context.newPage();
  let dialogs = 0;
  page.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
  await page.goto(city.base + '/');
  await page.fill('#login-user', 'ada');
  await page.fill('#login-password', PASSWORD);
  await page.click('form.login button[type=submit]');
  await page.waitForSelector('header.top .who');
  const check = async (where) => {
    const state = await page.evaluate(() => ({
      xss: window.__xss, violations: window.__violations,
      injected: document.querySelectorAll('main img, main svg, main script, main iframe, [onerror], [onload]').length,
    }));
    assert.deepEqual(state.xss, [], `${where}: no payload ran`);
    assert.deepEqual(state.violations, [], `${where}: nothing even tried to run inline`);
    assert.equal(state.injected, 0, `${where}: no element was injected`);
    assert.equal(dialogs, 0);
  };
  await page.goto(city.base + '/#/devices/camera-xss-1');
  await page.waitForSelector('#device dl.facts');
  const text = await page.textContent('#device');
  for (const p of payloads) assert.ok(text.includes(p), `device page shows ${p} as text`);
  await check('device page');
  await shot(page, 'xss-device');
  await page.goto(city.base + '/#/reports');
  await page.waitForSelector('#report-list .report-text');
  assert.ok((await page.textContent('#report-list')).includes(payloads[1]));
  await check('reports');
  await shot(page, 'xss-reports');
  await page.goto(city.base + '/#/map');
  await page.waitForSelector('#map-canvas[data-ready="1"]');
  await check('map');
  await context.close();
});

test('every view loads without a script error, and the map places every device', { timeout: 90_000 }, async () => {
  for (const view of ['map', 'alerts', 'incidents', 'commands', 'sharing', 'advisories', 'reports', 'readiness', 'audit']) {
    await sue.evaluate((v) => { location.hash = `#/${v}`; }, view);
    await sue.waitForSelector(`nav.main a.active[data-view="${view}"]`);
    await sue.waitForSelector('#view > section');
    await sue.waitForTimeout(500);
    await shot(sue, `view-${view}`);
  }
  // A device that sent telemetry has a chart of it.
  const recent = await city.api('GET', '/api/v1/events?kind=telemetry&limit=20');
  const numeric = recent.items.find((e) => e.device_id && (e.readings || []).some((r) => typeof r.value === 'number'));
  assert.ok(numeric, 'the simulated city sends numeric telemetry');
  await sue.evaluate((id) => { location.hash = `#/devices/${encodeURIComponent(id)}`; }, numeric.device_id);
  await sue.waitForSelector('#telemetry canvas.chart');
  assert.match(await sue.textContent('#telemetry'), /readings/);
  await shot(sue, 'device-telemetry');
  assert.deepEqual(sue.errors, []);
  assert.deepEqual(ada.errors, []);
  await sue.goto(`${city.base}/#/map`);
  await sue.waitForSelector('#map-canvas[data-ready="1"]');
  const placed = Number(await sue.getAttribute('#map-canvas', 'data-devices'));
  let total = 0;
  let after = '';
  for (;;) {
    const page = await city.api('GET', `/api/v1/devices?limit=1000${after ? `&after=${after}` : ''}`);
    total += page.items.filter((d) => d.location).length;
    if (!page.next) break;
    after = page.next;
  }
  assert.equal(placed, total);
});

test('signing out ends the session on the server', { timeout: 30_000 }, async () => {
  const cookies = await ada.context().cookies();
  const session = cookies.find((c) => c.name === 'citysec_session').value;
  await ada.click('#logout');
  await ada.waitForSelector('form.login');
  const res = await fetch(city.base + '/api/v1/console/session', { headers: { Cookie: `citysec_session=${session}` } });
  assert.equal(res.status, 401);
});
