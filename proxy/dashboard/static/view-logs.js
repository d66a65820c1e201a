// Logs: the wallet's newest entries as GET /token/logs?n=&type= gives them, newest first.
// 1 credit per entry returned, so they load on a button press.

import { get, query } from './api.js';
import { h, put, fail, show, count, msgLine, button, table, field } from './dom.js';

export const LOG_TYPES = ['kv', 'token', 'webhook', 'webhook-delivery', 'email', 'recharge', 'settings'];
const COLUMNS = ['Time (UTC)', 'Method', 'Path', 'Endpoint', 'Status', 'Cost', 'Balance', 'Error'];
let els;

/** A row of a log table; shared with the webhooks view's last deliveries. */
export function logRow(e) {
  const ok = e.status_code >= 200 && e.status_code < 300;
  return h('tr', { dataset: { id: show(e.id) } },
    h('td', { class: 'mono nowrap', text: show(e.timestamp) }),
    h('td', { text: show(e.method) }),
    h('td', { class: 'mono path', text: show(e.path) }),
    h('td', { text: show(e.endpoint) }),
    h('td', { class: `num ${ok ? 'good' : 'bad'}`, text: show(e.status_code) }),
    h('td', { class: 'num', text: show(e.cost) }),
    h('td', { class: 'num', text: show(e.balance) }),
    h('td', { class: 'error-cell', text: e.error === undefined ? '' : show(e.error) }));
}

export function logTable(id, entries) {
  const tbl = table(id, COLUMNS);
  for (const e of entries) tbl.tBodies[0].append(logRow(e));
  return tbl;
}

function updateLabel() {
  const n = els.n.value.trim() || '5';
  els.load.textContent = `Load logs (up to ${n} credits)`;
}

async function load() {
  const res = await get(`/token/logs${query({ n: els.n.value.trim(), type: els.type.value })}`);
  if (!res.ok) {
    fail(els.msg, res);
    return;
  }
  const body = res.json();
  const entries = Array.isArray(body.logs) ? body.logs : [];
  put(els.msg, `${count(body.n, 'entry', 'entries')}${els.type.value ? ` of type ${els.type.value}` : ''}, newest first.`);
  els.msg.setAttribute('class', 'msg ok');
  put(els.tableBox, logTable('logs-table', entries));
}

function mount(panel) {
  els = {
    type: h('select', { name: 'type' },
      h('option', { value: '', text: 'all types' }),
      LOG_TYPES.map((t) => h('option', { value: t, text: t }))),
    n: h('input', { type: 'number', min: '1', max: '100', value: '20', inputmode: 'numeric' }),
    msg: msgLine('logs-msg'),
    tableBox: h('div', { class: 'table-box' }),
  };
  els.load = button('', { id: 'logs-load', 'data-testid': 'logs-load' }, load);
  els.n.addEventListener('input', updateLabel);
  updateLabel();
  panel.append(h('div', { class: 'card' },
    h('h2', { text: 'Logs' }),
    h('p', { class: 'hint', text: 'Entries are kept 7 days. Each entry returned costs 1 credit '
      + '(n at most 100); the request that loads them is logged after them.' }),
    h('div', { class: 'row' },
      field('logs-type', 'Type', els.type),
      field('logs-n', 'n (entries)', els.n, null, 'narrow'),
      h('div', { class: 'field end' }, els.load)),
    els.msg, els.tableBox));
}

export default { id: 'logs', title: 'Logs', mount, open() {} };
