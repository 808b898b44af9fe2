// DOM building without HTML parsing: every piece of data becomes a text node or an
// attribute value, never markup. No module of the console uses an HTML-parsing property
// or method (a test in crates/web checks the assets for them), and no URL is built from
// data except through `route()`.

// h('tag.class', {attr: value, onclick: fn}, child, ...): children are nodes, strings
// (text nodes), numbers, null/false (skipped) or arrays of those.
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'class') {
        el.className = [el.className, value].filter(Boolean).join(' ');
      } else if (key === 'href') {
        el.setAttribute('href', safeHref(value));
      } else if (key === 'value') {
        el.value = value;
      } else if (key === 'checked' || key === 'disabled' || key === 'selected') {
        el[key] = Boolean(value);
      } else {
        el.setAttribute(key, String(value));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

// Only the console's own routes are linked.
function safeHref(value) {
  const text = String(value);
  return text.startsWith('#/') ? text : '#/';
}

// A link to a console route; each segment is URI-encoded.
export function route(...segments) {
  return '#/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleString(undefined, { hour12: false });
}

export function ago(ts) {
  if (!ts) return '—';
  const s = Math.round((Date.now() - new Date(ts).getTime()) / 1000);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function badge(kind, text) {
  return h(`span.badge.b-${String(kind).replace(/[^a-z0-9_-]/gi, '')}`, null, text);
}

// A table from rows: columns are [header, row => cell content].
export function table(columns, rows, opts = {}) {
  return h('table.grid', opts.attrs || null,
    h('thead', null, h('tr', null, columns.map(([title]) => h('th', null, title)))),
    h('tbody', null, rows.length
      ? rows.map((row) => h('tr', opts.rowAttrs ? opts.rowAttrs(row) : null,
        columns.map(([, cell]) => h('td', null, cell(row)))))
      : h('tr', null, h('td.empty', { colspan: columns.length }, opts.empty || 'Nothing here.'))));
}

// A key/value list.
export function facts(pairs) {
  return h('dl.facts', null, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function field(label, input) {
  return h('label.field', null, h('span', null, label), input);
}

export function select(name, options, value) {
  return h('select', { name }, options.map((o) => {
    const [v, text] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, selected: v === value }, text);
  }));
}

// Shows a message in the page's status line.
export function notify(text, kind = 'info') {
  const bar = document.getElementById('notice');
  if (!bar) return;
  clear(bar).appendChild(h(`span.n-${kind}`, null, text));
  bar.dataset.kind = kind;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => clear(bar), 8000);
}
