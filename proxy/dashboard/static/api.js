// The public API of this origin, called with fetch and the pasted token in `x-token`. The token
// lives in sessionStorage only (gone with the tab), never in localStorage, a cookie or a URL.

const STORAGE_KEY = 'echovalue.token';
const listeners = new Set();
let inflight = 0;

/** How many calls are unanswered, on <html data-inflight> (the browser tests wait for 0). */
function track(delta) {
  inflight += delta;
  document.documentElement.dataset.inflight = String(inflight);
}

export const token = {
  get: () => sessionStorage.getItem(STORAGE_KEY),
  set: (value) => sessionStorage.setItem(STORAGE_KEY, value),
  forget: () => sessionStorage.removeItem(STORAGE_KEY),
};

/** fn(res) after every call: the status bar shows x-cost and x-balance of the last one. */
export function onCall(fn) {
  listeners.add(fn);
}

/** A path from segments, each percent-encoded: path('kv', group, key) → /kv/g/k. */
export function path(...segments) {
  return `/${segments.map((s) => encodeURIComponent(s)).join('/')}`;
}

/** A query string from an object; empty and undefined members are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') q.set(name, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

/**
 * One API call. Resolves, never rejects, to
 * {ok, status, text, cost, balance, method, url, json()}: `text` is the body as the API sent it
 * (for an error, its own message: `Insufficient credits`, `Bad Request: …`, `Forbidden`).
 * opts.json sends a JSON body, opts.body a text body (a KV value, byte for byte).
 */
export async function call(method, url, opts = {}) {
  const headers = { 'x-token': token.get() || '' };
  let body;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    headers['content-type'] = 'text/plain; charset=utf-8';
    body = opts.body;
  }
  let res;
  track(1);
  try {
    const resp = await fetch(url, {
      method, headers, body, cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
    res = {
      ok: resp.ok,
      status: resp.status,
      text: await resp.text(),
      cost: resp.headers.get('x-cost'),
      balance: resp.headers.get('x-balance'),
    };
  } catch (e) {
    res = { ok: false, status: 0, text: `The request did not reach the service: ${e.message}`,
      cost: null, balance: null };
  } finally {
    track(-1);
  }
  res.method = method;
  res.url = url;
  res.json = () => JSON.parse(res.text);
  for (const fn of listeners) fn(res);
  return res;
}

export const get = (url) => call('GET', url);
