// The console's frame: logging in and out, the menu, and which page the address shows
// (#/vms?state=running).  A session the API ends brings the login page back, saying why.
import * as api from './api.js';
import {h, clear, field, describe} from './dom.js';
import {session} from './session.js';
import {listPage} from './list.js';
import {dashboardPage} from './dashboard.js';
import {configPage} from './config.js';
import {BY_ROUTE} from './objects.js';

const MENU = [
  ['dashboard', 'Dashboard', null],
  ['vms', 'Virtual machines', 'vm_get_list'],
  ['users', 'Users', 'user_get_list'],
  ['hosts', 'Hosts', 'host_get_list'],
  ['osfs', 'OS flavours', 'osf_get_list'],
  ['dis', 'Disk images', 'di_get_list'],
  ['tenants', 'Tenants', 'tenant_get_list'],
  ['administrators', 'Administrators', 'administrator_get_list'],
  ['roles', 'Roles', 'role_get_list'],
  ['properties', 'Properties', 'property_get_list'],
  ['config', 'Configuration', 'config_get'],
  ['log', 'Audit log', 'log_get_list'],
];

const root = document.getElementById('app');
let page = null;
let returnTo = null;

function route() {
  const hash = location.hash.startsWith('#/') ? location.hash.slice(2) : 'dashboard';
  const [name, query] = hash.split('?');
  return {name: name || 'dashboard', params: new URLSearchParams(query || '')};
}

function leavePage() {
  if (page) page.destroy();
  page = null;
  for (const open of document.querySelectorAll('dialog')) { open.close(); open.remove(); }
}

// -- logging in ------------------------------------------------------------------------

function showLogin(reason) {
  leavePage();
  session.end();
  document.title = 'Log in — QVD administration';
  const multitenant = session.multitenant;
  const tenant = h('input', {type: 'text', name: 'tenant', autocomplete: 'organization', required: true});
  const login = h('input', {type: 'text', name: 'login', autocomplete: 'username', required: true});
  const password = h('input', {type: 'password', name: 'password', autocomplete: 'current-password', required: true});
  const alert = h('div', {class: 'alert', role: 'alert', hidden: !reason}, reason || '');
  const submit = h('button', {type: 'submit', class: 'primary'}, 'Log in');
  const form = h('form', {class: 'login-form', 'aria-labelledby': 'login-title'},
    h('h1', {id: 'login-title'}, 'QVD administration'),
    alert,
    multitenant ? field('Tenant', tenant, 'Superadministrators: *') : null,
    field('Login', login),
    field('Password', password),
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.hidden = true;
    submit.disabled = true;
    try {
      const setup = await api.login(login.value.trim(), password.value, multitenant ? tenant.value.trim() : undefined);
      session.start(setup);
      const target = returnTo || '#/dashboard';
      returnTo = null;
      if (location.hash === target) showPage(); else location.hash = target;
    } catch (e) {
      clear(alert, describe(e));
      alert.hidden = false;
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  clear(root, h('main', {id: 'main', class: 'login'}, form));
  (multitenant ? tenant : login).focus();
}

// -- the frame around pages --------------------------------------------------------------

function frame() {
  const nav = h('nav', {id: 'nav', 'aria-label': 'Sections'},
    h('ul', {}, MENU.filter(([, , action]) => !action || session.can(action)).map(([name, label]) =>
      h('li', {}, h('a', {href: `#/${name}`, dataset: {route: name}}, label)))));
  const toggle = h('button', {type: 'button', class: 'menu-toggle', 'aria-expanded': 'false', 'aria-controls': 'nav'}, 'Menu');
  toggle.addEventListener('click', () => {
    const open = nav.classList.toggle('open');
    toggle.setAttribute('aria-expanded', String(open));
    if (open) nav.querySelector('a')?.focus();
  });
  nav.addEventListener('click', (event) => {
    if (event.target.closest('a')) { nav.classList.remove('open'); toggle.setAttribute('aria-expanded', 'false'); }
  });
  const live = h('span', {class: 'live', role: 'status'}, '');
  api.onLiveChange((state) => {
    live.className = `live is-${state}`;
    live.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : '';
  });
  const logout = h('button', {type: 'button', class: 'logout'}, 'Log out');
  logout.addEventListener('click', async () => {
    try { await api.logout(); } catch (e) { /* the session is gone either way */ }
    showLogin('You have logged out.');
  });
  const who = session.setup;
  const main = h('main', {id: 'main', tabindex: '-1'});
  clear(root,
    h('a', {class: 'skip', href: '#main', onclick: (e) => { e.preventDefault(); main.focus(); }}, 'Skip to content'),
    h('header', {class: 'top'}, toggle, h('span', {class: 'brand'}, 'QVD'),
      h('span', {class: 'who'}, who.admin_name, session.multitenant ? h('span', {class: 'muted'}, ` @ ${who.tenant_name}`) : ''),
      live, logout),
    h('div', {class: 'body'}, nav, main),
    h('div', {id: 'toasts', role: 'status', 'aria-live': 'polite'}));
  return main;
}

function makePage(name, params) {
  if (name === 'dashboard') return dashboardPage();
  if (name === 'config' && session.can('config_get')) return configPage(params);
  const spec = BY_ROUTE.get(name);
  if (spec && session.can(spec.list)) return listPage(spec, params);
  const heading = h('h1', {tabindex: '-1'}, 'Not available');
  return {element: h('section', {class: 'page'}, heading,
    h('p', {}, 'This page does not exist, or your roles do not let you see it. ', h('a', {href: '#/dashboard'}, 'Back to the dashboard'))),
  focus: () => heading.focus(), destroy: () => {}};
}

function showPage() {
  if (!session.active) return;
  const {name, params} = route();
  leavePage();
  let main = document.getElementById('main');
  if (!main || !main.closest('.body')) main = frame();
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.route === name) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  page = makePage(name, params);
  clear(main, page.element);
  const label = MENU.find(([n]) => n === name);
  document.title = `${label ? label[1] : 'QVD'} — QVD administration`;
  page.focus();
}

export async function start() {
  api.onSessionLost((error) => {
    if (!session.active) return;
    returnTo = location.hash || null;
    showLogin(describe(error));
  });
  window.addEventListener('hashchange', () => {
    if (location.hash.startsWith('#/')) showPage();
  });
  try {
    session.info = await api.info();
  } catch (e) {
    clear(root, h('main', {id: 'main'}, h('h1', {}, 'QVD administration'),
      h('p', {class: 'alert', role: 'alert'}, `The API does not answer: ${describe(e)}`)));
    return;
  }
  returnTo = location.hash.startsWith('#/') ? location.hash : null;
  try {
    const setup = await api.resume();
    if (!setup) { showLogin(); return; }
    session.start(setup);
    returnTo = null;
    showPage();
  } catch (e) {
    showLogin(e.status === 3100 ? undefined : describe(e));  // 3100: the browser dropped the cookie
  }
}
