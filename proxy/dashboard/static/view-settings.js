// Settings: the low-balance alert (GET and PUT /token/settings): a threshold, a webhook in any
// format, an email. PUT replaces the settings whole, so the form sends everything it holds.

import { call, get } from './api.js';
import { h, put, say, fail, show, msgLine, button, field, parseJSON } from './dom.js';
import { FORMATS } from './webhook-form.js';

let els;
let loaded = false;
let masked = { headers: null, options: null }; // the texts of fields the API showed masked

const compact = (v) => (v && Object.keys(v).length ? JSON.stringify(v) : '');

function showCurrent(s) {
  els.curThreshold.textContent = show(s.low_balance_threshold);
  const w = s.low_balance_webhook;
  put(els.curWebhook, w
    ? [h('span', { class: 'mono', text: show(w.url) }), ` format ${w.format || 'none'}`,
      compact(w.headers) ? `, headers ${compact(w.headers)}` : '']
    : 'none');
  els.curEmail.textContent = show(s.low_balance_email);
}

function fillForm(s) {
  const w = s.low_balance_webhook || {};
  els.threshold.value = show(s.low_balance_threshold ?? 0);
  els.url.value = w.url || '';
  els.format.value = w.format || '';
  els.headers.value = compact(w.headers);
  els.template.value = w.template === undefined ? '' : JSON.stringify(w.template);
  els.options.value = compact(w.options);
  els.email.value = s.low_balance_email || '';
  masked = {
    headers: Object.values(w.headers || {}).includes('<redacted>') ? els.headers.value : null,
    options: Object.values(w.options || {}).includes('***') ? els.options.value : null,
  };
}

async function load() {
  const res = await get('/token/settings');
  if (!res.ok) return fail(els.msg, res);
  const s = res.json();
  showCurrent(s);
  fillForm(s);
  return true;
}

function body() {
  const b = {};
  const t = els.threshold.value.trim();
  if (t) b.low_balance_threshold = /^[0-9]{1,16}$/.test(t) ? Number(t) : t;
  const url = els.url.value.trim();
  if (url) {
    if (masked.headers !== null && els.headers.value === masked.headers) {
      throw new Error('The API does not show header values (<redacted>) and saving replaces them: type them again; nothing was sent');
    }
    if (masked.options !== null && els.options.value === masked.options) {
      throw new Error('The API does not show secret options (***) and saving replaces them: type them again; nothing was sent');
    }
    const w = { url, format: els.format.value };
    const headers = parseJSON('headers', els.headers.value);
    if (headers !== undefined) w.headers = headers;
    const template = parseJSON('template', els.template.value);
    if (template !== undefined) w.template = template;
    const options = parseJSON('options', els.options.value);
    if (options !== undefined) w.options = options;
    b.low_balance_webhook = w;
  }
  const email = els.email.value.trim();
  if (email) b.low_balance_email = email;
  return b;
}

async function save() {
  let json;
  try {
    json = body();
  } catch (e) {
    return say(els.msg, e.message, 'error');
  }
  const res = await call('PUT', '/token/settings', { json });
  if (!res.ok) return fail(els.msg, res);
  if (await load()) say(els.msg, `${res.text}: saved, and read back.`);
}

function mount(panel) {
  els = {
    msg: msgLine('settings-msg'),
    curThreshold: h('dd', { id: 'settings-threshold', 'data-testid': 'settings-threshold', text: '–' }),
    curWebhook: h('dd', { id: 'settings-webhook', 'data-testid': 'settings-webhook', text: '–' }),
    curEmail: h('dd', { id: 'settings-email', 'data-testid': 'settings-email', text: '–' }),
    threshold: h('input', { type: 'text', inputmode: 'numeric', placeholder: '0 (alerts off)' }),
    url: h('input', { type: 'url', placeholder: 'https://hooks.slack.com/services/…', spellcheck: 'false' }),
    format: h('select', null, FORMATS.map(([v, t]) => h('option', { value: v, text: v ? t : 'none: the alert JSON' }))),
    headers: h('textarea', { rows: '2', spellcheck: 'false', placeholder: '{"Authorization": "Bearer …"}' }),
    template: h('textarea', { rows: '2', spellcheck: 'false', placeholder: '{"text": "{{wallet}} credits left"}' }),
    options: h('textarea', { rows: '2', spellcheck: 'false', placeholder: '{"chat_id": "…"}' }),
    email: h('input', { type: 'email', maxlength: '254', placeholder: 'ops@example.com' }),
  };
  panel.append(
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'Settings' }),
        button('Reload (1 credit)', { id: 'settings-reload' }, load)),
      h('p', { class: 'hint', text: 'When a charge takes the balance from at least the threshold to below it, one '
        + 'low-balance alert goes to the webhook and the email; 0 turns alerts off.' }),
      h('dl', { class: 'facts' },
        h('dt', { text: 'Low-balance threshold' }), els.curThreshold,
        h('dt', { text: 'Alert webhook' }), els.curWebhook,
        h('dt', { text: 'Alert email' }), els.curEmail)),
    h('div', { class: 'card' },
      h('h2', { text: 'Change the settings' }),
      h('p', { class: 'hint', text: 'Saving replaces every setting (PUT /token/settings, 1 credit; then read back, '
        + '1 more). Leave the URL empty for no webhook and the email empty for no email. An alert webhook '
        + 'needs a token with the webhook scope; an email needs an SMTP relay set up by the operator.' }),
      h('div', { class: 'row' },
        field('set-threshold', 'Threshold (credits)', els.threshold),
        field('set-email', 'Alert email', els.email)),
      h('div', { class: 'row' },
        field('set-wh-url', 'Alert webhook URL', els.url),
        field('set-wh-format', 'Format', els.format)),
      h('div', { class: 'row' },
        field('set-wh-headers', 'Headers (JSON object)', els.headers),
        field('set-wh-options', 'Options (JSON object)', els.options),
        field('set-wh-template', 'Template (custom format)', els.template)),
      h('div', { class: 'actions' }, button('Save settings', { id: 'settings-save', class: 'primary' }, save)),
      els.msg));
}

function open() {
  if (!loaded) {
    loaded = true;
    load();
  }
}

export default { id: 'settings', title: 'Settings', mount, open };
