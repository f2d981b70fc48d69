// The sections of the edit dialogs that change relations: a role's ACLs and inherited
// roles, an administrator's roles (and the ACLs they give), a disk image's tags.
import {call} from './api.js';
import {h, clear, uid, field} from './dom.js';
import {session} from './session.js';

// A searchable list of checkboxes; `changes()` tells what was ticked and unticked.
function checklist(legend, {disabled = false, note} = {}) {
  const filterBox = h('input', {type: 'search', placeholder: 'Filter…'});
  const list = h('ul', {class: 'checklist', role: 'list'}, h('li', {class: 'muted'}, 'Loading…'));
  const boxes = [];
  filterBox.addEventListener('input', () => {
    const typed = filterBox.value.trim().toLowerCase();
    for (const {item, text} of boxes) item.hidden = typed !== '' && !text.includes(typed);
  });
  const el = h('fieldset', {class: 'relations'}, h('legend', {}, legend),
    note ? h('p', {class: 'muted'}, note) : null,
    field(`Filter ${legend.toLowerCase()}`, filterBox), list);
  return {
    el,
    fill(items) {  // [{value, label, detail, checked}]
      boxes.length = 0;
      clear(list, items.map((it) => {
        const id = uid('chk');
        const detail = it.detail ? h('small', {class: 'muted', id: uid('detail')}, it.detail) : null;
        const box = h('input', {type: 'checkbox', id, checked: it.checked, disabled, value: String(it.value),
          'aria-describedby': detail ? detail.id : null});
        const item = h('li', {}, box, h('label', {for: id}, it.label), detail);
        boxes.push({item, box, initial: Boolean(it.checked), value: it.value,
          text: `${it.label} ${it.detail || ''}`.toLowerCase()});
        return item;
      }));
      if (!items.length) list.append(h('li', {class: 'muted'}, 'None'));
    },
    failed(error) { clear(list, h('li', {class: 'muted'}, error.message)); },
    changes() {
      return {
        on: boxes.filter((b) => b.box.checked && !b.initial).map((b) => b.value),
        off: boxes.filter((b) => !b.box.checked && b.initial).map((b) => b.value),
      };
    },
  };
}

function roleItems(checkedIds, exceptId) {
  return call('role_get_list', {fields: ['id', 'name', 'tenant_name', 'description'], block: 1000,
    order_by: {field: 'name', order: '-asc'}}).then((answer) => answer.rows
    .filter((r) => r.id !== exceptId)
    .map((r) => ({value: r.id, label: r.name, checked: checkedIds.has(String(r.id)),
      detail: [r.tenant_name === '-' ? 'global' : r.tenant_name, r.description].filter(Boolean).join(', ')})));
}

// A role's own ACLs: ticked = operative (own or inherited); changes become assign/unassign.
export function roleAclsSection(row) {
  const list = checklist('ACLs', {disabled: !session.has('role.update.assign-acl'),
    note: 'Ticked ACLs are the ones this role grants, its own or inherited.'});
  if (row && session.can('get_acls_in_roles')) {
    call('get_acls_in_roles', {filters: {role_id: row.id}, fields: ['name', 'description', 'operative', 'roles'],
      block: 1000, order_by: {field: 'name', order: '-asc'}}).then((answer) => list.fill(answer.rows.map((a) => ({
      value: a.name, label: a.name, checked: Boolean(Number(a.operative)),
      detail: [a.description, Object.keys(a.roles || {}).length && !(String(row.id) in (a.roles || {}))
        ? `from ${Object.values(a.roles).join(', ')}` : ''].filter(Boolean).join(' '),
    })))).catch((e) => list.failed(e));
  } else {
    list.failed(new Error('This administrator may not read ACL lists.'));
  }
  return {
    el: list.el,
    async changes() {
      const {on, off} = list.changes();
      const changes = {};
      if (on.length) changes.assign_acls = on;
      if (off.length) changes.unassign_acls = off;
      return Object.keys(changes).length ? {__acls_changes__: changes} : {};
    },
  };
}

// The roles another role inherits, or an administrator holds (on creation too).
export function rolesSection(row, {owner}) {
  const acl = owner === 'role' ? 'role.update.assign-role' : 'administrator.update.assign-role';
  const list = checklist(owner === 'role' ? 'Inherited roles' : 'Roles', {disabled: !session.has(acl)});
  const current = new Set(Object.keys((row && row.roles) || {}));
  roleItems(current, owner === 'role' && row ? row.id : null).then((items) => list.fill(items))
    .catch((e) => list.failed(e));
  return {
    el: list.el,
    async changes() {
      const {on, off} = list.changes();
      if (!row) return on.length ? {__roles__: on} : {};
      const changes = {};
      if (on.length) changes.assign_roles = on;
      if (off.length) changes.unassign_roles = off;
      return Object.keys(changes).length ? {__roles_changes__: changes} : {};
    },
  };
}

// What an administrator may do, from its roles (read-only).
export function effectiveAclsSection(row) {
  const el = h('details', {class: 'facts'}, h('summary', {}, 'Effective ACLs'), h('p', {class: 'muted'}, 'Loading…'));
  call('get_acls_in_admins', {filters: {admin_id: row.id, operative: 1}, fields: ['name', 'roles'], block: 1000,
    order_by: {field: 'name', order: '-asc'}}).then((answer) => {
    clear(el, h('summary', {}, `Effective ACLs (${answer.total})`),
      h('ul', {class: 'acl-list'}, answer.rows.map((a) => h('li', {}, a.name,
        h('small', {class: 'muted'}, ` — ${Object.values(a.roles || {}).join(', ')}`)))));
  }).catch((e) => clear(el, h('summary', {}, 'Effective ACLs'), h('p', {class: 'muted'}, e.message)));
  return {el, async changes() { return {}; }};
}

const KEPT_TAGS = new Set(['head', 'default']);

// A disk image's tags: remove (not head/default/fixed ones) and add.
export function tagsSection(row) {
  const editable = session.has('di.update.tags', 'di.update.defaults');
  const removed = new Set();
  const added = [];
  const chips = h('ul', {class: 'chips', 'aria-label': 'Tags'});
  const input = h('input', {type: 'text', disabled: !editable});
  function draw() {
    clear(chips, (row.tags || []).filter((t) => !removed.has(t.tag)).map((t) => h('li', {class: 'chip'}, t.tag,
      editable && !Number(t.fixed) && !KEPT_TAGS.has(t.tag)
        ? h('button', {type: 'button', class: 'link', 'aria-label': `Remove tag ${t.tag}`,
          onclick: () => { removed.add(t.tag); draw(); }}, '×') : null)),
    added.map((tag) => h('li', {class: 'chip new'}, tag)));
  }
  draw();
  const addButton = h('button', {type: 'button', disabled: !editable, onclick: () => {
    const tag = input.value.trim();
    if (tag && !added.includes(tag)) added.push(tag);
    input.value = '';
    draw();
  }}, 'Add tag');
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); addButton.click(); } });
  return {
    el: h('fieldset', {}, h('legend', {}, 'Tags'), chips, h('div', {class: 'inline'}, field('New tag', input), addButton)),
    async changes() {
      const changes = {};
      if (added.length) changes.create = added;
      if (removed.size) changes.delete = [...removed];
      return Object.keys(changes).length ? {__tags_changes__: changes} : {};
    },
  };
}
