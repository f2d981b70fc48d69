// The dashboard: VMs and hosts by state, users connected now, blocked objects, hosts with
// their free capacity and the latest failed logins, each a live query on /api/ws.
import {Live} from './api.js';
import {h, clear, describe, formatNumber} from './dom.js';
import {session} from './session.js';
import * as render from './render.js';

function card(title, id, {wide = false} = {}) {
  const body = h('div', {class: 'card-body'}, h('p', {class: 'muted'}, 'Loading…'));
  return {el: h('section', {class: wide ? 'card wide' : 'card', 'aria-labelledby': id}, h('h2', {id}, title), body), body};
}

function figure(label, value, href) {
  const number = h('span', {class: 'figure-value'}, formatNumber(value ?? 0));
  return h('div', {class: 'figure'}, href ? h('a', {href}, number, h('span', {class: 'figure-label'}, label))
    : [number, h('span', {class: 'figure-label'}, label)]);
}

function byState(counts, route) {
  const entries = Object.entries(counts || {}).sort();
  if (!entries.length) return h('p', {class: 'muted'}, 'None');
  return h('ul', {class: 'states'}, entries.map(([state, n]) => h('li', {},
    h('a', {href: `#/${route}?state=${encodeURIComponent(state)}`}, render.state(state), ' ', formatNumber(n)))));
}

export function dashboardPage() {
  const heading = h('h1', {tabindex: '-1'}, 'Dashboard');
  const alert = h('div', {class: 'alert', role: 'alert', hidden: true});
  const grid = h('div', {class: 'cards'});
  const lives = [];
  const failed = (error) => { clear(alert, describe(error)); alert.hidden = false; };

  if (session.can('qvd_objects_statistics')) {
    const vms = card('Virtual machines', 'dash-vms');
    const users = card('Users', 'dash-users');
    const hosts = card('Hosts', 'dash-hosts');
    const images = card('OSFs and disk images', 'dash-images');
    const expiring = card('VMs about to expire', 'dash-expiring');
    grid.append(vms.el, users.el, hosts.el, images.el);
    lives.push(new Live('qvd_objects_statistics', {}, (s) => {
      clear(vms.body, h('div', {class: 'figures'}, figure('in all', s.vms_count, '#/vms'),
        figure('running', s.running_vms_count, '#/vms?state=running'),
        figure('blocked', s.blocked_vms_count, '#/vms?blocked=1')), byState(s.vms_by_state, 'vms'));
      clear(users.body, h('div', {class: 'figures'}, figure('in all', s.users_count, '#/users'),
        figure('connected now', s.connected_users_count),
        figure('blocked', s.blocked_users_count, '#/users?blocked=1')));
      clear(hosts.body, h('div', {class: 'figures'}, figure('in all', s.hosts_count, '#/hosts'),
        figure('running', s.running_hosts_count, '#/hosts?state=running'),
        figure('blocked', s.blocked_hosts_count, '#/hosts?blocked=1')), byState(s.hosts_by_state, 'hosts'));
      clear(images.body, h('div', {class: 'figures'}, figure('OSFs', s.osfs_count, '#/osfs'),
        figure('disk images', s.dis_count, '#/dis'), figure('blocked images', s.blocked_dis_count, '#/dis?blocked=1')));
      const soon = s.vms_with_expiration_date || [];
      if (soon.length) {
        if (!expiring.el.isConnected) grid.append(expiring.el);
        clear(expiring.body, h('ul', {}, soon.map((v) => h('li', {}, h('a', {href: `#/vms?name=${encodeURIComponent(v.name)}`}, v.name), ` — ${v.expiration}`))));
      } else {
        expiring.el.remove();
      }
    }, failed));
  }

  if (session.can('host_get_list')) {
    const load = card('Host load', 'dash-load', {wide: true});
    grid.append(load.el);
    lives.push(new Live('host_get_list', {fields: ['id', 'name', 'state', 'blocked', 'usable_ram', 'usable_cpu', 'number_of_vms_connected'],
      order_by: {field: 'name', order: '-asc'}, block: 10}, (answer) => {
      if (!answer.rows.length) { clear(load.body, h('p', {class: 'muted'}, 'No hosts yet.')); return; }
      clear(load.body, h('div', {class: 'table-wrap'}, h('table', {class: 'compact'}, h('caption', {class: 'sr-only'}, 'Hosts and their free capacity'),
        h('thead', {}, h('tr', {}, ['Host', 'State', 'Free RAM', 'Free CPU', 'Sessions'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, answer.rows.map((r) => h('tr', {}, h('td', {}, r.name, r.blocked ? [' ', render.blocked(1)] : ''),
          h('td', {}, render.state(r.state)), h('td', {}, render.megabytes(r.usable_ram)),
          h('td', {}, render.share(r.usable_cpu)), h('td', {}, formatNumber(r.number_of_vms_connected))))))),
      answer.total > answer.rows.length ? h('p', {}, h('a', {href: '#/hosts'}, `All ${formatNumber(answer.total)} hosts`)) : null);
    }, failed));
  }

  if (session.can('log_get_list')) {
    const logins = card('Recent failed logins', 'dash-logins');
    grid.append(logins.el);
    lives.push(new Live('log_get_list', {
      filters: ['action', 'login', 'status', {'!=': 0}],
      fields: ['time', 'admin_name', 'tenant_name', 'ip', 'status'],
      order_by: {field: 'id', order: '-desc'}, block: 5,
    }, (answer) => {
      if (!answer.rows.length) { clear(logins.body, h('p', {class: 'muted'}, 'None.')); return; }
      clear(logins.body, h('ul', {class: 'events'}, answer.rows.map((r) => h('li', {},
        h('strong', {}, r.admin_name || '(unknown)'), r.tenant_name ? ` @ ${r.tenant_name}` : '',
        ` from ${r.ip || '?'} at ${r.time} `, render.status(r.status)))),
      h('p', {}, h('a', {href: '#/log?action=login&status=failed'}, 'All logins in the audit log')));
    }, failed));
  }

  if (!grid.children.length) grid.append(h('p', {}, 'Your roles give you no dashboard figures; use the menu.'));
  const element = h('section', {class: 'page'}, h('div', {class: 'page-head'}, heading), alert, grid);
  return {element, focus: () => heading.focus(), destroy: () => lives.forEach((l) => l.close())};
}
