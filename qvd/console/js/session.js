// Who is logged in, and what the API lets them do.  The API decides (current_admin_setup's
// allowed_actions and acls); the console only hides what would be refused anyway.

export const session = {
  info: null,    // /api/info
  setup: null,   // current_admin_setup
  actions: new Set(),
  acls: new Set(),

  start(setup) {
    this.setup = setup;
    this.actions = new Set(setup.allowed_actions || []);
    this.acls = new Set(setup.acls || []);
  },

  end() {
    this.setup = null;
    this.actions = new Set();
    this.acls = new Set();
  },

  get active() { return this.setup !== null; },
  get superadmin() { return this.setup !== null && this.setup.tenant_id === 0; },
  get multitenant() { return Boolean(this.info && this.info.multitenant); },
  get pageSize() { return Number(this.setup && (this.setup.admin_block || this.setup.tenant_block)) || 25; },

  // May this administrator call `action` at all?
  can(action) { return this.actions.has(action); },
  // Does this administrator hold an ACL (for the arguments and nested changes the API checks
  // by ACL name, such as vm.create.di-tag or role.update.assign-acl)?
  has(...names) { return names.some((name) => this.acls.has(name)); },
};
