// API tokens: list (GET /token/keys), create with a label, limits, scopes and groups
// (POST /token/keys; the new token is shown this once), revoke (DELETE /token/keys/{id}).
// Only the root token manages tokens: any other gets the API's 403, shown as such.

import { call, get, path } from './api.js';
import { h, put, say, fail, show, count, msgLine, button, confirmButton, table, field } from './dom.js';

const SCOPES = ['kv:read', 'kv:write', 'logs', 'wallet', 'webhook', 'settings'];
const DEFAULT_SCOPES = ['kv:read', 'kv:write', 'logs', 'wallet'];
const LIMITS = [['per_request', 'Per request'], ['daily', 'Per 24 hours'], ['monthly', 'Per 30 days']];
let els;
let loaded = false;

const scopeId = (s) => `tok-scope-${s.replace(':', '-')}`;

function limitLines(k) {
  if (k.root) return [h('div', { text: 'none (root)' })];
  const l = k.limits || {};
  return LIMITS.map(([name, t]) => h('div', { dataset: { limit: name } },
    `${t.toLowerCase()}: `, h('span', { class: 'num', text: l[name] === null || l[name] === undefined ? 'none' : show(l[name]) })));
}

function row(k) {
  const revoked = k.revoked !== null && k.revoked !== undefined;
  const td = (name, props, ...children) => h('td', { ...props, dataset: { field: name } }, ...children);
  return h('tr', { dataset: { id: show(k.id), label: show(k.label) }, class: revoked ? 'revoked' : '' },
    td('label', { class: 'lines' },
      h('div', null, h('span', { class: 'label', text: show(k.label) }), k.root ? h('span', { class: 'badge', text: 'root' }) : null),
      h('div', { class: 'mono small prefix', text: show(k.prefix) })),
    td('scopes', { class: 'lines small' },
      h('div', { class: 'chips' }, (Array.isArray(k.scopes) ? k.scopes : []).map((s) => h('span', { class: 'chip', text: s }))),
      h('div', { class: 'groups' }, 'KV groups: ', h('span', { text: Array.isArray(k.groups) ? k.groups.join(', ') : 'all' }))),
    td('limits', { class: 'lines small' }, limitLines(k)),
    td('usage', { class: 'small num', text: k.usage ? `${show(k.usage.daily)} / ${show(k.usage.monthly)}` : '–' }),
    td('dates', { class: 'lines mono small nowrap' },
      h('div', { title: 'created', text: show(k.created) }),
      h('div', { title: 'last used', class: 'muted', text: `used ${show(k.last_used)}` })),
    td('status', { class: `token-status small ${revoked ? 'bad' : 'good'}`, text: revoked ? `revoked ${k.revoked}` : 'active' }),
    h('td', { class: 'row-actions' }, h('div', { class: 'actions' }, k.root || revoked ? null
      : confirmButton('Revoke', { class: 'small danger', 'data-action': 'revoke' }, () => revoke(k.id)))));
}

async function refresh() {
  const res = await get('/token/keys');
  if (!res.ok) {
    put(els.list);
    return fail(els.msg, res);
  }
  const keys = res.json().keys || [];
  const tbl = table('tokens-table', ['Label and prefix', 'Scopes', 'Limits (credits)',
    'Spent 24 h / 30 d', 'Created, last used (UTC)', 'Status', '']);
  for (const k of keys) tbl.tBodies[0].append(row(k));
  put(els.list, tbl);
  say(els.msg, `${count(keys.length, 'token')}.`);
}

function spec() {
  const body = {};
  const label = els.label.value.trim();
  if (label) body.label = label;
  const limits = {};
  for (const [k] of LIMITS) {
    const v = els.limits[k].value.trim();
    // digits as a number; anything else as typed, for the API to say what is wrong with it
    if (v) limits[k] = /^[0-9]{1,16}$/.test(v) ? Number(v) : v;
  }
  if (Object.keys(limits).length) body.limits = limits;
  body.scopes = SCOPES.filter((s) => els.scopes[s].checked);
  const groups = els.groups.value.split(',').map((g) => g.trim()).filter(Boolean);
  if (groups.length) body.groups = groups;
  return body;
}

async function create() {
  const res = await call('POST', '/token/keys', { json: spec() });
  if (!res.ok) return fail(els.createMsg, res);
  const made = res.json();
  els.newToken.value = made.token;
  put(els.newTokenOf, 'New token ', h('span', { class: 'label', text: show(made.label) }),
    ` (scopes ${(made.scopes || []).join(', ')}${made.groups ? `; groups ${made.groups.join(', ')}` : ''})`);
  put(els.copied);
  els.panel.hidden = false;
  say(els.createMsg, 'Created. Copy the token now: it is not shown again.');
  els.newToken.focus();
  els.newToken.select();
  await refresh();
}

async function copy() {
  const value = els.newToken.value;
  try {
    await navigator.clipboard.writeText(value);
    say(els.copied, 'Copied to the clipboard.');
  } catch {
    els.newToken.focus();
    els.newToken.select();
    let done = false;
    try {
      done = document.execCommand('copy');
    } catch {
      done = false;
    }
    say(els.copied, done ? 'Copied to the clipboard.' : 'The browser refused to copy: the token is selected, press Ctrl+C.',
      done ? 'ok' : 'info');
  }
}

function dismiss() {
  els.newToken.value = '';
  els.panel.hidden = true;
}

async function revoke(id) {
  const res = await call('DELETE', path('token', 'keys', id));
  if (!res.ok) return fail(els.msg, res);
  await refresh();
  say(els.msg, `${res.text}: token revoked.`);
}

function mount(panel) {
  els = {
    msg: msgLine('tokens-msg'),
    createMsg: msgLine('token-create-msg'),
    copied: msgLine('new-token-copied'),
    list: h('div', { class: 'table-box', id: 'tokens-list' }),
    label: h('input', { type: 'text', maxlength: '100', placeholder: 'CI pipeline' }),
    groups: h('input', { type: 'text', placeholder: 'all groups', spellcheck: 'false' }),
    limits: Object.fromEntries(LIMITS.map(([k]) => [k, h('input', { type: 'text', inputmode: 'numeric', placeholder: 'none' })])),
    scopes: Object.fromEntries(SCOPES.map((s) => [s, h('input', { type: 'checkbox', value: s, id: scopeId(s), checked: DEFAULT_SCOPES.includes(s) })])),
    newToken: h('input', { type: 'text', readOnly: true, class: 'mono wide', 'aria-label': 'The new token', spellcheck: 'false' }),
    newTokenOf: h('h3', { id: 'new-token-title' }),
  };
  els.newToken.id = 'new-token';
  els.panel = h('div', { class: 'card once', id: 'new-token-panel', hidden: true, role: 'region', 'aria-labelledby': 'new-token-title' },
    els.newTokenOf,
    h('p', { class: 'warn', text: 'This is the only time the token is shown: only its SHA-256 is stored. Copy it now.' }),
    h('div', { class: 'row' }, els.newToken,
      button('Copy', { id: 'new-token-copy' }, copy),
      button('I have saved it', { id: 'new-token-done', class: 'secondary' }, async () => dismiss())),
    els.copied);
  panel.append(
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'API tokens' }),
        button('Refresh (1 credit)', { id: 'tokens-refresh' }, refresh)),
      h('p', { class: 'hint', text: 'Only the wallet\'s root token can list, create and revoke tokens. '
        + 'A revoked token is refused at once and for good.' }),
      els.msg, els.list),
    els.panel,
    h('div', { class: 'card' },
      h('h2', { text: 'Create a token' }),
      h('div', { class: 'row' },
        field('tok-label', 'Label', els.label),
        field('tok-groups', 'KV groups (comma-separated)', els.groups, 'empty: every group')),
      h('div', { class: 'row' }, LIMITS.map(([k, t]) => field(`tok-${k.replace('_', '-')}`, `${t} limit`, els.limits[k]))),
      h('fieldset', { class: 'scopes' }, h('legend', { text: 'Scopes' }),
        SCOPES.map((s) => h('label', { class: 'check', for: scopeId(s) }, els.scopes[s], ` ${s}`))),
      h('div', { class: 'actions' },
        button('Create token (1 credit, then the list: 1 more)', { id: 'tok-create', class: 'primary' }, create)),
      els.createMsg));
}

function open() {
  if (!loaded) {
    loaded = true;
    refresh();
  }
}

export default { id: 'tokens', title: 'API tokens', mount, open };
