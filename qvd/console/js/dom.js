// Small DOM helpers: elements from data (never from HTML strings), dialogs, notices.

// h('button', {class: 'x', onclick: f}, 'text', child) -> element.  Text is always text.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  let initial = null;
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'value') initial = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  if (initial !== null) el.value = String(initial);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let counter = 0;
export function uid(prefix = 'id') {
  counter += 1;
  return `${prefix}-${counter}`;
}

// A labelled form control: <div class="field"><label for>..</label><control></div>.
export function field(label, control, hint) {
  control.id = control.id || uid('f');
  const parts = [h('label', {for: control.id}, label), control];
  if (hint) {
    const hintEl = h('small', {id: uid('hint'), class: 'hint'}, hint);
    control.setAttribute('aria-describedby', hintEl.id);
    parts.push(hintEl);
  }
  return h('div', {class: control.type === 'checkbox' ? 'field check' : 'field'}, parts);
}

export function select(options, value, attrs = {}) {
  const el = h('select', attrs,
    options.map(([v, text]) => h('option', {value: String(v)}, text)));
  if (value !== undefined && value !== null) el.value = String(value);
  return el;
}

// A modal dialog (the platform's: focus stays inside, Escape closes it).
// Resolves with what `onSubmit` returns, or null when cancelled.
export function dialog(title, body, {submit = 'Save', onSubmit, wide = false, cancel = 'Cancel'} = {}) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const error = h('div', {class: 'alert', role: 'alert', hidden: true});
    const submitButton = submit ? h('button', {type: 'submit', class: 'primary'}, submit) : null;
    const form = h('form', {method: 'dialog', novalidate: true},
      h('h2', {id: titleId}, title), error, body,
      h('div', {class: 'buttons'},
        h('button', {type: 'button', value: 'cancel', onclick: () => close(null)}, cancel),
        submitButton));
    const el = h('dialog', {'aria-labelledby': titleId, class: wide ? 'wide' : ''}, form);
    let settled = false;
    function close(value) {
      if (settled) return;
      settled = true;
      el.close();
      el.remove();
      resolve(value);
    }
    el.addEventListener('cancel', (event) => { event.preventDefault(); close(null); });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!onSubmit) { close(true); return; }
      error.hidden = true;
      if (submitButton) submitButton.disabled = true;
      try {
        const result = await onSubmit();
        if (result !== undefined) close(result);
      } catch (e) {
        clear(error, describe(e));
        error.hidden = false;
        error.focus?.();
      } finally {
        if (submitButton) submitButton.disabled = false;
      }
    });
    document.body.append(el);
    el.showModal();
  });
}

export async function confirm(title, text, action = 'Confirm') {
  return dialog(title, h('p', {}, text), {submit: action, onSubmit: async () => true});
}

// What went wrong, in words (an ApiError knows how to say it; anything else: its message).
export function describe(error) {
  if (error && typeof error.describe === 'function') return error.describe();
  return (error && error.message) || String(error);
}

// Short-lived confirmations ("3 VMs started"), read out by screen readers.
export function toast(text) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', {class: 'toast'}, text);
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

export function formatNumber(value) {
  return typeof value === 'number' ? value.toLocaleString('en') : String(value ?? '');
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
