// DOM helpers. Every piece of text reaches the page through text nodes, textContent or
// attribute values, never through innerHTML: keys, values, labels and log paths are user data.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name === 'text') el.textContent = String(value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (['checked', 'disabled', 'value', 'selected', 'hidden', 'readOnly'].includes(name)) {
      el[name] = value;
    } else el.setAttribute(name, value === true ? '' : String(value));
  }
}

function fill(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('td', {class: 'key'}, 'text', otherNode). Strings become text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  return fill(el, children);
}

/** An SVG element (the usage chart). */
export function svg(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  return fill(el, children);
}

/** Replaces the children of el. */
export function put(el, ...children) {
  el.replaceChildren();
  return fill(el, children);
}

/** A value as the API gave it: numbers and strings verbatim, null as an en dash. */
export function show(value) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A labelled input: [label, input] in a div (extra classes: 'narrow'). */
export function field(id, label, input, hint, extraClass) {
  input.id = id;
  return h('div', { class: extraClass ? `field ${extraClass}` : 'field' },
    h('label', { for: id, text: label }), input,
    hint ? h('small', { class: 'hint', id: `${id}-hint`, text: hint }) : null);
}

/** A message line (role status): say(el, 'OK'), or the API's error text with its status. */
export function say(el, text, kind = 'ok') {
  el.setAttribute('class', `msg ${kind}`);
  put(el, text);
}

/** Shows the API's own answer to a failed call: its status and its body, verbatim. */
export function fail(el, res) {
  el.setAttribute('class', 'msg error');
  put(el, h('span', { class: 'status-code', text: res.status || 'network' }), ' ',
    h('span', { class: 'error-text', text: res.text }));
}

/** "1 key", "2 keys". */
export function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

export function msgLine(id) {
  return h('p', { id, class: 'msg', role: 'status', 'aria-live': 'polite', 'data-testid': id });
}

/** A table with a header row; rows are appended to its tbody. */
export function table(id, headings) {
  return h('table', { id, 'data-testid': id },
    h('thead', null, h('tr', null, headings.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody'));
}

/**
 * A button that acts only on a second click within 5 s (deleting, revoking): the first
 * click asks "Confirm …?". Keeps the page free of window.confirm dialogs.
 */
export function confirmButton(label, props, action) {
  let armed = null;
  const btn = h('button', { type: 'button', class: 'danger', ...props, text: label });
  btn.addEventListener('click', async () => {
    if (!armed) {
      btn.textContent = `Confirm ${label.toLowerCase()}?`;
      btn.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        btn.textContent = label;
        btn.classList.remove('armed');
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    btn.textContent = label;
    btn.classList.remove('armed');
    await busy(btn, action);
  });
  return btn;
}

/** Runs action with btn disabled, so a slow call cannot be sent twice by impatience. */
export async function busy(btn, action) {
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
  }
}

export function button(label, props, action) {
  const btn = h('button', { type: 'button', ...props, text: label });
  if (action) btn.addEventListener('click', () => busy(btn, action));
  return btn;
}

/** A JSON text field's value: undefined when empty, else the parsed value or a thrown Error. */
export function parseJSON(name, text) {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${name} is not valid JSON (${e.message}); nothing was sent`);
  }
}
