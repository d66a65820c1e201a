// Wallet: the balance, creation time and hash (GET /token), and the recharge links of the
// tiers (GET /recharge?amount=1|3; 501 until the operator set a tier's link).

import { get, query } from './api.js';
import { h, put, say, fail, show, msgLine, button } from './dom.js';

const TIERS = [1, 3];
let els;
let loaded = false;

function showAnswer(res) {
  loaded = true;
  if (!res.ok) {
    // a refusal of a known wallet still says its balance (x-balance): never show a stale one
    if (res.balance !== null) els.balance.textContent = res.balance;
    fail(els.msg, res);
    return;
  }
  let body;
  try {
    body = res.json();
  } catch {
    say(els.msg, `Unexpected answer: ${res.text}`, 'error');
    return;
  }
  put(els.msg);
  els.balance.textContent = show(body.wallet);
  els.created.textContent = show(body.created);
  els.hash.textContent = show(body.hash);
}

async function refresh() {
  showAnswer(await get('/token'));
}

async function recharge(amount) {
  const res = await get(`/recharge${query({ amount })}`);
  if (!res.ok) {
    fail(els.recharge, res);
    return;
  }
  const link = res.text.trim();
  els.recharge.setAttribute('class', 'msg ok');
  // Only an https link becomes a link; anything else is shown as text.
  if (/^https:\/\//i.test(link)) {
    put(els.recharge, `Payment link for amount ${amount}: `,
      h('a', { href: link, id: 'recharge-link', target: '_blank', rel: 'noopener noreferrer', text: link }));
  } else {
    put(els.recharge, h('span', { id: 'recharge-link', text: link }));
  }
}

function mount(panel) {
  els = {
    balance: h('dd', { id: 'wallet-balance', class: 'big', 'data-testid': 'wallet-balance', text: '–' }),
    created: h('dd', { id: 'wallet-created', 'data-testid': 'wallet-created', text: '–' }),
    hash: h('dd', { id: 'wallet-hash', class: 'mono', 'data-testid': 'wallet-hash', text: '–' }),
    msg: msgLine('wallet-msg'),
    recharge: msgLine('recharge-result'),
  };
  panel.append(
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'Wallet' }),
        button('Refresh balance (1 credit)', { id: 'wallet-refresh' }, refresh)),
      h('dl', { class: 'facts' },
        h('dt', { text: 'Balance (credits)' }), els.balance,
        h('dt', { text: 'Created' }), els.created,
        h('dt', { text: 'Wallet hash' }), els.hash),
      els.msg),
    h('div', { class: 'card' },
      h('h2', { text: 'Recharge' }),
      h('p', { class: 'hint', text: 'Ask for the Stripe payment link of a tier (free). After '
        + 'the payment, the credits arrive in the wallet; the hash above is the reference the '
        + 'link carries, never the token.' }),
      h('div', { class: 'actions' },
        TIERS.map((amount) => button(`Payment link, amount ${amount}`,
          { id: `recharge-${amount}`, 'data-testid': `recharge-${amount}` }, () => recharge(amount)))),
      els.recharge),
  );
}

function open() {
  if (!loaded) refresh();
}

export default { id: 'wallet', title: 'Wallet', mount, open, showAnswer };
