"""The administration part of QVD-DB: QVD 4's initial data and the 4 SQL views.

Counts are the reference's (qvd4-db-auth-lb.md §1.1); the views are checked on
role graphs built in the test, against what inheritance and denial mean.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import TestDatabase as Database, drop_database, new_database


@pytest.fixture
def db() -> Iterator[Database]:
    database = new_database()
    yield database
    drop_database(database)


def test_initial_data_counts(db: Database) -> None:
    counts = {table: db.query(f"SELECT count(*) FROM {table}")[0][0] for table in (
        "roles", "acls", "acl_role_relations", "role_role_relations", "administrators",
        "role_administrator_relations", "wat_setups_by_administrators", "wat_setups_by_tenants")}
    assert counts == {"roles": 67, "acls": 244, "acl_role_relations": 250,
                      "role_role_relations": 86, "administrators": 3,
                      "role_administrator_relations": 2, "wat_setups_by_administrators": 3,
                      "wat_setups_by_tenants": 2}


def test_built_in_administrators_and_their_passwords(db: Database) -> None:
    from qvd.passwords import qvd_hash
    rows = db.query("SELECT id, tenant_id, name, password FROM administrators ORDER BY id")
    assert [(i, t, n) for i, t, n, _ in rows] == [(0, 0, "batman"), (1, 0, "superadmin"),
                                                 (2, 1, "admin")]
    assert rows[1][3] == qvd_hash("superadmin", "qvd1234")
    assert rows[2][3] == qvd_hash("admin", "qvd1234")


def test_root_role_reaches_every_acl_but_the_denied_one(db: Database) -> None:
    """Root (43) inherits Total Master, which inherits nearly everything; Operator L1
    denies vm.update.name, but Root does not inherit Operator L1."""
    reached = {r[0] for r in db.query(
        "SELECT a.name FROM all_acl_role_relations x JOIN acls a ON a.id = x.acl_id"
        " WHERE x.inheritor_id = 43")}
    assert {"vm.see-main.", "vm.update.state", "tenant.purge.", "config.qvd.", "vm.spy."} <= reached
    l1 = {r[0] for r in db.query(
        "SELECT a.name FROM all_acl_role_relations x JOIN acls a ON a.id = x.acl_id"
        " WHERE x.inheritor_id = 21")}
    assert "vm.update.name" not in l1 and "vm.see-main." in l1


def _role(db: Database, name: str, *, grants=(), denies=(), inherits=()) -> int:
    role_id = db.query("INSERT INTO roles (tenant_id, name) VALUES (1, %s) RETURNING id",
                       (name,))[0][0]
    for acl, positive in [(a, True) for a in grants] + [(a, False) for a in denies]:
        db.query("INSERT INTO acl_role_relations (acl_id, role_id, positive)"
                 " SELECT id, %s, %s FROM acls WHERE name = %s", (role_id, positive, acl))
    for parent in inherits:
        db.query("INSERT INTO role_role_relations (inheritor_id, inherited_id) VALUES (%s, %s)",
                 (role_id, parent))
    return role_id


def _acls(db: Database, role_id: int) -> set[str]:
    return {r[0] for r in db.query(
        "SELECT a.name FROM all_acl_role_relations x JOIN acls a ON a.id = x.acl_id"
        " WHERE x.inheritor_id = %s", (role_id,))}


def test_denial_at_a_middle_level_stops_the_acl_going_up(db: Database) -> None:
    base = _role(db, "base", grants=("vm.see-main.", "vm.update.name"))
    middle = _role(db, "middle", denies=("vm.update.name",), inherits=(base,))
    top = _role(db, "top", inherits=(middle,))
    assert _acls(db, base) == {"vm.see-main.", "vm.update.name"}
    assert _acls(db, middle) == {"vm.see-main."}
    assert _acls(db, top) == {"vm.see-main."}
    closure = set(db.query("SELECT inheritor_id, inherited_id FROM all_role_role_relations"
                           " WHERE inheritor_id IN (%s, %s)", (middle, top)))
    assert closure == {(middle, base), (top, middle), (top, base)}


def test_operative_views_lay_the_admins_setup_over_the_tenants(db: Database) -> None:
    for visible, owner in ((True, "tenant"), (False, "administrator")):
        column = "tenant_id" if owner == "tenant" else "administrator_id"
        db.query(f"INSERT INTO views_setups_attributes_{owner} (field, {column}, visible,"
                 " view_type, device_type, qvd_object) VALUES ('ip', %s, %s, 'list_column',"
                 " 'desktop', 'vm')", (1 if owner == "tenant" else 2, visible))
    assert db.query("SELECT field, tenant_id, visible FROM operative_views_in_tenants") == [
        ("ip", 1, True)]
    assert db.query("SELECT field, tenant_id, administrator_id, visible"
                    " FROM operative_views_in_administrators") == [("ip", 1, 2, False)]
