// Create and edit dialogs built from an object's field list, and the sections some objects
// add (properties, tags, ACLs, roles).  Every value goes to the API as the argument it is.
import {call} from './api.js';
import {h, field, select, dialog, uid, debounce, clear} from './dom.js';
import {session} from './session.js';
import * as render from './render.js';

export const LANGUAGES = [['auto', 'Automatic'], ['en', 'English'], ['es', 'Spanish'], ['default', "The tenant's"]];

function asLocalDateTime(value) {
  return value ? String(value).replace(' ', 'T').slice(0, 16) : '';
}

// Options of a select filled from a list action: [[id, label]].
async function options(list, {tenantNames = session.superadmin, filters} = {}) {
  const fields = ['id', 'name'];
  if (tenantNames) fields.push('tenant_name');
  const answer = await call(list, {fields, filters, order_by: {field: 'name', order: '-asc'}, block: 1000});
  return answer.rows.map((r) => [r.id, r.tenant_name && tenantNames ? `${r.name} (${r.tenant_name})` : r.name]);
}

export async function tenantOptions() {
  const answer = await call('tenant_get_list', {fields: ['id', 'name'], order_by: {field: 'name', order: '-asc'}, block: 1000});
  return answer.rows.map((r) => [r.id, r.id === 0 ? '* (superadministrators)' : r.name]);
}

// One control for one field definition; read() gives the value to send (undefined: none).
export function control(def, value, creating = true) {
  const required = def.required ? {required: true, 'aria-required': 'true'} : {};
  let input;
  let read;
  switch (def.type) {
    case 'bool':
      input = h('input', {type: 'checkbox', name: def.name, checked: Boolean(Number(value))});
      read = () => (input.checked ? 1 : 0);
      break;
    case 'textarea':
      input = h('textarea', {name: def.name, rows: 3, value: value ?? ''});
      read = () => input.value.trim();
      break;
    case 'select':
      input = select(def.options, value ?? def.default, {name: def.name});
      read = () => input.value;
      break;
    case 'datetime':
      input = h('input', {type: 'datetime-local', name: def.name, value: asLocalDateTime(value)});
      read = () => (input.value ? `${input.value.replace('T', ' ')}:00` : '');
      break;
    case 'tenant':
    case 'ref': {
      input = h('select', {name: def.name, ...required}, h('option', {value: ''}, 'Loading…'));
      const load = def.type === 'tenant' ? tenantOptions() : options(def.list, {filters: def.filters});
      load.then((items) => {
        const usable = def.exclude ? items.filter(([id]) => !def.exclude.includes(id)) : items;
        clear(input, h('option', {value: ''}, def.placeholder || 'Choose…'),
          usable.map(([id, label]) => h('option', {value: String(id)}, label)));
        if (value !== undefined && value !== null) input.value = String(value);
      }).catch(() => clear(input, h('option', {value: ''}, 'Cannot load the list')));
      read = () => (input.value === '' ? undefined : Number(input.value));
      break;
    }
    case 'lookup':
      return lookup(def, value);
    default:
      input = h('input', {type: def.type || 'text', name: def.name, value: value ?? '',
        autocomplete: def.type === 'password' ? 'new-password' : 'off', ...required});
      read = () => (def.type === 'number' ? (input.value === '' ? '' : Number(input.value)) : input.value.trim());
  }
  return {el: field(def.label, input, creating ? def.hint : def.editHint || def.hint), read, input, def};
}

// A text box that suggests objects by name (there may be tens of thousands of them) and
// gives their id.
function lookup(def, value) {
  const listId = uid('list');
  const input = h('input', {type: 'text', name: def.name, list: listId, autocomplete: 'off',
    value: value ?? '', required: def.required, 'aria-required': def.required ? 'true' : null});
  const datalist = h('datalist', {id: listId});
  const known = new Map();
  const label = (r) => (session.superadmin && r.tenant_name ? `${r.name} (${r.tenant_name})` : r.name);
  const fields = session.superadmin ? ['id', 'name', 'tenant_name'] : ['id', 'name'];
  const suggest = debounce(async () => {
    const typed = input.value.trim();
    if (!typed || known.has(typed)) return;
    try {
      const answer = await call(def.list, {filters: {name: {'~': `%${typed}%`}}, fields, block: 20,
        order_by: {field: 'name', order: '-asc'}});
      clear(datalist, answer.rows.map((r) => { known.set(label(r), r.id); return h('option', {value: label(r)}); }));
    } catch (e) { /* suggestions are a convenience */ }
  }, 250);
  input.addEventListener('input', suggest);
  async function read() {
    const typed = input.value.trim();
    if (!typed) return undefined;
    if (known.has(typed)) return known.get(typed);
    const answer = await call(def.list, {filters: {name: typed}, fields, block: 2});
    if (answer.rows.length === 1) return answer.rows[0].id;
    throw new Error(answer.rows.length ? `Several objects are named “${typed}”: choose one from the suggestions`
      : `There is no ${def.label.toLowerCase()} named “${typed}”`);
  }
  const wrapper = field(def.label, input, def.hint);
  wrapper.append(datalist);
  return {el: wrapper, read, input, def};
}

function shown(def, creating) {
  if (creating && def.edit === 'only') return false;
  if (!creating && def.create === 'only') return false;
  return !def.when || def.when(creating);
}

// The dialog that creates (row null) or edits one object; resolves true when saved.
export async function openForm(spec, row, {sections = []} = {}) {
  const creating = !row;
  const defs = spec.form.filter((d) => shown(d, creating));
  const controls = defs.map((d) => control(d, creating ? d.default : row[d.source || d.name], creating));
  const body = [];
  if (!creating) body.push(details(spec, row));
  body.push(h('fieldset', {}, h('legend', {}, creating ? 'New' : 'Settings'), controls.map((c) => c.el)));
  for (const section of sections) body.push(section.el);
  const title = creating ? `New ${spec.noun}` : `${spec.noun[0].toUpperCase()}${spec.noun.slice(1)} ${spec.label(row)}`;
  return dialog(title, body, {
    wide: sections.length > 0 || !creating,
    submit: creating ? 'Create' : 'Save',
    onSubmit: async () => {
      const args = {};
      for (const c of controls) {
        const value = await c.read();
        const before = creating ? undefined : row[c.def.source || c.def.name];
        if (creating) {
          if (value !== undefined && value !== '') args[c.def.name] = value;
        } else if (c.def.type === 'password') {
          if (value) args[c.def.name] = value;
        } else if (value !== undefined && String(value) !== String(before ?? (c.def.type === 'bool' ? 0 : ''))) {
          args[c.def.name] = value;
        }
      }
      for (const section of sections) Object.assign(args, await section.changes());
      if (creating) {
        const answer = await call(`${spec.key}_create`, {arguments: spec.prepare ? spec.prepare(args) : args});
        return answer.rows[0] || true;
      }
      if (Object.keys(args).length === 0) return true;
      await call(`${spec.key}_update`, {filters: {[spec.id]: row[spec.id]}, arguments: args});
      return true;
    },
  });
}

// Everything the list answered about the object, read-only.
function details(spec, row) {
  const skip = new Set(['properties', 'tags', 'acls', 'roles', 'time_until_expiration_soft', 'time_until_expiration_hard']);
  const items = Object.entries(row).filter(([k, v]) => !skip.has(k) && v !== null && v !== '' && typeof v !== 'object');
  return h('details', {class: 'facts'}, h('summary', {}, 'Details'),
    h('dl', {}, items.map(([k, v]) => [h('dt', {}, k.replaceAll('_', ' ')), h('dd', {}, render.text(v))])));
}

// Custom properties of one object: the keys declared for its kind, each with its value.
export function propertiesSection(kind, row) {
  const editable = session.has(`${kind}.update.properties`);
  const el = h('fieldset', {}, h('legend', {}, 'Properties'), h('p', {class: 'muted'}, 'Loading…'));
  const inputs = new Map();
  const current = {};
  for (const p of Object.values(row.properties || {})) current[p.key] = p.value;
  call(`${kind}_get_property_list`, {fields: ['key', 'description'], block: 1000}).then((answer) => {
    if (!answer.rows.length) {
      clear(el, h('legend', {}, 'Properties'), h('p', {class: 'muted'}, `No properties are declared for this kind of object (see Properties).`));
      return;
    }
    clear(el, h('legend', {}, 'Properties'), answer.rows.map((p) => {
      const input = h('input', {type: 'text', value: current[p.key] ?? '', disabled: !editable, name: `property-${p.key}`});
      inputs.set(p.key, input);
      return field(p.key, input, p.description);
    }));
  }).catch((e) => clear(el, h('legend', {}, 'Properties'), h('p', {class: 'muted'}, e.message)));
  return {
    el,
    async changes() {
      const set = {};
      const remove = [];
      for (const [key, input] of inputs) {
        const value = input.value.trim();
        if (value === (current[key] ?? '')) continue;
        if (value === '') remove.push(key); else set[key] = value;
      }
      const changes = {};
      if (Object.keys(set).length) changes.set = set;
      if (remove.length) changes.delete = remove;
      return Object.keys(changes).length ? {__properties_changes__: changes} : {};
    },
  };
}
