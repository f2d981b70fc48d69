"""``qa --api`` runs the manual's examples with the same results as direct mode:
the same lines go to a database through qa's direct mode and to another one
through the API, and both databases end the same."""

from __future__ import annotations

import io
import json
import shlex
import tempfile
from collections.abc import Iterator

import pytest

from qvd.admin.cli import main
from tests.support.api import RunningAPI
from tests.support.postgres import TestDatabase as Database, drop_database, new_database

LINES = [
    'qa tenant new name=acme',
    'qa config set tenant_id=-1,key=myproperty,value="this is a value"',
    'qa host new name=myhost,address=10.3.15.1',
    'qa osf new name=myOSF,memory=512,tenant=acme',
    'qa user new name=peter,password=s3cr3t,tenant=acme',
    'qa user new name=paul,password=s3cr3t,tenant=acme',
    'qa vm new name=GuestVM,user=peter,osf=myOSF',
    'qa vm new name=OtherVM,user=paul,osf=myOSF',
    'qa vm name=GuestVM block',
    'qa vm "name~%VM,!name=GuestVM" set di_tag=beta',
    'qa user name=paul set description="second user"',
    'qa host name=myhost block',
    'qa vm name=OtherVM del',
    'qa config set tenant_id=-1,key=myproperty,value=changed',
]

SNAPSHOT = {
    "tenants": "SELECT name, COALESCE(blocked, FALSE) FROM tenants ORDER BY name",
    "users": "SELECT u.login, t.name, u.blocked, u.description, u.password FROM users u"
             " JOIN tenants t ON t.id = u.tenant_id ORDER BY u.login",
    "hosts": "SELECT h.name, h.address, h.frontend, h.backend, r.blocked, r.state FROM hosts h"
             " JOIN host_runtimes r ON r.host_id = h.id ORDER BY h.name",
    "osfs": "SELECT name, memory, use_overlay FROM osfs ORDER BY name",
    "vms": "SELECT v.name, u.login, o.name, v.di_tag, v.ip, r.blocked, r.vm_state, r.user_state"
           " FROM vms v JOIN users u ON u.id = v.user_id JOIN osfs o ON o.id = v.osf_id"
           " JOIN vm_runtimes r ON r.vm_id = v.id ORDER BY v.name",
    "configs": "SELECT tenant_id, key, value FROM configs ORDER BY key",
}


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(argv, out, err), out.getvalue(), err.getvalue()


def snapshot(db: Database) -> dict[str, list]:
    return {name: db.query(sql) for name, sql in SNAPSHOT.items()}


@pytest.fixture
def home(monkeypatch) -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="qa-home-")
    monkeypatch.setenv("HOME", directory)
    yield directory


def test_manual_lines_have_the_same_effect_both_ways(api: RunningAPI, home: str) -> None:
    direct = new_database()
    try:
        conf = direct.write_conf(home)
        remote = ["--api", api.url, "--ca", api.cert]
        code, out, err = run(remote + ["-l", "superadmin", "-p", "superadmin", "-t", "*", "login"])
        assert code == 0 and "logged in as superadmin" in out, err
        for line in LINES:
            words = shlex.split(line)[1:]
            assert run(["-c", conf] + words)[0] == 0, f"direct: {line}"
            code, out, err = run(remote + words)
            assert code == 0, f"api: {line}: {err}"
        assert snapshot(direct) == snapshot(api.db)
        code, out, err = run(remote + ["--format", "json", "vm", "get"])
        listed = json.loads(out)
        assert listed["total"] == 1 and listed["rows"][0]["name"] == "GuestVM"
        assert listed["rows"][0]["user"] == "peter" and listed["rows"][0]["blocked"] == 1
    finally:
        drop_database(direct)


def test_tenant_admin_through_qa_sees_only_its_tenant(api: RunningAPI, home: str) -> None:
    remote = ["--api", api.url, "--ca", api.cert]
    assert run(remote + ["-l", "superadmin", "-p", "superadmin", "-t", "*", "login"])[0] == 0
    assert run(remote + ["tenant", "new", "name=north"])[0] == 0
    assert run(remote + ["tenant", "new", "name=south"])[0] == 0
    for tenant in ("north", "south"):
        assert run(remote + ["user", "new", f"name=u-{tenant},password=x,tenant={tenant}"])[0] == 0
    code, out, err = run(remote + ["admin", "new", "name=boss,password=b0ss,tenant=north"])
    assert code == 0, err
    code, out, err = run(remote + ["admin", "name=boss", "assign", "role", "Users Manager"])
    assert code == 0, err
    assert run(remote + ["logout"])[0] == 0
    assert run(remote + ["-l", "boss", "-p", "b0ss", "-t", "north", "login"])[0] == 0
    code, out, err = run(remote + ["--format", "json", "user", "get", "name"])
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["rows"]] == ["u-north"]
    code, out, err = run(remote + ["user", "name=u-south", "set", "description=x"])
    assert (code, out) == (0, "Total: 0\n"), err  # another tenant's user: nothing selected
    code, out, err = run(remote + ["password", "n3w"])
    assert code == 0, err
    code, out, err = run(remote + ["host", "get"])
    assert code == 1 and "Forbidden action for this administrator" in err


def test_errors_are_one_line(api: RunningAPI, home: str) -> None:
    remote = ["--api", api.url, "--ca", api.cert]
    code, out, err = run(remote + ["vm", "get"])
    assert code == 1 and err.startswith("qa: not logged in")
    code, out, err = run(remote + ["-l", "superadmin", "-p", "wrong", "-t", "*", "vm", "get"])
    assert (code, err) == (1, "qa: Wrong credentials - Login again\n")
    code, out, err = run(["--api", "https://127.0.0.1:1/", "-l", "a", "-p", "b", "vm", "get"])
    assert code == 1 and "cannot reach the API" in err and len(err.splitlines()) == 1
