// A line chart on a canvas: series of [time, value] points, with time and value axes.
// Labels are drawn with fillText, so names from devices are never markup.

const PALETTE = ['#7fd3ff', '#f0a030', '#9fc54b', '#ed4a7b', '#945ecf', '#19a979', '#e8743b', '#d9c33b'];

export function lineChart(canvas, series, opts = {}) {
  const g = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height;
  const pad = { l: 56, r: 12, t: 12, b: 28 };
  g.fillStyle = '#132430';
  g.fillRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points);
  g.font = '11px system-ui, sans-serif';
  if (!pts.length) {
    g.fillStyle = '#8aa1b1';
    g.fillText(opts.empty || 'No data yet.', pad.l, H / 2);
    return;
  }
  let t0 = Infinity, t1 = -Infinity, v0 = opts.min ?? Infinity, v1 = opts.max ?? -Infinity;
  for (const [t, v] of pts) {
    if (t < t0) t0 = t; if (t > t1) t1 = t;
    if (opts.min === undefined && v < v0) v0 = v;
    if (opts.max === undefined && v > v1) v1 = v;
  }
  if (t1 === t0) t1 = t0 + 1;
  if (v1 === v0) { v1 += 1; v0 -= 1; }
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - ((v - v0) / (v1 - v0)) * (H - pad.t - pad.b);
  g.strokeStyle = '#2b4354'; g.lineWidth = 1; g.fillStyle = '#8aa1b1';
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(W - pad.r, y(v)); g.stroke();
    g.fillText(Number(v.toPrecision(4)).toString(), 4, y(v) + 4);
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + ((t1 - t0) * i) / 3;
    const label = new Date(t).toLocaleTimeString(undefined, { hour12: false });
    g.fillText(label, Math.min(W - 60, x(t) - 20), H - 8);
  }
  series.forEach((s, k) => {
    g.strokeStyle = s.colour || PALETTE[k % PALETTE.length];
    g.lineWidth = 1.5;
    g.beginPath();
    s.points.forEach(([t, v], i) => { if (i) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v)); });
    g.stroke();
    if (s.points.length === 1) { const [t, v] = s.points[0]; g.fillStyle = g.strokeStyle; g.fillRect(x(t) - 2, y(v) - 2, 4, 4); }
  });
  // Legend.
  let lx = pad.l + 4;
  series.forEach((s, k) => {
    g.fillStyle = s.colour || PALETTE[k % PALETTE.length];
    g.fillRect(lx, pad.t, 10, 3);
    g.fillStyle = '#c9d6df';
    const label = String(s.name).slice(0, 40);
    g.fillText(label, lx + 14, pad.t + 5);
    lx += 24 + g.measureText(label).width;
  });
}
