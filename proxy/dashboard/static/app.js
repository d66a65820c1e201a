// The dashboard's shell: the token form, the tabs, the status bar. Each view is a module
// (view-*.js) with {id, title, mount(panel), open()}: mount builds its DOM once, open runs each
// time its tab is shown (the first time it loads what costs one credit; dearer reads wait for
// a button).

import { call, onCall, token } from './api.js';
import { h, put, say, fail } from './dom.js';
import wallet from './view-wallet.js';
import usage from './view-usage.js';
import logs from './view-logs.js';
import kv from './view-kv.js';
import webhooks from './view-webhooks.js';
import tokens from './view-tokens.js';
import settings from './view-settings.js';

const VIEWS = [wallet, usage, logs, kv, webhooks, tokens, settings];
const $ = (id) => document.getElementById(id);

function showStatus(res) {
  const where = res.url.split('?')[0];
  $('status-call').textContent = `${res.method} ${where}${res.url.includes('?') ? '?…' : ''}`;
  $('status-call').title = `${res.method} ${res.url}`;
  $('status-code').textContent = res.status ? String(res.status) : 'no answer';
  $('status-code').className = res.ok ? 'good' : 'bad';
  $('status-cost').textContent = res.cost ?? '–';
  $('status-balance').textContent = res.balance ?? '–';
}

function select(view) {
  for (const v of VIEWS) {
    const on = v === view;
    const tab = $(`tab-${v.id}`);
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${v.id}`).hidden = !on;
  }
  view.open();
}

function buildTabs() {
  const nav = $('tabs');
  const main = $('app');
  for (const view of VIEWS) {
    const tab = h('button', {
      type: 'button', role: 'tab', id: `tab-${view.id}`, 'aria-controls': `view-${view.id}`,
      'aria-selected': 'false', 'data-testid': `tab-${view.id}`, text: view.title,
    });
    tab.addEventListener('click', () => select(view));
    tab.addEventListener('keydown', (e) => {
      const i = VIEWS.indexOf(view);
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = VIEWS[(i + step + VIEWS.length) % VIEWS.length];
      $(`tab-${next.id}`).focus();
      select(next);
    });
    nav.append(tab);
    const panel = h('section', {
      id: `view-${view.id}`, role: 'tabpanel', 'aria-labelledby': `tab-${view.id}`,
      class: 'view', hidden: true,
    });
    main.append(panel);
    view.mount(panel);
  }
}

function signedIn(on) {
  $('signin').hidden = on;
  $('tabs').hidden = !on;
  $('app').hidden = !on;
  $('who').hidden = !on;
}

async function useToken(value) {
  token.set(value);
  // Checks the token by reading the balance. Only 401 means the token is no good: a 402 (an
  // empty wallet) or 403 (a token without the wallet scope) still signs in, and the wallet
  // view shows that answer.
  const res = await call('GET', '/token');
  if (res.status === 401 || res.status === 0) {
    if (res.status === 401) token.forget();
    signedIn(false);
    fail($('token-msg'), res);
    return;
  }
  put($('token-msg'));
  $('token-input').value = '';
  signedIn(true);
  wallet.showAnswer(res);
  select(wallet);
}

function start() {
  onCall(showStatus);
  buildTabs();
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) {
      say($('token-msg'), 'Paste a token first.', 'error');
      return;
    }
    useToken(value);
  });
  $('forget-token').addEventListener('click', () => {
    token.forget();
    // a fresh page: nothing of the wallet (values, a new token) stays in memory or the DOM
    window.location.reload();
  });
  const saved = token.get();
  if (saved) useToken(saved);
  else signedIn(false);
}

start();
