// What each kind of object has: its list's columns (API field names), filters, order,
// mass actions, and the fields of its create and edit dialogs.  Which of these an
// administrator sees is the API's answer (allowed_actions, visible fields), not ours.
import {session} from './session.js';
import {openForm, propertiesSection, LANGUAGES} from './forms.js';
import {roleAclsSection, rolesSection, effectiveAclsSection, tagsSection} from './editors.js';
import {openDiskImageDialog} from './images.js';
import * as render from './render.js';
import {h, dialog} from './dom.js';

const VM_STATES = ['stopped', 'starting', 'running', 'stopping', 'zombie', 'debugging'];
const USER_STATES = ['disconnected', 'connecting', 'connected'];
const HOST_STATES = ['stopped', 'starting', 'running', 'stopping', 'lost'];
const DI_STATES = ['new', 'generating', 'uploading', 'upload_stalled', 'verifying', 'ready', 'published', 'fail', 'retired'];

const superadmin = () => session.superadmin;
const nameColumn = {field: 'name', label: 'Name', filter: 'text', order: true, opens: true};
const blockedColumn = {field: 'blocked', label: 'Blocked', filter: 'bool', order: true, render: render.blocked};
const descriptionColumn = {field: 'description', label: 'Description', filter: 'text', order: true};
const tenantColumn = {field: 'tenant_name', label: 'Tenant', filter: 'text', order: true, when: superadmin};
const tenantField = {name: 'tenant_id', label: 'Tenant', type: 'tenant', required: true, create: 'only', when: superadmin};
const nameField = {name: 'name', label: 'Name', required: true};
const descriptionField = {name: 'description', label: 'Description', type: 'textarea'};
const blockedField = {name: 'blocked', label: 'Blocked', type: 'bool'};

function blockActions(key) {
  return [
    {label: 'Block', action: `${key}_update`, arguments: {blocked: 1}, done: 'Blocked'},
    {label: 'Unblock', action: `${key}_update`, arguments: {blocked: 0}, done: 'Unblocked'},
  ];
}

function deleteAction(key, warning) {
  return {label: 'Delete', action: `${key}_delete`, danger: true, clears: true, done: 'Deleted', warning};
}

// The common shape: `create`/`open` dialogs from `form` and `sections(row)`.
function spec(definition) {
  const s = {id: 'id', label: (row) => row.name ?? `#${row.id}`, nouns: `${definition.noun}s`, ...definition};
  s.open = (row) => openForm(s, row, {sections: s.sections ? s.sections(row) : []});
  s.create = s.create ?? {
    allowed: () => session.can(`${s.key}_create`),
    open: () => openForm(s, null, {sections: s.createSections ? s.createSections() : []}),
  };
  return s;
}

function withProperties(kind, more = () => []) {
  return (row) => [...more(row), ...(session.can(`${kind}_get_property_list`) ? [propertiesSection(kind, row)] : [])];
}

export const OBJECTS = [
  spec({
    key: 'vm', route: 'vms', title: 'Virtual machines', noun: 'virtual machine', list: 'vm_get_list', order: 'name',
    columns: [
      nameColumn,
      {field: 'state', label: 'State', filter: VM_STATES, order: true, render: render.state},
      {field: 'user_state', label: 'User state', filter: USER_STATES, order: true, render: render.state},
      {field: 'user_name', label: 'User', filter: 'text', order: true},
      {field: 'osf_name', label: 'OSF', filter: 'text', order: true},
      {field: 'di_tag', label: 'Tag', filter: 'text', order: true},
      {field: 'host_name', label: 'Host', filter: 'text'},
      {field: 'ip', label: 'IP', filter: 'text', order: true},
      blockedColumn,
      {field: 'expiration_hard', label: 'Expires', order: true},
      tenantColumn,
    ],
    actions: [
      {label: 'Start', action: 'vm_start', done: 'Start requested'},
      {label: 'Stop', action: 'vm_stop', done: 'Stop requested'},
      {label: 'Disconnect user', action: 'vm_user_disconnect', done: 'Disconnection requested'},
      ...blockActions('vm'),
      deleteAction('vm', 'Running virtual machines cannot be deleted; stop them first.'),
    ],
    form: [
      nameField,
      {name: 'user_id', label: 'User', type: 'lookup', list: 'user_get_list', required: true, create: 'only',
        hint: 'Type part of the login and choose.'},
      {name: 'osf_id', label: 'OSF', type: 'ref', list: 'osf_get_list', required: true, create: 'only'},
      {name: 'di_tag', label: 'Disk image tag', default: 'default', when: (creating) => !creating || session.has('vm.create.di-tag'),
        hint: 'The VM boots the disk image of its OSF that has this tag.'},
      {name: 'ip', label: 'IP address', edit: 'only'},
      {name: 'expiration_soft', label: 'Soft expiration', type: 'datetime', edit: 'only'},
      {name: 'expiration_hard', label: 'Hard expiration', type: 'datetime', edit: 'only'},
      {name: 'storage', label: 'Storage', edit: 'only'},
      descriptionField,
    ],
    sections: withProperties('vm'),
  }),
  spec({
    key: 'user', route: 'users', title: 'Users', noun: 'user', list: 'user_get_list', order: 'name',
    columns: [
      {...nameColumn, label: 'Login'},
      blockedColumn,
      {field: 'number_of_vms', label: 'VMs'},
      {field: 'number_of_vms_connected', label: 'Connected VMs',
        render: (v) => (Number(v) ? render.state('connected') : '')},
      descriptionColumn,
      tenantColumn,
    ],
    searchLabel: 'Search by login',
    actions: [...blockActions('user'), deleteAction('user', "The users' virtual machines are deleted with them.")],
    form: [
      tenantField,
      {...nameField, label: 'Login'},
      {name: 'password', label: 'Password', type: 'password', required: true,
        editHint: 'Leave empty to keep the current password.'},
      blockedField,
      descriptionField,
    ],
    sections: withProperties('user'),
  }),
  spec({
    key: 'host', route: 'hosts', title: 'Hosts', noun: 'host', list: 'host_get_list', order: 'name',
    columns: [
      nameColumn,
      {field: 'address', label: 'Address', filter: 'text', order: true},
      {field: 'state', label: 'State', filter: HOST_STATES, order: true, render: render.state},
      blockedColumn,
      {field: 'number_of_vms_connected', label: 'Connected VMs', order: true},
      {field: 'usable_ram', label: 'Free RAM', order: true, render: render.megabytes},
      {field: 'usable_cpu', label: 'Free CPU', order: true, render: render.share},
    ],
    actions: [...blockActions('host'), deleteAction('host', 'A running host cannot be deleted.')],
    form: [
      nameField,
      {name: 'address', label: 'IP address', required: true},
      {name: 'frontend', label: 'Frontend (runs an L7R)', type: 'bool', default: 1, create: 'only'},
      {name: 'backend', label: 'Backend (runs VMs)', type: 'bool', default: 1, create: 'only'},
      blockedField,
      descriptionField,
    ],
    sections: withProperties('host'),
  }),
  spec({
    key: 'osf', route: 'osfs', title: 'OS flavours', noun: 'OSF', nouns: 'OSFs', list: 'osf_get_list', order: 'name',
    columns: [
      nameColumn,
      {field: 'memory', label: 'Memory (MB)', filter: 'number', order: true},
      {field: 'user_storage', label: 'User storage (MB)', order: true},
      {field: 'overlay', label: 'Overlay', filter: 'bool', order: true, render: render.yesNo},
      {field: 'number_of_vms', label: 'VMs'},
      {field: 'number_of_dis', label: 'Disk images'},
      tenantColumn,
    ],
    actions: [deleteAction('osf', 'An OSF with virtual machines or disk images cannot be deleted.')],
    form: [
      tenantField,
      nameField,
      {name: 'memory', label: 'Memory (MB)', type: 'number', when: (creating) => !creating || session.has('osf.create.memory')},
      {name: 'user_storage', label: 'User storage (MB)', type: 'number',
        when: (creating) => !creating || session.has('osf.create.user-storage')},
      {name: 'overlay', label: 'Overlay (changes to the image are kept per VM)', type: 'bool', default: 1},
      descriptionField,
    ],
    sections: withProperties('osf'),
  }),
  spec({
    key: 'di', route: 'dis', title: 'Disk images', noun: 'disk image', list: 'di_get_list', order: 'id', desc: true,
    label: (row) => row.disk_image, search: 'disk_image', searchLabel: 'Search by file name',
    columns: [
      {field: 'disk_image', label: 'File', filter: 'text', order: true, opens: true},
      {field: 'version', label: 'Version', filter: 'text', order: true},
      {field: 'osf_name', label: 'OSF', filter: 'text', order: true},
      {field: 'state', label: 'State', filter: DI_STATES, render: render.diState},
      {field: 'tags', label: 'Tags', render: render.tags},
      blockedColumn,
      tenantColumn,
    ],
    filtersOnly: [{field: 'tag', label: 'Tag', filter: 'text'}],
    actions: [...blockActions('di'), deleteAction('di', 'Disk images in use by running VMs cannot be deleted.')],
    create: {allowed: () => session.can('di_create'), open: () => openDiskImageDialog(), label: 'Add disk image'},
    form: [
      {name: 'description', label: 'Description', type: 'textarea'},
      blockedField,
      {name: 'expiration_time_soft', label: 'Soft expiration of VMs on publish (seconds)', type: 'number'},
      {name: 'expiration_time_hard', label: 'Hard expiration of VMs on publish (seconds)', type: 'number'},
    ],
    sections: withProperties('di', (row) => [tagsSection(row)]),
  }),
  spec({
    key: 'tenant', route: 'tenants', title: 'Tenants', noun: 'tenant', list: 'tenant_get_list', order: 'name',
    columns: [
      nameColumn,
      blockedColumn,
      {field: 'language', label: 'Language', order: true},
      {field: 'block', label: 'Page size', order: true},
      descriptionColumn,
    ],
    actions: [...blockActions('tenant'), deleteAction('tenant', 'Everything of the tenant goes with it.')],
    form: [
      nameField,
      {name: 'language', label: 'Language', type: 'select', options: LANGUAGES.slice(0, 3), default: 'auto'},
      {name: 'block', label: 'Rows per page', type: 'number', default: 25},
      blockedField,
      descriptionField,
    ],
  }),
  spec({
    key: 'administrator', route: 'administrators', title: 'Administrators', noun: 'administrator',
    list: 'administrator_get_list', order: 'name',
    columns: [
      nameColumn,
      {field: 'roles', label: 'Roles', render: render.names},
      {field: 'language', label: 'Language', order: true},
      descriptionColumn,
      tenantColumn,
    ],
    filtersOnly: [{field: 'role_name', label: 'Role', filter: 'text'}],
    actions: [deleteAction('administrator')],
    form: [
      tenantField,
      nameField,
      {name: 'password', label: 'Password', type: 'password', required: true,
        editHint: 'Leave empty to keep the current password.'},
      {name: 'language', label: 'Language', type: 'select', options: LANGUAGES, default: 'auto'},
      descriptionField,
    ],
    createSections: () => (session.has('administrator.update.assign-role') ? [rolesSection(null, {owner: 'administrator'})] : []),
    sections: (row) => [rolesSection(row, {owner: 'administrator'}),
      ...(session.can('get_acls_in_admins') ? [effectiveAclsSection(row)] : [])],
  }),
  spec({
    key: 'role', route: 'roles', title: 'Roles', noun: 'role', list: 'role_get_list', order: 'name',
    columns: [
      nameColumn,
      {field: 'roles', label: 'Inherits', render: render.names},
      {field: 'fixed', label: 'Built in', filter: 'bool', order: true, render: render.flag('built in')},
      {field: 'internal', label: 'Internal', filter: 'bool', order: true, render: render.flag('internal')},
      descriptionColumn,
      {...tenantColumn, render: (v) => (v === '-' ? 'global' : v)},
    ],
    actions: [deleteAction('role')],
    form: [tenantField, nameField, descriptionField],
    sections: (row) => [rolesSection(row, {owner: 'role'}), roleAclsSection(row)],
  }),
  spec({
    key: 'property', route: 'properties', title: 'Properties', noun: 'property', nouns: 'properties',
    list: 'property_get_list', order: 'key', search: 'key', searchLabel: 'Search by key',
    label: (row) => row.key,
    columns: [
      {field: 'key', label: 'Key', filter: 'text', order: true, opens: true},
      descriptionColumn,
      ...['vm', 'user', 'host', 'osf', 'di'].map((o) => ({field: `in_${o}`, label: `For ${o.toUpperCase()}s`,
        render: render.flag('yes')})),
      {...tenantColumn, filter: null, order: null},
    ],
    actions: [deleteAction('property', 'The values objects have for it are deleted too.')],
    // the "applies to" boxes are one nested argument
    prepare: (args) => {
      const assign = ['vm', 'user', 'host', 'osf', 'di'].filter((o) => args[`in_${o}`] === 1);
      const rest = Object.fromEntries(Object.entries(args).filter(([k]) => !k.startsWith('in_')));
      return assign.length ? {...rest, __property_assign__: assign} : rest;
    },
    form: [
      tenantField,
      {name: 'key', label: 'Key', required: true},
      descriptionField,
      ...['vm', 'user', 'host', 'osf', 'di'].map((o) => ({name: `in_${o}`, label: `Applies to ${o.toUpperCase()}s`,
        type: 'bool', create: 'only'})),
    ],
  }),
  {
    key: 'log', route: 'log', title: 'Audit log', noun: 'event', list: 'log_get_list', id: 'id',
    order: 'id', desc: true, search: 'admin_name', searchLabel: 'Search by administrator',
    searchHint: 'Administrator contains…',
    label: (row) => `#${row.id}`,
    fields: ['id', 'time', 'admin_name', 'tenant_name', 'action', 'type_of_action', 'qvd_object',
      'object_id', 'object_name', 'status', 'source', 'ip', 'arguments'],
    columns: [
      {field: 'time', label: 'Time', order: true, opens: true},
      {field: 'admin_name', label: 'Administrator', order: true},
      {field: 'action', label: 'Action', filter: 'text', order: true},
      {field: 'qvd_object', label: 'Object type', order: true,
        filter: ['vm', 'user', 'host', 'osf', 'di', 'tenant', 'administrator', 'role', 'config', 'property']},
      {field: 'object_name', label: 'Object', filter: 'text', order: true},
      {field: 'status', label: 'Result', order: true, filter: {ok: 0, failed: {'!=': 0}}, render: render.status},
      {field: 'ip', label: 'Address', filter: 'text', order: true},
      {field: 'source', label: 'Source', order: true},
      {field: 'tenant_name', label: 'Tenant', filter: 'text', order: true, when: superadmin},
    ],
    filtersOnly: [{param: 'since', field: 'time', label: 'Since', filter: 'since'},
      {param: 'until', field: 'time', label: 'Until', filter: 'until'}],
    create: {allowed: () => false},
    open: (row) => dialog(`Event #${row.id}`, h('dl', {class: 'facts'}, Object.entries(row).map(([k, v]) =>
      [h('dt', {}, k.replaceAll('_', ' ')), h('dd', {}, k === 'status' ? render.status(v) : render.text(v))])),
    {submit: null, cancel: 'Close'}),
  },
];

export const BY_ROUTE = new Map(OBJECTS.map((o) => [o.route, o]));
