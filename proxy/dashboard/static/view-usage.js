// Usage: credits spent per day (UTC) and per endpoint, summed from the `cost` of the newest
// 100 log entries (GET /token/logs?n=100, 1 credit per entry returned). Loaded on a button
// press only, since it costs up to 100 credits.

import { get, query } from './api.js';
import { h, put, fail, count, msgLine, button, table } from './dom.js';
import { stackedBars, endpointClass } from './chart.js';

const ORDER = ['kv', 'token', 'webhook', 'webhook-delivery', 'email', 'recharge', 'settings'];
const DAY_MS = 86400000;
let els;

const utcDay = (ms) => new Date(ms).toISOString().slice(0, 10);

/** The entries summed per UTC day, every day from the oldest shown (a week at least) to today. */
function aggregate(entries) {
  const byDay = new Map();
  const seen = new Set();
  for (const e of entries) {
    const day = String(e.timestamp).slice(0, 10);
    const cost = Number(e.cost) || 0;
    seen.add(e.endpoint);
    if (!byDay.has(day)) byDay.set(day, new Map());
    const m = byDay.get(day);
    m.set(e.endpoint, (m.get(e.endpoint) || 0) + cost);
  }
  const today = Date.parse(`${utcDay(Date.now())}T00:00:00Z`);
  let first = today - 6 * DAY_MS;
  for (const day of byDay.keys()) first = Math.min(first, Date.parse(`${day}T00:00:00Z`));
  const days = [];
  for (let t = first; t <= today; t += DAY_MS) {
    const day = utcDay(t);
    const m = byDay.get(day) || new Map();
    days.push({ day, byEndpoint: m, total: [...m.values()].reduce((a, b) => a + b, 0) });
  }
  const endpoints = [...ORDER.filter((e) => seen.has(e)), ...[...seen].filter((e) => !ORDER.includes(e)).sort()];
  return { days, endpoints };
}

function render(body) {
  const entries = Array.isArray(body.logs) ? body.logs : [];
  const { days, endpoints } = aggregate(entries);
  const total = days.reduce((a, d) => a + d.total, 0);
  const newest = entries[0]?.timestamp;
  const oldest = entries[entries.length - 1]?.timestamp;
  put(els.summary, entries.length
    ? `${count(body.n, 'entry', 'entries')}, from ${oldest} to ${newest}: ${total} credits spent.`
    : 'No log entries in the retention window.');
  els.summary.dataset.total = String(total);

  const tbl = table('usage-table', ['Day (UTC)', ...endpoints, 'Total']);
  const tbody = tbl.tBodies[0];
  for (const d of [...days].reverse()) {
    tbody.append(h('tr', { dataset: { day: d.day } },
      h('th', { scope: 'row', text: d.day }),
      endpoints.map((ep) => h('td', { class: 'num', dataset: { endpoint: ep }, text: String(d.byEndpoint.get(ep) || 0) })),
      h('td', { class: 'num total', text: String(d.total) })));
  }
  const sums = endpoints.map((ep) => days.reduce((a, d) => a + (d.byEndpoint.get(ep) || 0), 0));
  tbl.append(h('tfoot', null, h('tr', { dataset: { day: 'all' } },
    h('th', { scope: 'row', text: 'All days' }),
    sums.map((s, i) => h('td', { class: 'num', dataset: { endpoint: endpoints[i] }, text: String(s) })),
    h('td', { class: 'num total', text: String(total) }))));

  const legend = h('ul', { class: 'legend', 'aria-label': 'Endpoints' },
    endpoints.map((ep) => h('li', null, h('span', { class: `swatch ${endpointClass(ep)}`, 'aria-hidden': 'true' }), ep)));
  put(els.chart,
    stackedBars(days, endpoints, `Credits spent per day and endpoint, ${days[0].day} to ${days[days.length - 1].day}`),
    legend);
  put(els.tableBox, tbl);
}

async function load() {
  const res = await get(`/token/logs${query({ n: 100 })}`);
  if (!res.ok) {
    fail(els.msg, res);
    return;
  }
  put(els.msg);
  render(res.json());
}

function mount(panel) {
  els = {
    msg: msgLine('usage-msg'),
    summary: h('p', { id: 'usage-summary', 'data-testid': 'usage-summary' }),
    chart: h('div', { class: 'chart-box', id: 'usage-chart-box' }),
    tableBox: h('div', { class: 'table-box' }),
  };
  panel.append(h('div', { class: 'card' },
    h('div', { class: 'card-head' },
      h('h2', { text: 'Usage' }),
      button('Load usage (up to 100 credits)', { id: 'usage-load', 'data-testid': 'usage-load' }, load)),
    h('p', { class: 'hint', text: 'Sums the cost of the newest 100 log entries '
      + '(GET /token/logs?n=100, 1 credit per entry returned, so up to 100 credits). Logs are '
      + 'kept 7 days: the chart covers at most that week, and only its newest 100 entries; '
      + 'this load itself is logged after it and shows next time.' }),
    els.msg, els.summary, els.chart, els.tableBox));
}

export default { id: 'usage', title: 'Usage', mount, open() {} };
