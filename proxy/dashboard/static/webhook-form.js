// The webhook form: create (PUT /webhook/{id}) or edit (PATCH /webhook/{id}, only what the
// form holds, so header values and secret options the API shows masked are kept unless
// retyped). Mailbox mode takes a format (slack, discord, …, custom with a template); scheduled
// mode a cron schedule in a time zone.

import { call, path } from './api.js';
import { h, say, fail, show, msgLine, button, field, parseJSON } from './dom.js';

export const FORMATS = [
  ['', 'none: the raw email JSON'], ['slack', 'slack'], ['discord', 'discord'], ['teams', 'teams'],
  ['telegram', 'telegram (options.chat_id)'], ['pagerduty', 'pagerduty (options.routing_key)'],
  ['custom', 'custom (a JSON template)'],
];

let els;
let editing = null; // the WebhookResponse being edited, with the texts its masked fields had
let onSaved = () => {};

const localZone = () => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
};

const compact = (v) => (v && Object.keys(v).length ? JSON.stringify(v, null, 1).replace(/\n\s*/g, ' ') : '');

function scheduled() {
  return els.modeScheduled.checked;
}

function syncMode() {
  els.mailbox.hidden = scheduled();
  els.schedule.hidden = !scheduled();
  els.templateField.hidden = els.format.value !== 'custom';
}

/** The webhook id the form holds (the one being edited, or typed for a new one). */
export function formWebhookId() {
  return els.id.value.trim() || 'default';
}

/** Empties the form for a new webhook. */
export function clearForm() {
  editing = null;
  els.title.textContent = 'New webhook';
  els.id.readOnly = false;
  for (const el of [els.id, els.url, els.headers, els.template, els.options, els.cron]) el.value = '';
  els.format.value = '';
  els.attach.checked = true;
  els.active.checked = true;
  els.timezone.value = localZone();
  els.modeMailbox.checked = true;
  els.save.textContent = 'Create (1 credit)';
  syncMode();
}

/** Fills the form with a webhook from the listing, to edit it. */
export function editWebhook(w) {
  clearForm();
  editing = { w, headers: compact(w.headers), options: compact(w.options) };
  els.title.textContent = `Edit webhook ${w.webhookId}`;
  els.id.value = w.webhookId;
  els.url.value = w.webhook || '';
  els.headers.value = editing.headers;
  if (w.schedule) {
    els.modeScheduled.checked = true;
    els.cron.value = w.schedule.cron || '';
    els.timezone.value = w.schedule.timezone || 'UTC';
    els.active.checked = w.schedule.active !== false;
  } else {
    els.format.value = w.format || '';
    els.template.value = w.template === undefined || w.template === null ? '' : JSON.stringify(w.template, null, 2);
    els.options.value = editing.options;
    els.attach.checked = w.includeAttachments !== false;
  }
  els.save.textContent = 'Save changes (1 credit)';
  syncMode();
  say(els.msg, 'Header values and secret options are not shown by the API: leave them as they are to keep them.', 'info');
  els.url.focus();
}

function body(edit) {
  const b = { url: els.url.value.trim() };
  if (!edit || els.headers.value !== edit.headers) b.headers = parseJSON('headers', els.headers.value) ?? {};
  if (scheduled()) {
    b.schedule = { cron: els.cron.value.trim(), timezone: els.timezone.value.trim(), active: els.active.checked };
    if (edit && !edit.w.schedule) Object.assign(b, { format: '', options: {}, includeAttachments: true });
  } else {
    b.format = els.format.value;
    if (b.format === 'custom') {
      const template = parseJSON('template', els.template.value);
      if (template !== undefined) b.template = template;
    }
    if (!edit || els.options.value !== edit.options) b.options = parseJSON('options', els.options.value) ?? {};
    b.includeAttachments = els.attach.checked;
    if (edit && edit.w.schedule) b.schedule = null;
  }
  return b;
}

async function save() {
  const id = els.id.value.trim() || 'default';
  const edit = editing && editing.w.webhookId === id ? editing : null;
  let json;
  try {
    json = body(edit);
  } catch (e) {
    say(els.msg, e.message, 'error');
    return;
  }
  const method = edit ? 'PATCH' : 'PUT';
  const res = await call(method, path('webhook', id), { json });
  if (!res.ok) {
    fail(els.msg, res);
    return;
  }
  const saved = res.json();
  onSaved(saved);
  editWebhook(saved);
  say(els.msg, `Saved ${show(saved.webhookId)} (${method}).`);
}

export function mountForm(container, savedCallback) {
  onSaved = savedCallback;
  els = {
    title: h('h2', { id: 'webhook-form-title', text: 'New webhook' }),
    id: h('input', { type: 'text', maxlength: '30', placeholder: 'default', spellcheck: 'false', pattern: '[A-Za-z0-9_\\-]{1,30}' }),
    url: h('input', { type: 'url', placeholder: 'https://example.com/hook', spellcheck: 'false' }),
    headers: h('textarea', { rows: '2', spellcheck: 'false', placeholder: '{"Authorization": "Bearer …"}' }),
    modeMailbox: h('input', { type: 'radio', name: 'wh-mode', value: 'mailbox', checked: true }),
    modeScheduled: h('input', { type: 'radio', name: 'wh-mode', value: 'scheduled' }),
    format: h('select', null, FORMATS.map(([v, t]) => h('option', { value: v, text: t }))),
    template: h('textarea', { rows: '4', spellcheck: 'false', placeholder: '{"title": "{{subject}}", "from": "{{from.email}}"}' }),
    options: h('textarea', { rows: '2', spellcheck: 'false', placeholder: '{"chat_id": "…"}' }),
    attach: h('input', { type: 'checkbox', checked: true }),
    cron: h('input', { type: 'text', placeholder: '0 9 * * 1-5', spellcheck: 'false' }),
    timezone: h('input', { type: 'text', placeholder: 'Europe/Rome', spellcheck: 'false' }),
    active: h('input', { type: 'checkbox', checked: true }),
    msg: msgLine('webhook-form-msg'),
  };
  els.modeMailbox.id = 'wh-mode-mailbox';
  els.modeScheduled.id = 'wh-mode-scheduled';
  els.templateField = field('wh-template', 'Template (JSON with {{…}} placeholders)', els.template);
  els.attach.id = 'wh-attachments';
  els.active.id = 'wh-active';
  els.mailbox = h('fieldset', { class: 'mode' }, h('legend', { text: 'Mailbox: each email to its address is delivered' }),
    field('wh-format', 'Format', els.format), els.templateField,
    field('wh-options', 'Options (JSON object)', els.options),
    h('label', { class: 'check', for: 'wh-attachments' }, els.attach, ' Include attachments'));
  els.schedule = h('fieldset', { class: 'mode', hidden: true }, h('legend', { text: 'Scheduled: POSTed on a cron schedule' }),
    h('div', { class: 'row' },
      field('wh-cron', 'Cron (minute hour day month weekday)', els.cron),
      field('wh-timezone', 'Time zone (IANA)', els.timezone)),
    h('label', { class: 'check', for: 'wh-active' }, els.active, ' Active'));
  els.save = button('Create (1 credit)', { id: 'wh-save', class: 'primary' }, save);
  for (const el of [els.modeMailbox, els.modeScheduled, els.format]) el.addEventListener('change', syncMode);

  container.append(h('div', { class: 'card', id: 'webhook-form' },
    els.title,
    h('div', { class: 'row' },
      field('wh-id', 'Webhook id', els.id, '1 to 30 of A-Z a-z 0-9 _ -'),
      field('wh-url', 'URL (https, public)', els.url)),
    field('wh-headers', 'Headers (JSON object)', els.headers),
    h('div', { class: 'radios', role: 'radiogroup', 'aria-label': 'Mode' },
      h('label', { for: 'wh-mode-mailbox', class: 'check' }, els.modeMailbox, ' Mailbox'),
      h('label', { for: 'wh-mode-scheduled', class: 'check' }, els.modeScheduled, ' Scheduled')),
    els.mailbox, els.schedule,
    h('div', { class: 'actions' }, els.save,
      button('New webhook', { id: 'wh-new', class: 'secondary' }, async () => { clearForm(); say(els.msg, ''); })),
    els.msg));
  clearForm();
}
