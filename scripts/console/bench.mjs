// Measures the console in Debian's Chromium against a running `citysec demo` (2,000
// simulated devices live over MQTT; for larger cities the rest are registered through
// the import API, placed in the same area): the time from navigation to the drawn map,
// the browser's memory (CDP Performance.getMetrics after a forced GC), the time of one
// full map redraw, the map summary's size and server time, and the time from posting a
// flow that matches an indicator to the alert's row appearing in the open alert queue.
//
//   node bench.mjs [--devices 2000,50000] [--runs 5] [--alerts 10]
//
// Prints one JSON object per city size.

import { createHash } from 'node:crypto';
import { startCitysec, launchBrowser, signIn } from './demo.mjs';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const sizes = (args.devices || '2000,50000').split(',').map(Number);
const runs = Number(args.runs || 5);
const alertRuns = Number(args.alerts || 10);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const round = (x) => Math.round(x * 10) / 10;

async function count(city) {
  let have = 0;
  for (let after = '', page; ; after = page.next) {
    page = await city.api('GET', `/api/v1/devices?limit=1000${after ? `&after=${after}` : ''}`);
    have += page.items.length;
    if (!page.next) break;
  }
  return have;
}

// The demo registers its city right after it starts listening: wait for all of it.
async function settled(city, devices) {
  const deadline = Date.now() + 180_000;
  while ((await count(city)) < devices) {
    if (Date.now() > deadline) throw new Error('the demo city did not register');
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function grow(city, total) {
  const first = await city.api('GET', '/api/v1/devices?limit=1000');
  const seeds = first.items.filter((d) => d.location);
  let lat0 = Infinity, lat1 = -Infinity, lon0 = Infinity, lon1 = -Infinity;
  for (const d of seeds) {
    lat0 = Math.min(lat0, d.location.lat); lat1 = Math.max(lat1, d.location.lat);
    lon0 = Math.min(lon0, d.location.lon); lon1 = Math.max(lon1, d.location.lon);
  }
  const have = await count(city);
  let made = 0;
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  while (have + made < total) {
    const batch = [];
    for (let i = 0; i < 10000 && have + made < total; i++, made++) {
      const like = seeds[made % seeds.length];
      batch.push({
        id: `bench-${String(made).padStart(6, '0')}`, class: like.class, zone: like.zone, owner: like.owner,
        vendor: like.vendor, model: like.model, firmware: like.firmware,
        location: { lat: lat0 + rnd() * (lat1 - lat0), lon: lon0 + rnd() * (lon1 - lon0) },
        cert_sha256: createHash('sha256').update(`bench-${made}`).digest('hex'),
      });
    }
    const res = await fetch(`${city.base}/api/v1/devices/import`, {
      method: 'POST', headers: { Authorization: `Bearer ${city.token}`, 'Content-Type': 'application/json' }, body: JSON.stringify(batch),
    });
    if (!res.ok) throw new Error(`import: ${res.status} ${await res.text()}`);
    const report = await res.json();
    if (report.errors && report.errors.length) throw new Error(`import: ${JSON.stringify(report.errors.slice(0, 3))}`);
  }
}

async function measure(size) {
  const city = await startCitysec({ name: `bench-${size}`, args: ['--devices', '2000', '--seed', '1', '--attacks', 'false'] });
  try {
    await city.addUser('bench', 'analyst');
    await settled(city, 2000);
    if (size > 2000) await grow(city, size);
    // The map summary from the server: a cold build, then the cached copy.
    const out = { devices: size };
    let t = performance.now();
    let res = await fetch(`${city.base}/api/v1/console/map`, { headers: { Authorization: `Bearer ${city.token}` } });
    const body = await res.text();
    out.map_summary_cold_ms = round(performance.now() - t);
    out.map_summary_bytes = body.length;
    out.devices_placed = JSON.parse(body).devices.id.length;
    t = performance.now();
    res = await fetch(`${city.base}/api/v1/console/map`, { headers: { Authorization: `Bearer ${city.token}` } });
    await res.text();
    out.map_summary_cached_ms = round(performance.now() - t);

    const browser = await launchBrowser();
    const page = await signIn(browser, city.base, 'bench');
    const loads = [];
    const heaps = [];
    const paints = [];
    for (let r = 0; r < runs; r++) {
      const p = await page.context().newPage();
      const cdp = await p.context().newCDPSession(p);
      await cdp.send('Performance.enable');
      await p.goto(`${city.base}/#/map`);
      await p.waitForSelector('#map-canvas[data-ready="1"]', { timeout: 120_000 });
      loads.push(await p.evaluate(() => performance.getEntriesByName('console-map-ready')[0].startTime));
      // Responsiveness: zoom in and out, reading each full redraw's time.
      const box = await p.locator('#map-canvas').boundingBox();
      await p.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      for (let i = 0; i < 6; i++) {
        await p.mouse.wheel(0, i < 3 ? -100 : 100);
        await p.waitForTimeout(50);
        paints.push(Number(await p.getAttribute('#map-canvas', 'data-paint-ms')));
      }
      await cdp.send('HeapProfiler.collectGarbage');
      const { metrics } = await cdp.send('Performance.getMetrics');
      const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
      heaps.push({ used: m.JSHeapUsedSize, total: m.JSHeapTotalSize, nodes: m.Nodes });
      await p.close();
    }
    out.page_load_to_map_ms = { median: round(median(loads)), min: round(Math.min(...loads)), max: round(Math.max(...loads)), runs };
    out.js_heap_used_mb = round(median(heaps.map((h) => h.used)) / 1048576);
    out.js_heap_total_mb = round(median(heaps.map((h) => h.total)) / 1048576);
    out.dom_nodes = median(heaps.map((h) => h.nodes));
    out.map_redraw_ms = { median: round(median(paints)), max: round(Math.max(...paints)) };

    // A new alert in the open console: post a flow that matches an indicator, watch the queue.
    // One indicator per run, so each flow raises a new alert (repeats of one fold into it).
    const ipOf = (i) => `198.51.100.${100 + i}`;
    const hex = (i) => i.toString(16).padStart(12, '0');
    await city.api('POST', '/api/v1/indicators', Array.from({ length: alertRuns }, (_, k) => ({
      type: 'indicator', spec_version: '2.1', id: `indicator--0b5c3c1e-3a51-4b2e-9d0e-${hex(k + 1)}`,
      created: '2026-12-01T00:00:00.000Z', modified: '2026-12-01T00:00:00.000Z', name: `bench C2 ${k + 1}`,
      pattern: `[ipv4-addr:value = '${ipOf(k + 1)}']`, pattern_type: 'stix', valid_from: '2026-12-01T00:00:00Z',
    })));
    await page.goto(`${city.base}/#/alerts`);
    await page.waitForSelector('#alert-rows');
    await page.waitForFunction(() => document.getElementById('live').dataset.on === '1');
    await page.evaluate(() => {
      window.__seen = {};
      new MutationObserver(() => {
        for (const tr of document.querySelectorAll('#alert-rows tr[data-alert]')) {
          const m = tr.textContent.match(/seen at 198\.51\.100\.(\d{3})/);
          if (m && !window.__seen[m[1]]) window.__seen[m[1]] = Date.now();
        }
      }).observe(document.getElementById('alert-rows'), { childList: true });
    });
    const latencies = [];
    for (let i = 1; i <= alertRuns; i++) {
      const now = new Date().toISOString();
      const sent = Date.now();
      const r = await fetch(`${city.base}/api/v1/flows`, {
        method: 'POST', headers: { Authorization: `Bearer ${city.token}`, 'Content-Type': 'application/x-ndjson' },
        body: JSON.stringify({ src: `10.251.0.${i}`, dst: ipOf(i), src_port: 40000 + i, dst_port: 443, protocol: 6, bytes: 500, packets: 4, start: now, end: now }) + '\n',
      });
      if (!r.ok) throw new Error(`flows: ${r.status}`);
      const seen = await (await page.waitForFunction((k) => window.__seen[k], String(100 + i), { timeout: 30_000 }).catch(async (err) => {
        const rows = await page.evaluate(() => [location.href, document.getElementById('live').textContent, Object.keys(window.__seen || {}), document.getElementById('alert-rows').textContent.slice(0, 600)]);
        throw new Error(`alert ${i} not seen: ${err.message} ${JSON.stringify(rows)}`);
      })).jsonValue();
      latencies.push(seen - sent);
      await page.waitForTimeout(300 + Math.floor(Math.random() * 200));
    }
    out.alert_to_screen_ms = { median: median(latencies), min: Math.min(...latencies), max: Math.max(...latencies), runs: alertRuns };
    await browser.close();
    return out;
  } finally {
    await city.stop();
  }
}

for (const size of sizes) {
  console.log(JSON.stringify(await measure(size)));
}
