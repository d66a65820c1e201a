// KV: the wallet's groups (GET /kv), the keys of a group page by page (GET /kv/{group}), and
// one key's value: get, set with a TTL, delete (GET, POST, DELETE /kv/{group}/{key}). Group
// and key are percent-encoded; keys and values are shown as text only.

import { call, get, path, query } from './api.js';
import { h, put, say, fail, show, count, msgLine, button, confirmButton, table, field } from './dom.js';

let els;
let loaded = false;
const groups = { cursor: null, page: 0 };
const keys = { group: null, prefix: '', limit: '', cursor: null, page: 0 };

async function listGroups(next) {
  const res = await get(`/kv${query({ cursor: next ? groups.cursor : '' })}`);
  if (!res.ok) return fail(els.groupsMsg, res);
  const body = res.json();
  groups.page = next ? groups.page + 1 : 1;
  groups.cursor = body.cursor ?? null;
  const tbl = table('kv-groups', ['Group', 'Live keys']);
  for (const g of body.groups || []) {
    tbl.tBodies[0].append(h('tr', { dataset: { group: show(g.group) } },
      h('td', null, button(show(g.group), { class: 'link mono', title: 'List its keys (1 credit)' }, () => {
        els.listGroup.value = g.group;
        els.listPrefix.value = '';
        return listKeys(false);
      })),
      h('td', { class: 'num', text: show(g.keys) })));
  }
  put(els.groupsBox, (body.groups || []).length ? tbl : h('p', { class: 'empty', text: 'No live keys in any group.' }));
  say(els.groupsMsg, `Page ${groups.page}: ${count((body.groups || []).length, 'group')}${groups.cursor ? ', more on the next page' : ''}.`);
  els.groupsNext.hidden = !groups.cursor;
}

function keyRow(group, k) {
  return h('tr', { dataset: { key: show(k.key) } },
    h('td', { class: 'mono key', text: show(k.key) }),
    h('td', { class: 'mono nowrap expires', text: show(k.expires) }),
    h('td', { class: 'row-actions' }, h('div', { class: 'actions' },
      button('View', { class: 'small', 'data-action': 'view' }, () => getValue(group, k.key)),
      confirmButton('Delete', { class: 'small danger', 'data-action': 'delete' }, () => del(group, k.key)))));
}

async function listKeys(next) {
  if (!next) {
    keys.group = els.listGroup.value;
    keys.prefix = els.listPrefix.value;
    keys.limit = els.listLimit.value.trim();
  }
  const q = query({ prefix: keys.prefix, cursor: next ? keys.cursor : '', limit: keys.limit });
  const res = await get(`${path('kv', keys.group)}${q}`);
  if (!res.ok) return fail(els.keysMsg, res);
  const body = res.json();
  keys.page = next ? keys.page + 1 : 1;
  keys.cursor = body.cursor ?? null;
  const tbl = table('kv-keys', ['Key', 'Expires (UTC)', '']);
  const group = keys.group;
  for (const k of body.keys || []) tbl.tBodies[0].append(keyRow(group, k));
  put(els.keysBox, (body.keys || []).length ? tbl : h('p', { class: 'empty', text: 'No live keys here.' }));
  put(els.keysTitle, 'Keys of ', h('span', { class: 'mono', id: 'kv-keys-group', text: group }));
  say(els.keysMsg, `Page ${keys.page}: ${count((body.keys || []).length, 'key')}${keys.cursor ? ', more on the next page' : ''}.`);
  els.keysNext.hidden = !keys.cursor;
}

function target() {
  return { group: els.group.value, key: els.key.value };
}

async function getValue(group, key) {
  const res = await get(path('kv', group, key));
  if (!res.ok) {
    put(els.value);
    return fail(els.msg, res);
  }
  els.group.value = group;
  els.key.value = key;
  els.valueInput.value = res.text;
  put(els.valueOf, 'Value of ', h('span', { class: 'mono', text: `${group} / ${key}` }));
  put(els.value, res.text);
  els.valueBox.hidden = false;
  say(els.msg, `Read ${res.text.length} characters.`);
}

async function set() {
  const { group, key } = target();
  const ttl = els.ttl.value.trim();
  const res = await call('POST', `${path('kv', group, key)}${query({ ttl })}`, { body: els.valueInput.value });
  if (!res.ok) return fail(els.msg, res);
  say(els.msg, res.text);
  // show it in its group's listing (one more listing call)
  if (keys.group !== group) {
    els.listGroup.value = group;
    els.listPrefix.value = '';
  }
  await listKeys(false);
}

async function del(group, key) {
  const res = await call('DELETE', path('kv', group, key));
  if (!res.ok) return fail(els.msg, res);
  say(els.msg, `${res.text}: deleted ${key} from ${group}.`);
  if (keys.group === group) {
    for (const row of els.keysBox.querySelectorAll('tr[data-key]')) {
      if (row.dataset.key === key) row.remove();
    }
  }
  if (els.group.value === group && els.key.value === key) {
    put(els.value);
    els.valueBox.hidden = true;
  }
}

function mount(panel) {
  els = {
    groupsBox: h('div', { class: 'table-box' }),
    groupsMsg: msgLine('kv-groups-msg'),
    keysBox: h('div', { class: 'table-box' }),
    keysMsg: msgLine('kv-keys-msg'),
    keysTitle: h('h3', { text: 'Keys of a group' }),
    listGroup: h('input', { type: 'text', value: 'default', maxlength: '30', spellcheck: 'false' }),
    listPrefix: h('input', { type: 'text', maxlength: '30', spellcheck: 'false' }),
    listLimit: h('input', { type: 'number', min: '1', max: '1000', value: '20' }),
    group: h('input', { type: 'text', value: 'default', maxlength: '30', spellcheck: 'false' }),
    key: h('input', { type: 'text', maxlength: '30', spellcheck: 'false' }),
    ttl: h('input', { type: 'number', min: '1', max: '2592000', placeholder: '30 days' }),
    valueInput: h('textarea', { rows: '4', spellcheck: 'false' }),
    msg: msgLine('kv-msg'),
    valueOf: h('h3', { id: 'kv-value-of' }),
    value: h('pre', { id: 'kv-value', 'data-testid': 'kv-value', class: 'value' }),
  };
  els.valueBox = h('div', { class: 'value-box', hidden: true }, els.valueOf, els.value);
  els.groupsNext = button('Next page (1 credit)', { id: 'kv-groups-next', hidden: true }, () => listGroups(true));
  els.keysNext = button('Next page (1 credit)', { id: 'kv-keys-next', 'data-testid': 'kv-keys-next', hidden: true },
    () => listKeys(true));

  panel.append(
    h('div', { class: 'grid-2' },
      h('div', { class: 'card' },
        h('div', { class: 'card-head' },
          h('h2', { text: 'Groups' }),
          button('List groups (1 credit)', { id: 'kv-groups-load' }, () => listGroups(false))),
        els.groupsMsg, els.groupsBox, els.groupsNext),
      h('div', { class: 'card' },
        h('h2', { text: 'A key' }),
        h('p', { class: 'hint', text: 'Get, set and delete cost 1 credit each; set lists the key\'s group again (1 more). '
          + 'TTL in seconds, 1 to 2592000; empty means 30 days.' }),
        h('div', { class: 'row' },
          field('kv-group', 'Group', els.group),
          field('kv-key', 'Key', els.key),
          field('kv-ttl', 'TTL (s)', els.ttl, null, 'narrow')),
        field('kv-value-input', 'Value', els.valueInput),
        h('div', { class: 'actions' },
          button('Get', { id: 'kv-get' }, () => getValue(target().group, target().key)),
          button('Set', { id: 'kv-set', class: 'primary' }, set),
          confirmButton('Delete', { id: 'kv-delete' }, () => del(target().group, target().key))),
        els.msg, els.valueBox)),
    h('div', { class: 'card' },
      els.keysTitle,
      h('div', { class: 'row' },
        field('kv-list-group', 'Group', els.listGroup),
        field('kv-list-prefix', 'Key prefix', els.listPrefix),
        field('kv-list-limit', 'Keys a page', els.listLimit, null, 'narrow'),
        h('div', { class: 'field end' }, button('List keys (1 credit a page)', { id: 'kv-list' }, () => listKeys(false)))),
      els.keysMsg, els.keysBox, els.keysNext));
}

function open() {
  if (!loaded) {
    loaded = true;
    listGroups(false);
  }
}

export default { id: 'kv', title: 'KV', mount, open };
