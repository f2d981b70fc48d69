// The console's only way to the server: QVD's administration API (/api, /api/ws,
// /api/di/*), with the session in its HttpOnly cookie (the console never sees the sid).

const SOURCE = {source: 'WAT'};
// Answers that mean "this session is over": no cookie, unknown, expired, tenant blocked.
export const SESSION_LOST = new Set([3100, 3200, 3300, 3500]);

export class ApiError extends Error {
  constructor(body) {
    super(body.message || 'The API refused the request');
    this.status = body.status;
    this.info = body.additional_info;
    this.failures = body.failures || null;
  }

  // The refusal in words: the API's message, its detail, and each failed object's reason.
  describe() {
    const parts = [this.message];
    if (this.info && this.info !== 'No additional information') parts.push(`: ${this.info}`);
    if (this.failures) {
      const items = Object.entries(this.failures).map(
        ([id, f]) => `#${id}: ${f.message}${f.additional_info && f.additional_info !== 'No additional information' ? ` (${f.additional_info})` : ''}`);
      parts.push(` — ${items.join('; ')}`);
    }
    return parts.join('');
  }
}

let sessionLost = () => {};
// Who to tell when the server says the session is over (the app goes back to the login page).
export function onSessionLost(handler) { sessionLost = handler; }

function checked(body, {login = false} = {}) {
  if (body && typeof body === 'object' && body.status === 0) return body;
  const error = new ApiError(body && typeof body === 'object' ? body
    : {status: -1, message: 'The API answered something that is not JSON'});
  if (!login && SESSION_LOST.has(error.status)) sessionLost(error);
  throw error;
}

async function post(path, payload, options) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: {'content-type': 'application/json'}, body: JSON.stringify(payload),
    });
  } catch (e) {
    throw new ApiError({status: -1, message: 'The API cannot be reached; check the network and try again'});
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* handled by checked() */ }
  if (!body && response.status === 413) {
    body = {status: -1, message: 'The request is larger than this API accepts'};
  }
  return checked(body, options);
}

// One action: call('vm_get_list', {filters, fields, order_by, offset, block}).
export function call(action, query = {}, options = {}) {
  return post('/api/', {action, ...query, parameters: SOURCE}, options);  // '/api/': the cookie's path
}

// A note (no secret) that this browser logged in: without it there is no session cookie to
// resume, and asking would only leave a failed login in the audit log.
const LOGGED_IN = 'qvd-console-logged-in';

export async function login(loginName, password, tenant) {
  const query = {login: loginName, password};
  if (tenant !== undefined) query.tenant = tenant;
  const setup = await call('current_admin_setup', query, {login: true});
  localStorage.setItem(LOGGED_IN, '1');
  return setup;
}

// The session the cookie names, if this browser has one (null if it never logged in);
// an ApiError if the session is over.
export async function resume() {
  if (!localStorage.getItem(LOGGED_IN)) return null;
  return call('current_admin_setup', {}, {login: true});
}

export async function info() {
  const response = await fetch('/api/info', {cache: 'no-store'});
  return checked(await response.json(), {login: true});
}

export function logout() {
  localStorage.removeItem(LOGGED_IN);
  return post('/api/logout', {}, {login: true});
}

// A disk image from a file of the staging folder (the copy goes on in the background).
export function fromStaging(args) {
  return post('/api/di/staging', {action: 'di_create', arguments: args, parameters: SOURCE});
}

// A disk image from a file of this computer; `progress(sent, total)` as it goes up.
export function upload(args, file, progress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('arguments', JSON.stringify(args));
    form.append('parameters', JSON.stringify(SOURCE));
    form.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/di/upload');
    xhr.withCredentials = true;
    xhr.upload.addEventListener('progress', (e) => progress(e.loaded, e.total || file.size));
    xhr.addEventListener('load', () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* below */ }
      if (!body && xhr.status === 413) body = {status: -1, message: 'The file is larger than this API accepts (api.upload.max_size)'};
      try { resolve(checked(body)); } catch (e) { reject(e); }
    });
    xhr.addEventListener('error', () => reject(new ApiError({status: -1, message: 'The upload was interrupted'})));
    xhr.send(form);
  });
}

// Watches the connection state of every live query, for the header's indicator.
const liveQueries = new Set();
let liveListener = () => {};
export function onLiveChange(listener) { liveListener = listener; }
function liveChanged() {
  const states = [...liveQueries].map((q) => q.connected);
  liveListener(states.length === 0 ? 'idle' : states.every(Boolean) ? 'live' : 'reconnecting');
}

// A query that keeps itself up to date: /api/ws answers at once and again after every
// change the database announces.  Reconnects (with a growing pause) if the socket drops.
export class Live {
  constructor(action, query, onAnswer, onError) {
    this.action = action;
    this.query = query;
    this.onAnswer = onAnswer;
    this.onError = onError || (() => {});
    this.socket = null;
    this.closed = false;
    this.connected = false;
    this.retry = 0;
    this.timer = null;
    liveQueries.add(this);
    this.open();
  }

  url() {
    const params = new URLSearchParams({action: this.action, parameters: JSON.stringify(SOURCE)});
    for (const [key, value] of Object.entries(this.query)) {
      if (value === undefined || value === null) continue;
      params.set(key, typeof value === 'string' || typeof value === 'number' ? String(value) : JSON.stringify(value));
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/api/ws?${params}`;
  }

  open() {
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.connected = true;
      this.retry = 0;
      socket.send('HI');  // QVD's keep-alive: the server answers AKN 25 s later
      liveChanged();
    });
    socket.addEventListener('message', (event) => {
      if (this.closed) return;
      if (event.data === 'AKN') { socket.send('AKN'); return; }
      let body;
      try { body = JSON.parse(event.data); } catch (e) { return; }
      try {
        this.onAnswer(checked(body));
      } catch (e) {
        if (e instanceof ApiError) {
          if (!SESSION_LOST.has(e.status)) this.onError(e);
          this.close();
        } else {
          throw e;
        }
      }
    });
    socket.addEventListener('close', () => {
      this.connected = false;
      if (this.closed || this.socket !== socket) return;
      liveChanged();
      const pause = Math.min(15000, 1000 * 2 ** this.retry);
      this.retry += 1;
      this.timer = setTimeout(() => { if (!this.closed) this.open(); }, pause);
    });
  }

  close() {
    this.closed = true;
    this.connected = false;
    clearTimeout(this.timer);
    liveQueries.delete(this);
    if (this.socket) this.socket.close();
    liveChanged();
  }
}
