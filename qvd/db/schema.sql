-- QVD-DB schema 4.3.0: the runtime tables, as QVD 4's qvd-deploy-db creates them.
-- Names, types, nullability, defaults, keys and constraint names follow the
-- reference (SQL::Translator's naming: <table>_fk_<col>, <table>_idx_<col>,
-- unique <table>_<col1>_<col2>).  Foreign keys are DEFERRABLE.
-- Run inside one transaction by qvd.db.deploy; every object is dropped first.

SET CONSTRAINTS ALL DEFERRED;

DROP TABLE IF EXISTS
    host_properties, di_properties, osf_properties, user_properties, vm_properties,
    qvd_object_properties_list, properties_list, user_tokens, user_auth_parameters,
    vm_counters, vm_runtimes, vms, di_runtimes, di_tags, dis, osfs,
    host_counters, host_runtimes, hosts, configs, ssl_configs, versions, log, wat_log,
    users, tenants, user_states, user_cmds, host_states, host_cmds, vm_states, vm_cmds,
    acl_role_relations, role_role_relations, role_administrator_relations, acls, roles,
    wat_setups_by_administrators, wat_setups_by_tenants, views_setups_attributes_administrator,
    views_setups_attributes_tenant, views_setups_properties_administrator,
    views_setups_properties_tenant, administrators, session
    CASCADE;

DROP TYPE IF EXISTS administrator_and_tenant_views_setups_device_type_enum CASCADE;
DROP TYPE IF EXISTS administrator_and_tenant_views_setups_qvd_object_enum CASCADE;
DROP TYPE IF EXISTS administrator_and_tenant_views_setups_view_type_enum CASCADE;
DROP TYPE IF EXISTS log_qvd_object_enum CASCADE;
DROP TYPE IF EXISTS log_type_of_action_enum CASCADE;
DROP TYPE IF EXISTS language_enum CASCADE;
DROP TYPE IF EXISTS user_portal_parameters_enum CASCADE;
DROP TYPE IF EXISTS di_generation_state_enum CASCADE;

CREATE TYPE administrator_and_tenant_views_setups_device_type_enum AS ENUM ('mobile', 'desktop');
CREATE TYPE administrator_and_tenant_views_setups_qvd_object_enum AS ENUM
    ('user', 'vm', 'log', 'host', 'osf', 'di', 'role', 'administrator', 'tenant');
CREATE TYPE administrator_and_tenant_views_setups_view_type_enum AS ENUM ('filter', 'list_column');
CREATE TYPE log_qvd_object_enum AS ENUM
    ('user', 'vm', 'log', 'host', 'osf', 'di', 'role', 'administrator', 'tenant', 'acl',
     'config', 'tenant_view', 'admin_view');
CREATE TYPE log_type_of_action_enum AS ENUM
    ('create', 'create_or_update', 'delete', 'see', 'update', 'exec', 'login');
CREATE TYPE language_enum AS ENUM ('es', 'en', 'auto', 'default');
CREATE TYPE user_portal_parameters_enum AS ENUM
    ('connection', 'audio', 'printers', 'fullscreen', 'share_folders', 'share_usb', 'client',
     'kb_layout');
CREATE TYPE di_generation_state_enum AS ENUM
    ('new', 'generating', 'fail', 'uploading', 'upload_stalled', 'verifying', 'ready',
     'published', 'retired');

-- lookup tables --------------------------------------------------------------

CREATE TABLE user_states (name varchar(20) NOT NULL, PRIMARY KEY (name));
CREATE TABLE user_cmds   (name varchar(20) NOT NULL, PRIMARY KEY (name));
CREATE TABLE host_states (name varchar(20) NOT NULL, PRIMARY KEY (name));
CREATE TABLE host_cmds   (name varchar(20) NOT NULL, PRIMARY KEY (name));
CREATE TABLE vm_states   (name varchar(12) NOT NULL, PRIMARY KEY (name));
CREATE TABLE vm_cmds     (name varchar(20) NOT NULL, PRIMARY KEY (name));

INSERT INTO vm_states (name) VALUES
    ('stopped'), ('starting'), ('running'), ('stopping'), ('zombie'), ('debugging');
INSERT INTO vm_cmds (name) VALUES ('start'), ('stop'), ('busy');
INSERT INTO user_states (name) VALUES ('disconnected'), ('connecting'), ('connected');
INSERT INTO user_cmds (name) VALUES ('abort');
INSERT INTO host_states (name) VALUES ('stopped'), ('starting'), ('running'), ('stopping'), ('lost');
INSERT INTO host_cmds (name) VALUES ('stop');

-- tenants, users -----------------------------------------------------------------

CREATE TABLE tenants (
    id serial NOT NULL,
    name varchar(80) NOT NULL,
    description varchar(32768),
    blocked boolean DEFAULT '0',
    PRIMARY KEY (id),
    CONSTRAINT tenants_name UNIQUE (name)
);

CREATE TABLE users (
    id serial NOT NULL,
    description varchar(32768),
    tenant_id integer NOT NULL,
    login varchar(64) NOT NULL,
    blocked boolean DEFAULT '0' NOT NULL,
    password varchar(64),
    language language_enum DEFAULT 'auto' NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT users_login_tenant_id UNIQUE (login, tenant_id)
);
CREATE INDEX users_idx_tenant_id ON users (tenant_id);

-- hosts ---------------------------------------------------------------------------

CREATE TABLE hosts (
    id serial NOT NULL,
    name varchar(127) NOT NULL,
    description varchar(32768),
    address varchar(127) NOT NULL,
    frontend boolean NOT NULL,
    backend boolean NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT hosts_address UNIQUE (address),
    CONSTRAINT hosts_name UNIQUE (name)
);

CREATE TABLE host_runtimes (
    host_id integer NOT NULL,
    pid integer,
    ok_ts timestamp,
    usable_ram real,
    usable_cpu real,
    state varchar(12) NOT NULL,
    blocked boolean NOT NULL,
    cmd varchar(12),
    PRIMARY KEY (host_id)
);
CREATE INDEX host_runtimes_idx_cmd ON host_runtimes (cmd);
CREATE INDEX host_runtimes_idx_state ON host_runtimes (state);

CREATE TABLE host_counters (
    host_id integer DEFAULT 0 NOT NULL,
    http_requests integer DEFAULT 0 NOT NULL,
    auth_attempts integer DEFAULT 0 NOT NULL,
    auth_ok integer DEFAULT 0 NOT NULL,
    nx_attempts integer DEFAULT 0 NOT NULL,
    nx_ok integer DEFAULT 0 NOT NULL,
    short_sessions integer DEFAULT 0 NOT NULL,
    PRIMARY KEY (host_id)
);

-- OSFs and DIs -------------------------------------------------------------------

CREATE TABLE osfs (
    tenant_id integer NOT NULL,
    id serial NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(32768),
    memory integer NOT NULL,
    use_overlay boolean NOT NULL,
    is_application boolean DEFAULT '0' NOT NULL,
    user_storage_size integer,
    osd_id integer,
    PRIMARY KEY (id),
    CONSTRAINT osfs_name_tenant_id UNIQUE (name, tenant_id)
);
CREATE INDEX osfs_idx_tenant_id ON osfs (tenant_id);

CREATE TABLE dis (
    id serial NOT NULL,
    osf_id integer NOT NULL,
    blocked boolean DEFAULT '0' NOT NULL,
    description varchar(32768),
    path varchar(4096) NOT NULL,
    version varchar(64) NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT dis_osf_id_version UNIQUE (osf_id, version)
);
CREATE INDEX dis_idx_osf_id ON dis (osf_id);

CREATE TABLE di_tags (
    id serial NOT NULL,
    di_id integer NOT NULL,
    tag varchar(1024) NOT NULL,
    fixed boolean DEFAULT '0' NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX di_tags_idx_di_id ON di_tags (di_id);

CREATE TABLE di_runtimes (
    di_id integer NOT NULL,
    state di_generation_state_enum DEFAULT 'new' NOT NULL,
    state_ts integer,
    elapsed_time integer,
    auto_publish integer DEFAULT 0 NOT NULL,
    foreign_id integer,
    expiration_time_soft integer,
    expiration_time_hard integer,
    percentage real DEFAULT 0 NOT NULL,
    error_code integer,
    status_message text,
    PRIMARY KEY (di_id)
);

-- VMs -----------------------------------------------------------------------------

CREATE TABLE vms (
    id serial NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(32768),
    user_id integer NOT NULL,
    osf_id integer NOT NULL,
    di_tag varchar(128) NOT NULL,
    ip varchar(15),
    storage varchar(4096),
    PRIMARY KEY (id),
    CONSTRAINT vms_ip UNIQUE (ip),
    CONSTRAINT vms_name_user_id UNIQUE (name, user_id)
);
CREATE INDEX vms_idx_osf_id ON vms (osf_id);
CREATE INDEX vms_idx_user_id ON vms (user_id);

CREATE TABLE vm_runtimes (
    vm_id integer NOT NULL,
    host_id integer,
    current_osf_id integer,
    current_di_id integer,
    user_ip varchar(15),
    real_user_id integer,
    vm_state varchar(12) NOT NULL,
    vm_state_ts integer,
    vm_cmd varchar(12),
    vm_pid integer,
    user_state varchar(12) NOT NULL,
    user_state_ts integer,
    user_cmd varchar(12),
    vma_ok_ts integer,
    l7r_host_id integer,
    l7r_pid integer,
    vm_address varchar(127),
    vm_vma_port integer,
    vm_x_port integer,
    vm_ssh_port integer,
    vm_vnc_port integer,
    vm_mon_port integer,
    vm_serial_port integer,
    blocked boolean,
    vm_expiration_soft timestamp,
    vm_expiration_hard timestamp,
    PRIMARY KEY (vm_id)
);
CREATE INDEX vm_runtimes_idx_current_di_id ON vm_runtimes (current_di_id);
CREATE INDEX vm_runtimes_idx_current_osf_id ON vm_runtimes (current_osf_id);
CREATE INDEX vm_runtimes_idx_host_id ON vm_runtimes (host_id);
CREATE INDEX vm_runtimes_idx_l7r_host_id ON vm_runtimes (l7r_host_id);
CREATE INDEX vm_runtimes_idx_real_user_id ON vm_runtimes (real_user_id);
CREATE INDEX vm_runtimes_idx_user_cmd ON vm_runtimes (user_cmd);
CREATE INDEX vm_runtimes_idx_user_state ON vm_runtimes (user_state);
CREATE INDEX vm_runtimes_idx_vm_cmd ON vm_runtimes (vm_cmd);
CREATE INDEX vm_runtimes_idx_vm_state ON vm_runtimes (vm_state);

CREATE TABLE vm_counters (
    vm_id integer DEFAULT 0 NOT NULL,
    run_attempts integer DEFAULT 0 NOT NULL,
    run_ok integer DEFAULT 0 NOT NULL,
    PRIMARY KEY (vm_id)
);

-- configuration ---------------------------------------------------------------------

CREATE TABLE configs (
    tenant_id integer NOT NULL,
    key varchar(64) NOT NULL,
    value varchar(4096) NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX configs_idx_tenant_id ON configs (tenant_id);

CREATE TABLE ssl_configs (
    key varchar(64) NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (key)
);

CREATE TABLE versions (
    component varchar(100) NOT NULL,
    version varchar(100) NOT NULL,
    PRIMARY KEY (component)
);

-- custom properties -------------------------------------------------------------------

CREATE TABLE properties_list (
    id serial NOT NULL,
    key varchar(1024) NOT NULL,
    tenant_id integer NOT NULL,
    description varchar(1024),
    PRIMARY KEY (id),
    CONSTRAINT properties_list_key_tenant_id UNIQUE (key, tenant_id)
);
CREATE INDEX properties_list_idx_tenant_id ON properties_list (tenant_id);

CREATE TABLE qvd_object_properties_list (
    id serial NOT NULL,
    property_id integer NOT NULL,
    qvd_object administrator_and_tenant_views_setups_qvd_object_enum NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT qvd_object_properties_list_property_id_qvd_object UNIQUE (property_id, qvd_object)
);
CREATE INDEX qvd_object_properties_list_idx_property_id ON qvd_object_properties_list (property_id);

CREATE TABLE vm_properties (
    vm_id integer NOT NULL,
    property_id integer NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (vm_id, property_id)
);
CREATE INDEX vm_properties_idx_property_id ON vm_properties (property_id);
CREATE INDEX vm_properties_idx_vm_id ON vm_properties (vm_id);

CREATE TABLE user_properties (
    user_id integer NOT NULL,
    property_id integer NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (user_id, property_id)
);
CREATE INDEX user_properties_idx_property_id ON user_properties (property_id);
CREATE INDEX user_properties_idx_user_id ON user_properties (user_id);

CREATE TABLE osf_properties (
    osf_id integer NOT NULL,
    property_id integer NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (osf_id, property_id)
);
CREATE INDEX osf_properties_idx_osf_id ON osf_properties (osf_id);
CREATE INDEX osf_properties_idx_property_id ON osf_properties (property_id);

CREATE TABLE di_properties (
    di_id integer NOT NULL,
    property_id integer NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (di_id, property_id)
);
CREATE INDEX di_properties_idx_di_id ON di_properties (di_id);
CREATE INDEX di_properties_idx_property_id ON di_properties (property_id);

CREATE TABLE host_properties (
    host_id integer NOT NULL,
    property_id integer NOT NULL,
    value varchar(32768) NOT NULL,
    PRIMARY KEY (host_id, property_id)
);
CREATE INDEX host_properties_idx_host_id ON host_properties (host_id);
CREATE INDEX host_properties_idx_property_id ON host_properties (property_id);

-- tokens -------------------------------------------------------------------------------

CREATE TABLE user_auth_parameters (
    id serial NOT NULL,
    parameters json NOT NULL,
    PRIMARY KEY (id)
);

CREATE TABLE user_tokens (
    token varchar(256) NOT NULL,
    user_id integer NOT NULL,
    vm_id integer,
    expiration integer NOT NULL,
    auth_params_id integer,
    multi_use boolean DEFAULT '0' NOT NULL,
    PRIMARY KEY (token)
);
CREATE INDEX user_tokens_idx_auth_params_id ON user_tokens (auth_params_id);
CREATE INDEX user_tokens_idx_user_id ON user_tokens (user_id);
CREATE INDEX user_tokens_idx_vm_id ON user_tokens (vm_id);

-- audit logs (written by the WAT/API, kept for compatibility) ---------------------------

CREATE TABLE log (
    id serial NOT NULL,
    administrator_id integer,
    administrator_name varchar(80),
    tenant_id integer,
    tenant_name varchar(80),
    action varchar(80) NOT NULL,
    type_of_action varchar(80) NOT NULL,
    arguments text,
    qvd_object varchar(80) NOT NULL,
    object_id integer,
    object_name varchar(80),
    time timestamp NOT NULL,
    status integer NOT NULL,
    source varchar(80),
    ip varchar(80),
    superadmin boolean,
    PRIMARY KEY (id)
);

CREATE TABLE wat_log (
    id serial NOT NULL,
    administrator_id integer,
    administrator_name varchar(80),
    tenant_id integer NOT NULL,
    tenant_name varchar(80) NOT NULL,
    action varchar(80) NOT NULL,
    type_of_action varchar(80) NOT NULL,
    arguments text,
    qvd_object administrator_and_tenant_views_setups_qvd_object_enum NOT NULL,
    object_id integer,
    object_name varchar(80),
    time timestamp NOT NULL,
    status integer NOT NULL,
    source varchar(80),
    ip varchar(80),
    superadmin boolean,
    PRIMARY KEY (id)
);

-- foreign keys -------------------------------------------------------------------------

ALTER TABLE users ADD CONSTRAINT users_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON UPDATE CASCADE DEFERRABLE;

ALTER TABLE host_runtimes ADD CONSTRAINT host_runtimes_fk_host_id FOREIGN KEY (host_id)
    REFERENCES hosts (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE host_runtimes ADD CONSTRAINT host_runtimes_fk_state FOREIGN KEY (state)
    REFERENCES host_states (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE host_runtimes ADD CONSTRAINT host_runtimes_fk_cmd FOREIGN KEY (cmd)
    REFERENCES host_cmds (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE host_counters ADD CONSTRAINT host_counters_fk_host_id FOREIGN KEY (host_id)
    REFERENCES hosts (id) ON DELETE CASCADE DEFERRABLE;

ALTER TABLE osfs ADD CONSTRAINT osfs_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE dis ADD CONSTRAINT dis_fk_osf_id FOREIGN KEY (osf_id)
    REFERENCES osfs (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE di_tags ADD CONSTRAINT di_tags_fk_di_id FOREIGN KEY (di_id)
    REFERENCES dis (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE di_runtimes ADD CONSTRAINT di_runtimes_fk_di_id FOREIGN KEY (di_id)
    REFERENCES dis (id) ON DELETE CASCADE DEFERRABLE;

ALTER TABLE vms ADD CONSTRAINT vms_fk_user_id FOREIGN KEY (user_id)
    REFERENCES users (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vms ADD CONSTRAINT vms_fk_osf_id FOREIGN KEY (osf_id)
    REFERENCES osfs (id) ON UPDATE CASCADE DEFERRABLE;

ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_vm_id FOREIGN KEY (vm_id)
    REFERENCES vms (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_host_id FOREIGN KEY (host_id)
    REFERENCES hosts (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_current_osf_id FOREIGN KEY (current_osf_id)
    REFERENCES osfs (id) DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_current_di_id FOREIGN KEY (current_di_id)
    REFERENCES dis (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_real_user_id FOREIGN KEY (real_user_id)
    REFERENCES users (id) DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_vm_state FOREIGN KEY (vm_state)
    REFERENCES vm_states (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_vm_cmd FOREIGN KEY (vm_cmd)
    REFERENCES vm_cmds (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_user_state FOREIGN KEY (user_state)
    REFERENCES user_states (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_user_cmd FOREIGN KEY (user_cmd)
    REFERENCES user_cmds (name) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_runtimes ADD CONSTRAINT vm_runtimes_fk_l7r_host_id FOREIGN KEY (l7r_host_id)
    REFERENCES hosts (id) ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_counters ADD CONSTRAINT vm_counters_fk_vm_id FOREIGN KEY (vm_id)
    REFERENCES vms (id) ON DELETE CASCADE DEFERRABLE;

ALTER TABLE configs ADD CONSTRAINT configs_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON UPDATE CASCADE DEFERRABLE;

ALTER TABLE properties_list ADD CONSTRAINT properties_list_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) DEFERRABLE;
ALTER TABLE qvd_object_properties_list ADD CONSTRAINT qvd_object_properties_list_fk_property_id
    FOREIGN KEY (property_id) REFERENCES properties_list (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_properties ADD CONSTRAINT vm_properties_fk_vm_id FOREIGN KEY (vm_id)
    REFERENCES vms (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE vm_properties ADD CONSTRAINT vm_properties_fk_property_id FOREIGN KEY (property_id)
    REFERENCES qvd_object_properties_list (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE user_properties ADD CONSTRAINT user_properties_fk_user_id FOREIGN KEY (user_id)
    REFERENCES users (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE user_properties ADD CONSTRAINT user_properties_fk_property_id FOREIGN KEY (property_id)
    REFERENCES qvd_object_properties_list (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE osf_properties ADD CONSTRAINT osf_properties_fk_osf_id FOREIGN KEY (osf_id)
    REFERENCES osfs (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE osf_properties ADD CONSTRAINT osf_properties_fk_property_id FOREIGN KEY (property_id)
    REFERENCES qvd_object_properties_list (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE di_properties ADD CONSTRAINT di_properties_fk_di_id FOREIGN KEY (di_id)
    REFERENCES dis (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE di_properties ADD CONSTRAINT di_properties_fk_property_id FOREIGN KEY (property_id)
    REFERENCES qvd_object_properties_list (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE host_properties ADD CONSTRAINT host_properties_fk_host_id FOREIGN KEY (host_id)
    REFERENCES hosts (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE host_properties ADD CONSTRAINT host_properties_fk_property_id FOREIGN KEY (property_id)
    REFERENCES qvd_object_properties_list (id) ON DELETE CASCADE DEFERRABLE;

ALTER TABLE user_tokens ADD CONSTRAINT user_tokens_fk_user_id FOREIGN KEY (user_id)
    REFERENCES users (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE user_tokens ADD CONSTRAINT user_tokens_fk_vm_id FOREIGN KEY (vm_id)
    REFERENCES vms (id) ON DELETE CASCADE DEFERRABLE;
ALTER TABLE user_tokens ADD CONSTRAINT user_tokens_fk_auth_params_id FOREIGN KEY (auth_params_id)
    REFERENCES user_auth_parameters (id) DEFERRABLE;

-- NOTIFY triggers (for the WAT/API; daemons use explicit NOTIFYs).  Unlike
-- QVD 4 the functions do not also LISTEN in the writing session.

CREATE OR REPLACE FUNCTION qvd_vm_tenant(p_user_id integer) RETURNS integer AS $$
    SELECT tenant_id FROM users WHERE id = p_user_id
$$ LANGUAGE sql STABLE;

CREATE OR REPLACE FUNCTION qvd_runtime_vm_tenant(p_vm_id integer) RETURNS integer AS $$
    SELECT u.tenant_id FROM vms v JOIN users u ON u.id = v.user_id WHERE v.id = p_vm_id
$$ LANGUAGE sql STABLE;

CREATE OR REPLACE FUNCTION config_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('qvd_config_changed', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION config_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('qvd_config_changed', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION config_deleted_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('qvd_config_changed', 'tenant_id=' || OLD.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER config_changed_trigger AFTER UPDATE ON configs
    FOR EACH ROW EXECUTE PROCEDURE config_changed_notify();
CREATE TRIGGER config_created_trigger AFTER INSERT ON configs
    FOR EACH ROW EXECUTE PROCEDURE config_created_notify();
CREATE TRIGGER config_deleted_trigger AFTER DELETE ON configs
    FOR EACH ROW EXECUTE PROCEDURE config_deleted_notify();

CREATE OR REPLACE FUNCTION host_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('host_changed', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION host_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('host_created', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION host_deleted_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('host_deleted', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION host_blocked_or_unblocked_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('host_blocked_or_unblocked', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER host_changed_trigger AFTER UPDATE ON hosts
    FOR EACH ROW EXECUTE PROCEDURE host_changed_notify();
CREATE TRIGGER host_created_trigger AFTER INSERT ON hosts
    FOR EACH ROW EXECUTE PROCEDURE host_created_notify();
CREATE TRIGGER host_deleted_trigger AFTER DELETE ON hosts
    FOR EACH ROW EXECUTE PROCEDURE host_deleted_notify();
CREATE TRIGGER host_runtime_changed_trigger AFTER UPDATE OF state ON host_runtimes
    FOR EACH ROW EXECUTE PROCEDURE host_changed_notify();
CREATE TRIGGER host_blocked_or_unblocked_trigger AFTER UPDATE OF blocked ON host_runtimes
    FOR EACH ROW EXECUTE PROCEDURE host_blocked_or_unblocked_notify();

CREATE OR REPLACE FUNCTION user_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('user_changed', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION user_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('user_created', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION user_deleted_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('user_deleted', 'tenant_id=' || OLD.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION user_blocked_or_unblocked_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('user_blocked_or_unblocked', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER user_changed_trigger AFTER UPDATE ON users
    FOR EACH ROW EXECUTE PROCEDURE user_changed_notify();
CREATE TRIGGER user_created_trigger AFTER INSERT ON users
    FOR EACH ROW EXECUTE PROCEDURE user_created_notify();
CREATE TRIGGER user_deleted_trigger AFTER DELETE ON users
    FOR EACH ROW EXECUTE PROCEDURE user_deleted_notify();
CREATE TRIGGER user_blocked_or_unblocked_trigger AFTER UPDATE OF blocked ON users
    FOR EACH ROW EXECUTE PROCEDURE user_blocked_or_unblocked_notify();

CREATE OR REPLACE FUNCTION vm_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('vm_changed', 'tenant_id=' || qvd_vm_tenant(NEW.user_id)); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION vm_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('vm_created', 'tenant_id=' || qvd_vm_tenant(NEW.user_id)); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION vm_deleted_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vm_deleted', 'tenant_id=' || coalesce(qvd_vm_tenant(OLD.user_id)::text, ''));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION vm_blocked_or_unblocked_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vm_blocked_or_unblocked', 'tenant_id=' || qvd_runtime_vm_tenant(NEW.vm_id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION vm_runtime_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vm_changed', 'tenant_id=' || qvd_runtime_vm_tenant(NEW.vm_id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION vm_runtime_desktop_changed_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('desktop_changed',
        'user_id=' || (SELECT user_id FROM vms WHERE id = NEW.vm_id) || ';vm_id=' || NEW.vm_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER vm_changed_trigger AFTER UPDATE ON vms
    FOR EACH ROW EXECUTE PROCEDURE vm_changed_notify();
CREATE TRIGGER vm_created_trigger AFTER INSERT ON vms
    FOR EACH ROW EXECUTE PROCEDURE vm_created_notify();
CREATE TRIGGER vm_deleted_trigger AFTER DELETE ON vms
    FOR EACH ROW EXECUTE PROCEDURE vm_deleted_notify();
CREATE TRIGGER vm_blocked_or_unblocked_trigger AFTER UPDATE OF blocked ON vm_runtimes
    FOR EACH ROW EXECUTE PROCEDURE vm_blocked_or_unblocked_notify();
CREATE TRIGGER vm_runtime_changed_trigger
    AFTER UPDATE OF vm_state, user_state, vm_expiration_soft, vm_expiration_hard ON vm_runtimes
    FOR EACH ROW EXECUTE PROCEDURE vm_runtime_notify();
CREATE TRIGGER vm_desktop_changed_trigger AFTER UPDATE OF vm_state, user_state ON vm_runtimes
    FOR EACH ROW EXECUTE PROCEDURE vm_runtime_desktop_changed_notify();

CREATE OR REPLACE FUNCTION osf_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('osf_changed', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION osf_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('osf_created', 'tenant_id=' || NEW.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION osf_deleted_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('osf_deleted', 'tenant_id=' || OLD.tenant_id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER osf_changed_trigger AFTER UPDATE ON osfs
    FOR EACH ROW EXECUTE PROCEDURE osf_changed_notify();
CREATE TRIGGER osf_created_trigger AFTER INSERT ON osfs
    FOR EACH ROW EXECUTE PROCEDURE osf_created_notify();
CREATE TRIGGER osf_deleted_trigger AFTER DELETE ON osfs
    FOR EACH ROW EXECUTE PROCEDURE osf_deleted_notify();

CREATE OR REPLACE FUNCTION di_changed_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('di_changed', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION di_created_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('di_created', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION di_deleted_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('di_deleted', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION di_blocked_or_unblocked_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('di_blocked_or_unblocked', ''); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER di_changed_trigger AFTER UPDATE ON dis
    FOR EACH ROW EXECUTE PROCEDURE di_changed_notify();
CREATE TRIGGER di_created_trigger AFTER INSERT ON dis
    FOR EACH ROW EXECUTE PROCEDURE di_created_notify();
CREATE TRIGGER di_deleted_trigger AFTER DELETE ON dis
    FOR EACH ROW EXECUTE PROCEDURE di_deleted_notify();
CREATE TRIGGER di_blocked_or_unblocked_trigger AFTER UPDATE OF blocked ON dis
    FOR EACH ROW EXECUTE PROCEDURE di_blocked_or_unblocked_notify();
CREATE TRIGGER di_runtimes_changed_trigger AFTER UPDATE ON di_runtimes
    FOR EACH ROW EXECUTE PROCEDURE di_changed_notify();

-- initial data ---------------------------------------------------------------------------

INSERT INTO tenants (id, name, description) VALUES
    (-1, '-', 'invalid tenant'), (0, '*', 'supertenant'), (1, 'default', 'tenant1');
INSERT INTO configs (tenant_id, key, value) VALUES (-1, 'wat.multitenant', '1');
INSERT INTO versions (component, version) VALUES ('schema', '4.3.0');

-- administration (the API and the WAT) ---------------------------------------------------
-- (Constraint names longer than PostgreSQL's 63 characters are cut by the server.)
-- Administrators, their roles and ACLs, per-tenant and per-administrator WAT settings
-- and column setups, and API sessions; initial rows in admin_data.sql.

CREATE TABLE administrators (
    tenant_id integer NOT NULL,
    id serial NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(32768),
    password varchar(64),
    PRIMARY KEY (id),
    CONSTRAINT administrators_name_tenant_id UNIQUE (name, tenant_id)
);
CREATE INDEX administrators_idx_tenant_id ON administrators (tenant_id);

CREATE TABLE roles (
    id serial NOT NULL,
    tenant_id integer NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(32768),
    internal boolean DEFAULT '0' NOT NULL,
    fixed boolean DEFAULT '0' NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT roles_name_tenant_id UNIQUE (name, tenant_id)
);
CREATE INDEX roles_idx_tenant_id ON roles (tenant_id);

CREATE TABLE acls (
    id serial NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(80),
    PRIMARY KEY (id),
    CONSTRAINT acls_name UNIQUE (name)
);

CREATE TABLE acl_role_relations (
    id serial NOT NULL,
    acl_id integer NOT NULL,
    role_id integer NOT NULL,
    positive boolean NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT acl_role_relations_role_id_acl_id UNIQUE (role_id, acl_id)
);
CREATE INDEX acl_role_relations_idx_acl_id ON acl_role_relations (acl_id);
CREATE INDEX acl_role_relations_idx_role_id ON acl_role_relations (role_id);

CREATE TABLE role_role_relations (
    id serial NOT NULL,
    inheritor_id integer NOT NULL,
    inherited_id integer NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT role_role_relations_inheritor_id_inherited_id UNIQUE (inheritor_id, inherited_id)
);
CREATE INDEX role_role_relations_idx_inheritor_id ON role_role_relations (inheritor_id);
CREATE INDEX role_role_relations_idx_inherited_id ON role_role_relations (inherited_id);

CREATE TABLE role_administrator_relations (
    id serial NOT NULL,
    role_id integer NOT NULL,
    administrator_id integer NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT role_administrator_relations_role_id_administrator_id UNIQUE (role_id, administrator_id)
);
CREATE INDEX role_administrator_relations_idx_role_id ON role_administrator_relations (role_id);
CREATE INDEX role_administrator_relations_idx_administrator_id
    ON role_administrator_relations (administrator_id);

CREATE TABLE wat_setups_by_administrators (
    id serial NOT NULL,
    block integer DEFAULT 10 NOT NULL,
    language language_enum DEFAULT 'auto' NOT NULL,
    administrator_id integer NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT wat_setups_by_administrators_administrator_id UNIQUE (administrator_id)
);
CREATE INDEX wat_setups_by_administrators_idx_administrator_id
    ON wat_setups_by_administrators (administrator_id);

CREATE TABLE wat_setups_by_tenants (
    id serial NOT NULL,
    block integer DEFAULT 10 NOT NULL,
    language language_enum DEFAULT 'auto' NOT NULL,
    tenant_id integer NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT wat_setups_by_tenants_tenant_id UNIQUE (tenant_id)
);
CREATE INDEX wat_setups_by_tenants_idx_tenant_id ON wat_setups_by_tenants (tenant_id);

CREATE TABLE views_setups_attributes_tenant (
    id serial NOT NULL,
    field varchar(64) NOT NULL,
    tenant_id integer NOT NULL,
    visible boolean NOT NULL,
    view_type administrator_and_tenant_views_setups_view_type_enum NOT NULL,
    device_type administrator_and_tenant_views_setups_device_type_enum NOT NULL,
    qvd_object administrator_and_tenant_views_setups_qvd_object_enum NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT views_setups_attributes_tenant_tenant_id_field_view_type_device_type_qvd_object
        UNIQUE (tenant_id, field, view_type, device_type, qvd_object)
);
CREATE INDEX views_setups_attributes_tenant_idx_tenant_id ON views_setups_attributes_tenant (tenant_id);

CREATE TABLE views_setups_attributes_administrator (
    id serial NOT NULL,
    field varchar(64) NOT NULL,
    administrator_id integer NOT NULL,
    visible boolean NOT NULL,
    view_type administrator_and_tenant_views_setups_view_type_enum NOT NULL,
    device_type administrator_and_tenant_views_setups_device_type_enum NOT NULL,
    qvd_object administrator_and_tenant_views_setups_qvd_object_enum NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT views_setups_attributes_administrator_administrator_id_field_view_type_device_type_qvd_object
        UNIQUE (administrator_id, field, view_type, device_type, qvd_object)
);
CREATE INDEX views_setups_attributes_administrator_idx_administrator_id
    ON views_setups_attributes_administrator (administrator_id);

CREATE TABLE views_setups_properties_tenant (
    id serial NOT NULL,
    qvd_obj_prop_id integer NOT NULL,
    visible boolean NOT NULL,
    view_type administrator_and_tenant_views_setups_view_type_enum NOT NULL,
    device_type administrator_and_tenant_views_setups_device_type_enum NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT views_setups_properties_tenant_qvd_obj_prop_id_view_type_device_type
        UNIQUE (qvd_obj_prop_id, view_type, device_type)
);
CREATE INDEX views_setups_properties_tenant_idx_qvd_obj_prop_id
    ON views_setups_properties_tenant (qvd_obj_prop_id);

CREATE TABLE views_setups_properties_administrator (
    id serial NOT NULL,
    administrator_id integer NOT NULL,
    qvd_obj_prop_id integer NOT NULL,
    visible boolean NOT NULL,
    view_type administrator_and_tenant_views_setups_view_type_enum NOT NULL,
    device_type administrator_and_tenant_views_setups_device_type_enum NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT views_setups_properties_administrator_administrator_id_qvd_obj_prop_id_view_type_device_type
        UNIQUE (administrator_id, qvd_obj_prop_id, view_type, device_type)
);
CREATE INDEX views_setups_properties_administrator_idx_administrator_id
    ON views_setups_properties_administrator (administrator_id);
CREATE INDEX views_setups_properties_administrator_idx_qvd_obj_prop_id
    ON views_setups_properties_administrator (qvd_obj_prop_id);

-- API sessions (QVD 4: MojoX::Session's DBI store); data is a JSON object.
CREATE TABLE session (
    sid varchar(40) NOT NULL,
    data text,
    expires integer NOT NULL,
    PRIMARY KEY (sid)
);

-- Each object's creation and deletion rows are looked up by the API (creation_date,
-- creation_admin_*); the log grows with every API request, so index those lookups.
CREATE INDEX log_idx_object ON log (qvd_object, object_id) WHERE type_of_action IN ('create', 'delete');

ALTER TABLE administrators ADD CONSTRAINT administrators_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE roles ADD CONSTRAINT roles_fk_tenant_id FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE acl_role_relations ADD CONSTRAINT acl_role_relations_fk_acl_id FOREIGN KEY (acl_id)
    REFERENCES acls (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE acl_role_relations ADD CONSTRAINT acl_role_relations_fk_role_id FOREIGN KEY (role_id)
    REFERENCES roles (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE role_role_relations ADD CONSTRAINT role_role_relations_fk_inheritor_id
    FOREIGN KEY (inheritor_id) REFERENCES roles (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE role_role_relations ADD CONSTRAINT role_role_relations_fk_inherited_id
    FOREIGN KEY (inherited_id) REFERENCES roles (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE role_administrator_relations ADD CONSTRAINT role_administrator_relations_fk_role_id
    FOREIGN KEY (role_id) REFERENCES roles (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE role_administrator_relations ADD CONSTRAINT role_administrator_relations_fk_administrator_id
    FOREIGN KEY (administrator_id) REFERENCES administrators (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE wat_setups_by_administrators ADD CONSTRAINT wat_setups_by_administrators_fk_administrator_id
    FOREIGN KEY (administrator_id) REFERENCES administrators (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE wat_setups_by_tenants ADD CONSTRAINT wat_setups_by_tenants_fk_tenant_id
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE views_setups_attributes_tenant ADD CONSTRAINT views_setups_attributes_tenant_fk_tenant_id
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE views_setups_attributes_administrator
    ADD CONSTRAINT views_setups_attributes_administrator_fk_administrator_id
    FOREIGN KEY (administrator_id) REFERENCES administrators (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE views_setups_properties_tenant ADD CONSTRAINT views_setups_properties_tenant_fk_qvd_obj_prop_id
    FOREIGN KEY (qvd_obj_prop_id) REFERENCES qvd_object_properties_list (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE views_setups_properties_administrator
    ADD CONSTRAINT views_setups_properties_administrator_fk_administrator_id
    FOREIGN KEY (administrator_id) REFERENCES administrators (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;
ALTER TABLE views_setups_properties_administrator
    ADD CONSTRAINT views_setups_properties_administrator_fk_qvd_obj_prop_id
    FOREIGN KEY (qvd_obj_prop_id) REFERENCES qvd_object_properties_list (id)
    ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE;

-- The 4 SQL views of the 4.3.0 schema ---------------------------------------------------

-- Every (role, ACL) a role holds: its own positive ACLs (inherited_id = itself) and, for
-- each role it inherits from (directly or not), the ACLs that role passes on, minus the
-- ACLs the inheritor denies (positive = false) at that level.
CREATE VIEW all_acl_role_relations (inheritor_id, inherited_id, acl_id) AS
    WITH RECURSIVE passed (inheritor_id, inherited_id, acl_id) AS (
        SELECT rr.inheritor_id, rr.inherited_id, own.acl_id
          FROM role_role_relations rr
          JOIN acl_role_relations own ON own.role_id = rr.inherited_id AND own.positive
         WHERE NOT EXISTS (SELECT 1 FROM acl_role_relations denied
                            WHERE denied.role_id = rr.inheritor_id AND denied.acl_id = own.acl_id
                              AND NOT denied.positive)
        UNION
        SELECT rr.inheritor_id, rr.inherited_id, up.acl_id
          FROM role_role_relations rr
          JOIN passed up ON up.inheritor_id = rr.inherited_id
         WHERE NOT EXISTS (SELECT 1 FROM acl_role_relations denied
                            WHERE denied.role_id = rr.inheritor_id AND denied.acl_id = up.acl_id
                              AND NOT denied.positive)
    )
    SELECT inheritor_id, inherited_id, acl_id FROM passed
    UNION
    SELECT role_id, role_id, acl_id FROM acl_role_relations WHERE positive;

-- Every (inheritor, inherited) pair of the inheritance graph, direct or not.
CREATE VIEW all_role_role_relations (inheritor_id, inherited_id) AS
    WITH RECURSIVE closure (inheritor_id, inherited_id) AS (
        SELECT inheritor_id, inherited_id FROM role_role_relations
        UNION
        SELECT c.inheritor_id, rr.inherited_id
          FROM closure c JOIN role_role_relations rr ON rr.inheritor_id = c.inherited_id
    )
    SELECT DISTINCT inheritor_id, inherited_id FROM closure;

-- The WAT's column and filter setup of each tenant (property = 0 for plain fields,
-- else the properties_list id of a custom property's column).
CREATE VIEW operative_views_in_tenants AS
    SELECT DISTINCT a.device_type, a.view_type, a.tenant_id, a.field,
           COALESCE(a.visible, FALSE) AS visible, 0 AS property, a.qvd_object
      FROM views_setups_attributes_tenant a
    UNION
    SELECT DISTINCT p.device_type, p.view_type, pl.tenant_id, pl.key AS field,
           COALESCE(p.visible, FALSE) AS visible, pl.id AS property, q.qvd_object
      FROM views_setups_properties_tenant p
      JOIN qvd_object_properties_list q ON q.id = p.qvd_obj_prop_id
      JOIN properties_list pl ON pl.id = q.property_id;

-- Each administrator's own setup laid over its tenant's (administrator_id is NULL
-- where only the tenant's setup exists).
CREATE VIEW operative_views_in_administrators AS
    SELECT field, tenant_id, administrator_id,
           COALESCE(own.visible, tenant.visible) AS visible,
           view_type, device_type, qvd_object, property
      FROM (SELECT DISTINCT a.device_type, a.view_type, ad.tenant_id, a.administrator_id,
                   a.field, COALESCE(a.visible, FALSE) AS visible, 0 AS property, a.qvd_object
              FROM views_setups_attributes_administrator a
              JOIN administrators ad ON ad.id = a.administrator_id
            UNION
            SELECT DISTINCT p.device_type, p.view_type, pl.tenant_id, p.administrator_id,
                   pl.key AS field, COALESCE(p.visible, FALSE) AS visible, pl.id AS property,
                   q.qvd_object
              FROM views_setups_properties_administrator p
              JOIN qvd_object_properties_list q ON q.id = p.qvd_obj_prop_id
              JOIN properties_list pl ON pl.id = q.property_id) AS own
      FULL JOIN operative_views_in_tenants AS tenant
     USING (tenant_id, device_type, view_type, field, property, qvd_object);
