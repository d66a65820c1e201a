// Webhooks: GET /webhook (the wallet's address and signing secret, and every webhook), each
// with its address or schedule, the test button (POST /webhook/{id}/test, answered once the
// worker tried, within about 12 s), delete, and the last deliveries (the webhook-delivery logs).

import { call, get, path, query } from './api.js';
import { h, put, say, fail, show, count, msgLine, button, confirmButton, table } from './dom.js';
import { mountForm, editWebhook, clearForm, formWebhookId } from './webhook-form.js';
import { logTable } from './view-logs.js';

let els;
let loaded = false;
let hooks = [];

function deliveryCell(w) {
  if (w.schedule) {
    const s = w.schedule;
    return h('td', { class: 'delivery' },
      h('div', null, 'cron ', h('code', { class: 'cron', text: show(s.cron) }), ' in ', h('span', { text: show(s.timezone) }),
        s.active === false ? h('span', { class: 'badge muted', text: 'paused' }) : h('span', { class: 'badge', text: 'active' })),
      h('div', { class: 'small' }, 'next run ', h('span', { class: 'mono', text: show(s.nextRunAt) })),
      h('div', { class: 'small' }, 'last run ', h('span', { class: 'mono', text: show(s.lastRunAt) }),
        s.lastStatus ? h('span', { class: `badge ${s.lastStatus === 'success' ? 'good' : 'bad'}`, text: s.lastStatus }) : null),
      s.lastError ? h('div', { class: 'small bad', text: s.lastError }) : null);
  }
  return h('td', { class: 'delivery' },
    h('div', null, 'mail to ', h('span', { class: 'mono address', text: show(w.email) })),
    h('div', { class: 'small', text: `attachments ${w.includeAttachments === false ? 'left out' : 'included'}` }));
}

function row(w) {
  return h('tr', { dataset: { webhook: show(w.webhookId) } },
    h('td', { class: 'lines' }, h('div', { class: 'mono nowrap', text: show(w.webhookId) }),
      h('div', { class: 'mono small muted', title: 'updated', text: `updated ${show(w.updated)}` })),
    h('td', { class: 'mono url', text: show(w.webhook) }),
    h('td', { text: w.schedule ? 'scheduled' : (w.format || 'none') }),
    deliveryCell(w),
    h('td', { class: 'row-actions' }, h('div', { class: 'actions' },
      button('Edit', { class: 'small', 'data-action': 'edit' }, async () => editWebhook(w)),
      button('Test (1 credit)', { class: 'small', 'data-action': 'test' }, () => test(w.webhookId)),
      confirmButton('Delete', { class: 'small danger', 'data-action': 'delete' }, () => remove(w.webhookId)))));
}

function render() {
  if (!hooks.length) {
    put(els.list, h('p', { class: 'empty', text: 'No webhook yet: create one below.' }));
    return;
  }
  const tbl = table('webhooks-table', ['Id', 'URL', 'Format', 'Delivery', '']);
  for (const w of hooks) tbl.tBodies[0].append(row(w));
  put(els.list, tbl);
}

async function refresh() {
  const res = await get('/webhook');
  if (!res.ok) return fail(els.msg, res);
  const body = res.json();
  hooks = Array.isArray(body.webhooks) ? body.webhooks : [];
  put(els.msg);
  els.email.textContent = show(body.email);
  els.secret.textContent = body.secret ? '••••••••' : '– (set the webhook default to get one)';
  els.showSecret.hidden = !body.secret;
  els.showSecret.textContent = 'Show';
  els.secretValue = body.secret || '';
  render();
}

function toggleSecret() {
  const shown = els.showSecret.textContent === 'Hide';
  els.secret.textContent = shown ? '••••••••' : els.secretValue;
  els.showSecret.textContent = shown ? 'Show' : 'Hide';
}

function saved(w) {
  const i = hooks.findIndex((x) => x.webhookId === w.webhookId);
  if (i >= 0) hooks[i] = w;
  else hooks.push(w);
  hooks.sort((a, b) => (a.webhookId < b.webhookId ? -1 : 1));
  render();
}

async function test(id) {
  say(els.test, `Testing ${id}: waiting for the delivery (up to about 12 s)…`, 'info');
  els.test.dataset.webhook = id;
  const res = await call('POST', `${path('webhook', id)}/test`);
  if (!res.ok) return fail(els.test, res);
  let body;
  try {
    body = res.json();
  } catch {
    return say(els.test, res.text, 'error');
  }
  els.test.setAttribute('class', `msg ${body.success ? 'ok' : 'error'}`);
  put(els.test, `Test of ${id}: `,
    h('span', { id: 'webhook-test-success', class: 'badge', text: `success: ${show(body.success)}` }), ' ',
    h('span', { id: 'webhook-test-message', 'data-testid': 'webhook-test-message', text: show(body.message) }));
}

async function remove(id) {
  const res = await call('DELETE', path('webhook', id));
  if (!res.ok) return fail(els.msg, res);
  hooks = hooks.filter((w) => w.webhookId !== id);
  render();
  say(els.msg, `${res.text}: deleted ${id}.`);
  if (formWebhookId() === id) clearForm();
}

async function deliveries() {
  const res = await get(`/token/logs${query({ type: 'webhook-delivery', n: 10 })}`);
  if (!res.ok) return fail(els.deliveriesMsg, res);
  const body = res.json();
  say(els.deliveriesMsg, `${count(body.n, 'delivery attempt')}, newest first (path: the delivery's webhook-id; status 0: no answer).`);
  put(els.deliveries, logTable('deliveries-table', body.logs || []));
}

function mount(panel) {
  els = {
    msg: msgLine('webhooks-msg'),
    test: msgLine('webhook-test-result'),
    list: h('div', { class: 'table-box', id: 'webhooks-list' }),
    email: h('dd', { id: 'webhook-email', class: 'mono', text: '–' }),
    secret: h('code', { id: 'webhook-secret', text: '–' }),
    deliveries: h('div', { class: 'table-box' }),
    deliveriesMsg: msgLine('deliveries-msg'),
  };
  els.showSecret = button('Show', { id: 'webhook-secret-toggle', class: 'small secondary', hidden: true }, async () => toggleSecret());
  panel.append(
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'Webhooks' }),
        button('Refresh (1 credit)', { id: 'webhooks-refresh' }, refresh)),
      h('dl', { class: 'facts' },
        h('dt', { text: 'Address of webhook default' }), els.email,
        h('dt', { text: 'Signing secret' }), h('dd', null, els.secret, ' ', els.showSecret)),
      els.msg, els.list, els.test),
    h('div', { id: 'webhook-form-box' }),
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'Last deliveries' }),
        button('Load last deliveries (up to 10 credits)', { id: 'deliveries-load' }, deliveries)),
      els.deliveriesMsg, els.deliveries));
  mountForm(panel.querySelector('#webhook-form-box'), saved);
}

function open() {
  if (!loaded) {
    loaded = true;
    refresh();
  }
}

export default { id: 'webhooks', title: 'Webhooks', mount, open };
