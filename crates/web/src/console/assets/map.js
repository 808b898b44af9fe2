// The city map: every placed device drawn on a canvas by its coordinates (no map tiles,
// nothing from the internet), filled by sector, marked by status and by the worst alert
// of the last day; zones drawn as their extents, conduits as lines between zones.
// The server sends columns; they become typed arrays once, so 50,000 devices redraw in
// a few milliseconds while panning and zooming.

import { h, clear, route, facts, badge } from './dom.js';
import { api } from './api.js';

export const SECTOR_COLOURS = {
  public_safety: '#e8743b',
  transport: '#19a979',
  energy: '#ed4a7b',
  water: '#5899da',
  environment: '#9fc54b',
  buildings: '#945ecf',
};
const SEVERITY_COLOURS = ['', '#8aa1b1', '#d9c33b', '#f0a030', '#e5483a', '#b0003a'];
const SEVERITIES = ['', 'info', 'low', 'medium', 'high', 'critical'];

// '#rrggbb' as one opaque pixel of an ImageData buffer (little-endian RGBA).
function packed(hex) {
  const v = parseInt(hex.slice(1), 16);
  return (0xff000000 | ((v & 0xff) << 16) | (v & 0xff00) | ((v >> 16) & 0xff)) >>> 0;
}

export function render(main, params, ctx) {
  const canvas = h('canvas.map', { id: 'map-canvas', width: 900, height: 600, tabindex: 0, 'aria-label': 'City map' });
  const info = h('aside.map-info', { id: 'map-info' }, h('p.muted', null, 'Select a device on the map.'));
  const legend = h('div.legend', { id: 'map-legend' });
  const stats = h('p.muted', { id: 'map-stats' }, 'Loading the map…');
  const wrap = h('div.map-wrap', null, canvas);
  main.appendChild(h('section.view-map', null,
    h('div.view-head', null, h('h2', null, 'City map'), stats,
      h('button', { onclick: () => { view.reset(); draw(); } }, 'Fit'),
      h('button', { onclick: () => load(true) }, 'Refresh')),
    h('div.map-layout', null, wrap, h('div.map-side', null, legend, info))));

  const state = { data: null, hidden: new Set(), onlyAlerting: false };
  const buffer = {};
  const view = {
    cx: 0, cy: 0, scale: 1,
    reset() {
      const d = state.data;
      if (!d || !d.n) { this.cx = 0; this.cy = 0; this.scale = 1; return; }
      const w = canvas.width, hh = canvas.height;
      this.cx = (d.minX + d.maxX) / 2; this.cy = (d.minY + d.maxY) / 2;
      const spanX = Math.max(d.maxX - d.minX, 1e-6), spanY = Math.max(d.maxY - d.minY, 1e-6);
      this.scale = 0.9 * Math.min(w / spanX, hh / spanY);
    },
  };
  let frame = 0;
  let stopped = false;

  function project(x, y) {
    return [(x - view.cx) * view.scale + canvas.width / 2, (view.cy - y) * view.scale + canvas.height / 2];
  }

  function resize() {
    const r = wrap.getBoundingClientRect();
    const w = Math.max(300, Math.floor(r.width)), hh = Math.max(300, Math.floor(window.innerHeight - r.top - 24));
    if (canvas.width !== w || canvas.height !== hh) { canvas.width = w; canvas.height = hh; }
  }

  function draw() {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; paint(); });
  }

  function paint() {
    const started = performance.now();
    paintDevices();
    // How long one full redraw took (the benchmark reads it; so can a curious analyst).
    canvas.dataset.paintMs = (performance.now() - started).toFixed(1);
  }

  function paintDevices() {
    const d = state.data;
    const g = canvas.getContext('2d');
    g.fillStyle = '#0f1c26';
    g.fillRect(0, 0, canvas.width, canvas.height);
    if (!d) return;
    // Zones: their extents and names.
    g.lineWidth = 1;
    g.font = '12px system-ui, sans-serif';
    for (const z of d.zones) {
      const [x0, y0] = project(z.x0, z.y1), [x1, y1] = project(z.x1, z.y0);
      if (z.server) {
        g.fillStyle = '#1f3b4f'; g.strokeStyle = 'rgba(127,211,255,0.7)';
        g.fillRect(x0 - 5, y0 - 5, 10, 10); g.strokeRect(x0 - 5, y0 - 5, 10, 10);
        g.fillStyle = 'rgba(200,220,235,0.9)'; g.fillText(z.name, x0 + 9, y0 + 4);
        continue;
      }
      g.strokeStyle = 'rgba(160,190,210,0.35)';
      g.fillStyle = 'rgba(160,190,210,0.05)';
      g.fillRect(x0 - 4, y0 - 4, x1 - x0 + 8, y1 - y0 + 8);
      g.strokeRect(x0 - 4, y0 - 4, x1 - x0 + 8, y1 - y0 + 8);
      g.fillStyle = 'rgba(200,220,235,0.8)';
      g.fillText(z.name, x0, y0 - 8);
    }
    // Conduits: lines between zone centres (any zone and the internet drawn to the edge).
    g.setLineDash([6, 4]);
    g.strokeStyle = 'rgba(127,211,255,0.55)';
    for (const c of d.links) {
      const [ax, ay] = c.a ? project(c.a[0], c.a[1]) : [canvas.width - 30, 20];
      const [bx, by] = c.b ? project(c.b[0], c.b[1]) : [canvas.width - 30, 20];
      g.beginPath(); g.moveTo(ax, ay); g.lineTo(bx, by); g.stroke();
    }
    g.setLineDash([]);
    if (d.links.some((c) => !c.a || !c.b)) {
      g.fillStyle = 'rgba(200,220,235,0.8)';
      g.fillText('internet', canvas.width - 80, 16);
    }
    // Devices: written as pixels into an off-screen buffer (one array write per pixel,
    // no path or fill call per device), then composited over the zones in one drawImage.
    const size = d.n > 20000 ? 2 : d.n > 5000 ? 3 : 4;
    const half = size / 2;
    const W = canvas.width, H = canvas.height;
    if (!buffer.img || buffer.img.width !== W || buffer.img.height !== H) {
      buffer.canvas = document.createElement('canvas');
      buffer.canvas.width = W; buffer.canvas.height = H;
      buffer.ctx = buffer.canvas.getContext('2d');
      buffer.img = buffer.ctx.createImageData(W, H);
      buffer.px = new Uint32Array(buffer.img.data.buffer);
    }
    const px32 = buffer.px;
    px32.fill(0);
    let shown = 0;
    const hw = W / 2, hh = H / 2, scale = view.scale, cx = view.cx, cy = view.cy;
    for (let s = 0; s < d.sectors.length; s++) {
      if (state.hidden.has(d.sectors[s])) continue;
      const colour = packed(SECTOR_COLOURS[d.sectors[s]] || '#cccccc');
      const list = d.bySector[s];
      for (let k = 0; k < list.length; k++) {
        const i = list[k];
        if (state.onlyAlerting && !d.alert[i]) continue;
        const x0 = Math.round((d.x[i] - cx) * scale + hw - half);
        const y0 = Math.round((cy - d.y[i]) * scale + hh - half);
        if (x0 < 0 || y0 < 0 || x0 + size > W || y0 + size > H) continue;
        for (let dy = 0; dy < size; dy++) {
          const row = (y0 + dy) * W + x0;
          for (let dx = 0; dx < size; dx++) px32[row + dx] = colour;
        }
        shown++;
      }
    }
    buffer.ctx.putImageData(buffer.img, 0, 0);
    g.drawImage(buffer.canvas, 0, 0);
    // Status: revoked grey cross, quarantined black square; alerts a ring by severity.
    for (let i = 0; i < d.n; i++) {
      if (!d.status[i] && !d.alert[i]) continue;
      if (state.hidden.has(d.sectors[d.sector[i]])) continue;
      const px = (d.x[i] - view.cx) * view.scale + W / 2;
      const py = (view.cy - d.y[i]) * view.scale + H / 2;
      if (px < -8 || py < -8 || px > W + 8 || py > H + 8) continue;
      if (d.status[i] === 2) { g.strokeStyle = '#000'; g.lineWidth = 2; g.strokeRect(px - size, py - size, size * 2, size * 2); }
      if (d.status[i] === 1) {
        g.strokeStyle = '#9aa'; g.lineWidth = 1.5; g.beginPath();
        g.moveTo(px - size, py - size); g.lineTo(px + size, py + size);
        g.moveTo(px + size, py - size); g.lineTo(px - size, py + size); g.stroke();
      }
      if (d.alert[i]) {
        g.strokeStyle = SEVERITY_COLOURS[d.alert[i]]; g.lineWidth = 1.5;
        g.beginPath(); g.arc(px, py, size + 2 + d.alert[i], 0, Math.PI * 2); g.stroke();
      }
    }
    if (state.selected !== undefined) {
      const [px, py] = project(d.x[state.selected], d.y[state.selected]);
      g.strokeStyle = '#fff'; g.lineWidth = 2; g.beginPath(); g.arc(px, py, 9, 0, Math.PI * 2); g.stroke();
    }
    canvas.dataset.shown = String(shown);
  }

  function prepare(raw) {
    const dv = raw.devices;
    const n = dv.id.length;
    const lat0 = n ? dv.lat.reduce((a, b) => a + b, 0) / n : 0;
    const k = Math.cos((lat0 * Math.PI) / 180);
    const x = new Float64Array(n), y = new Float64Array(n);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      x[i] = dv.lon[i] * k; y[i] = dv.lat[i];
      if (x[i] < minX) minX = x[i]; if (x[i] > maxX) maxX = x[i];
      if (y[i] < minY) minY = y[i]; if (y[i] > maxY) maxY = y[i];
    }
    const sector = Uint8Array.from(dv.sector), status = Uint8Array.from(dv.status), alert = Uint8Array.from(dv.alert);
    const bySector = raw.sectors.map(() => []);
    for (let i = 0; i < n; i++) bySector[sector[i]].push(i);
    const zones = raw.zones.map((z) => ({ name: z.name, devices: z.devices, y0: z.bbox[0], x0: z.bbox[1] * k, y1: z.bbox[2], x1: z.bbox[3] * k, c: [z.center[1] * k, z.center[0]] }));
    // Zones of the plan that hold no placed device (servers, IT, vendors) stand in a
    // column beside the city, so the conduits to them can be drawn.
    const placed = new Set(zones.map((z) => z.name));
    const spare = (raw.planned_zones || []).filter((name) => !placed.has(name));
    if (n) {
      const gap = (maxY - minY || 0.01) / Math.max(spare.length, 1);
      const colX = maxX + (maxX - minX || 0.01) * 0.12;
      spare.forEach((name, j) => {
        const cy = maxY - gap * (j + 0.5);
        zones.push({ name, devices: 0, server: true, x0: colX, x1: colX, y0: cy, y1: cy, c: [colX, cy] });
      });
      if (spare.length) maxX = colX + (maxX - minX) * 0.08;
    }
    const centre = new Map(zones.map((z) => [z.name, z.c]));
    const links = [];
    for (const c of raw.conduits || []) {
      const froms = c.from === '*' ? zones.map((z) => z.name) : [c.from];
      const tos = c.to === '*' ? zones.map((z) => z.name) : [c.to];
      for (const f of froms) for (const t of tos) {
        if (f === t) continue;
        const a = centre.get(f) || null, b = centre.get(t) || null;
        if (!a && !b) continue;
        if ((!a && f !== 'internet') || (!b && t !== 'internet')) continue;
        links.push({ a, b, name: c.name });
      }
    }
    return { raw, n, x, y, minX, minY, maxX, maxY, sector, status, alert, bySector, zones, links, ids: dv.id, sectors: raw.sectors, classes: raw.classes, zoneOf: dv.zone, classOf: dv.class };
  }

  function showLegend() {
    const d = state.data;
    clear(legend);
    const counts = d.sectors.map((_, s) => d.bySector[s].length);
    legend.appendChild(h('h3', null, 'Sectors'));
    d.sectors.forEach((name, s) => {
      const box = h('input', { type: 'checkbox', checked: !state.hidden.has(name), 'data-sector': name,
        onchange: (e) => { if (e.target.checked) state.hidden.delete(name); else state.hidden.add(name); draw(); } });
      const swatch = h('span.swatch');
      swatch.style.background = SECTOR_COLOURS[name] || '#ccc';
      legend.appendChild(h('label.legend-row', null, box, swatch, name.replace('_', ' '), h('span.muted', null, ` ${counts[s]}`)));
    });
    legend.appendChild(h('h3', null, 'Status'));
    legend.appendChild(h('p.muted', null, `active ${d.raw.by_status.active} · quarantined ${d.raw.by_status.quarantined} (black square) · revoked ${d.raw.by_status.revoked} (grey cross)`));
    legend.appendChild(h('label.legend-row', null,
      h('input', { type: 'checkbox', checked: state.onlyAlerting, onchange: (e) => { state.onlyAlerting = e.target.checked; draw(); } }),
      'only devices with alerts (ring: worst severity, last 24 h)'));
    legend.appendChild(h('p.muted', null, `${d.zones.filter((z) => !z.server).length} device zones (their extent), ${d.zones.filter((z) => z.server).length} server zones (squares, right), ${d.links.length} conduits (dashed lines), ${d.raw.unplaced} devices without coordinates`));
  }

  function select(i) {
    const d = state.data;
    state.selected = i;
    clear(info);
    if (i === undefined) { info.appendChild(h('p.muted', null, 'Select a device on the map.')); draw(); return; }
    const id = d.ids[i];
    const status = d.raw.statuses[d.status[i]];
    info.appendChild(h('div.card', null,
      h('h3', null, h('a', { href: route('devices', id) }, id)),
      facts([
        ['Sector', d.sectors[d.sector[i]]],
        ['Class', d.classes[d.classOf[i]]],
        ['Zone', d.raw.zones[d.zoneOf[i]] ? d.raw.zones[d.zoneOf[i]].name : '—'],
        ['Status', badge(status, status)],
        ['Worst alert (24 h)', d.alert[i] ? badge(SEVERITIES[d.alert[i]], SEVERITIES[d.alert[i]]) : 'none'],
        ['Position', `${d.raw.devices.lat[i]}, ${d.raw.devices.lon[i]}`],
      ]),
      h('a.button', { href: route('devices', id) }, 'Open device page')));
    draw();
  }

  function nearest(mx, my) {
    const d = state.data;
    let best, bestDist = 100; // pixels squared
    for (let i = 0; i < d.n; i++) {
      if (state.hidden.has(d.sectors[d.sector[i]])) continue;
      if (state.onlyAlerting && !d.alert[i]) continue;
      const [px, py] = project(d.x[i], d.y[i]);
      const dist = (px - mx) ** 2 + (py - my) ** 2;
      if (dist < bestDist) { bestDist = dist; best = i; }
    }
    return best;
  }

  let drag = null;
  canvas.addEventListener('mousedown', (e) => { drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy, moved: false }; });
  window.addEventListener('mousemove', onMove);
  window.addEventListener('mouseup', onUp);
  function onMove(e) {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    view.cx = drag.cx - dx / view.scale; view.cy = drag.cy + dy / view.scale;
    draw();
  }
  function onUp(e) {
    if (drag && !drag.moved && state.data) {
      const r = canvas.getBoundingClientRect();
      select(nearest(e.clientX - r.left, e.clientY - r.top));
    }
    drag = null;
  }
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const wx = view.cx + (mx - canvas.width / 2) / view.scale, wy = view.cy - (my - canvas.height / 2) / view.scale;
    view.scale *= e.deltaY < 0 ? 1.25 : 0.8;
    view.cx = wx - (mx - canvas.width / 2) / view.scale; view.cy = wy + (my - canvas.height / 2) / view.scale;
    draw();
  }, { passive: false });
  window.addEventListener('resize', onResize);
  function onResize() { resize(); draw(); }

  async function load(keepView) {
    const t0 = performance.now();
    try {
      const raw = await api('/api/v1/console/map');
      if (stopped) return;
      state.data = prepare(raw);
      if (!keepView) { resize(); view.reset(); }
      showLegend();
      paint();
      const ms = Math.round(performance.now() - t0);
      stats.textContent = `${state.data.n.toLocaleString()} devices placed · ${raw.alerting} with alerts in the last 24 h · loaded in ${ms} ms`;
      canvas.dataset.devices = String(state.data.n);
      canvas.dataset.ready = '1';
      performance.mark('console-map-ready');
    } catch (err) {
      stats.textContent = `The map could not load: ${err.message}`;
    }
  }
  resize();
  load(false);
  const onAlert = () => { clearTimeout(state.reload); state.reload = setTimeout(() => load(true), 6000); };
  ctx.live.addEventListener('alert', onAlert);
  return () => {
    stopped = true;
    clearTimeout(state.reload);
    ctx.live.removeEventListener('alert', onAlert);
    window.removeEventListener('mousemove', onMove);
    window.removeEventListener('mouseup', onUp);
    window.removeEventListener('resize', onResize);
  };
}
