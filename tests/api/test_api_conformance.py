"""The API over real HTTPS against a real PostgreSQL: transport, login and
sessions, the envelope and status codes, and every family of actions, as
protocols/api.md (and QVD 4's reference) says."""

from __future__ import annotations

import json
import ssl
import http.client

import pytest

from qvd.admin.remote import APIClient
from tests.support.api import RunningAPI, Session


def envelope_ok(answer: dict) -> None:
    assert answer["status"] == 0 and answer["message"] == "Successful completion", answer


def error(answer: dict, status: int, message: str) -> None:
    assert (answer["status"], answer["message"]) == (status, message), answer
    assert "additional_info" in answer


# -- transport and login ---------------------------------------------------------------


def test_info_needs_no_login(api: RunningAPI) -> None:
    info = api.client().call({}, "/api/info")
    assert info["status"] == 0 and info["multitenant"] == 1
    assert info["version"] == {"database": "4.3.0"}
    assert info["auth"]["separators"] == ["@", "#"]
    assert "server_datetime" in info and "public_configuration" in info


def test_login_answers_the_wat_setup_and_a_cookie(api: RunningAPI) -> None:
    answer, headers = api.client().form({"login": "superadmin", "password": "superadmin",
                                         "tenant": "*", "action": "current_admin_setup",
                                         "parameters": {"source": "WAT"}})
    envelope_ok(answer)
    assert (answer["admin_id"], answer["tenant_id"], answer["tenant_name"]) == (1, 0, "*")
    assert len(answer["sid"]) == 40 and "vm.see-main." in answer["acls"]
    assert {"views", "admin_language", "tenant_block"} <= set(answer)
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"sid={answer['sid']}") and "HttpOnly" in cookie
    assert "Secure" in cookie and "Path=/api/" in cookie
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("keys, status, message", [
    ({"login": "superadmin", "password": "wrong", "tenant": "*"}, 3200,
     "Wrong credentials - Login again"),
    ({"login": "superadmin", "password": "superadmin"}, 3200, "Wrong credentials - Login again"),
    ({}, 3100, "No credentials provided for authentication"),
    ({"sid": "0" * 40}, 3200, "Wrong credentials - Login again"),
])
def test_refused_logins(api: RunningAPI, keys: dict, status: int, message: str) -> None:
    error(api.client().call({"action": "vm_get_list", **keys}), status, message)


def test_login_failures_are_audited(api: RunningAPI, superadmin: Session) -> None:
    api.client().call({"action": "vm_get_list", "login": "superadmin", "password": "nope",
                       "tenant": "*"})
    rows = superadmin.ok("log_get_list", filters={"action": "login", "status": 3200},
                         fields=["admin_name", "type_of_action", "qvd_object", "ip"])["rows"]
    assert {"admin_name": "superadmin", "type_of_action": "login",
            "qvd_object": "administrator", "ip": "127.0.0.1"} in rows


def test_sid_in_query_cookie_and_json_body(api: RunningAPI, superadmin: Session) -> None:
    client = api.client()
    by_query, _ = client.form({"sid": superadmin.sid, "action": "tenant_get_list"})
    by_cookie, _ = client.form({"action": "tenant_get_list"}, cookie=superadmin.sid)
    by_body = client.call({"sid": superadmin.sid, "action": "tenant_get_list"})
    assert by_query == by_cookie == by_body and by_body["status"] == 0


def test_action_errors(superadmin: Session) -> None:
    error(superadmin.call(""), 4110, "Invalid or null action name provided")
    error(superadmin.call("vm_get_details"), 4100, "Unavailable action (vm_get_details)")
    error(superadmin.call("config_field_get_list"), 4100,
          "Unavailable action (config_field_get_list)")


def test_bad_json_parameter_is_6100(api: RunningAPI, superadmin: Session) -> None:
    client = api.client()
    status, _, body = client.request(
        "GET", f"/api?sid={superadmin.sid}&action=vm_get_list&filters=%7Bnope", None)
    assert status == 200
    error(json.loads(body), 6100, "Syntax errors in input json (filters)")


def test_oversized_body_is_refused_before_it_is_read(api: RunningAPI) -> None:
    context = ssl.create_default_context(cafile=api.cert)
    connection = http.client.HTTPSConnection("127.0.0.1", api.port, context=context)
    connection.putrequest("POST", "/api")
    connection.putheader("Content-Length", str(10 << 20))
    connection.endheaders()
    assert connection.getresponse().status == 413


def test_other_endpoints_say_not_supported(api: RunningAPI, superadmin: Session) -> None:
    answer = api.client().call({"sid": superadmin.sid}, "/api/di/docker")
    assert answer["status"] == 4100 and "not supported" in answer["additional_info"]


# -- sessions ------------------------------------------------------------------------------


def test_session_only_from_its_address(api: RunningAPI, superadmin: Session) -> None:
    other = APIClient(api.url, ca=api.cert)
    other._connection = http.client.HTTPSConnection(
        "127.0.0.1", api.port, context=ssl.create_default_context(cafile=api.cert),
        source_address=("127.0.0.2", 0))
    error(other.call({"sid": superadmin.sid, "action": "vm_get_list"}), 3200,
          "Wrong credentials - Login again")


def test_expired_session(api: RunningAPI) -> None:
    session = api.login("superadmin", "superadmin")
    api.db.query("UPDATE session SET expires = 1 WHERE sid = %s", (session.sid,))
    error(session.call("vm_get_list"), 3300, "Session expired - Login again")
    error(session.call("vm_get_list"), 3200, "Wrong credentials - Login again")


def test_logout_ends_the_session(api: RunningAPI) -> None:
    session = api.login("superadmin", "superadmin")
    envelope_ok(session.client.call({"sid": session.sid}, "/api/logout"))
    error(session.call("vm_get_list"), 3200, "Wrong credentials - Login again")


# -- families of actions ---------------------------------------------------------------------


def test_tenant_user_osf_host_vm_lifecycle(api: RunningAPI, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "Lifecycle"})["rows"][0]["id"]
    assert superadmin.ok("tenant_get_list", filters={"id": tenant})["rows"][0]["name"] == \
        "lifecycle"
    error(superadmin.call("user_create", arguments={"name": "u", "password": "p"}), 6240,
          "No mandatory argument for this action (tenant_id)")
    error(superadmin.call("user_create", arguments={"tenant_id": tenant, "name": "u",
                                                    "password": "p", "colour": "red"}),
          6230, "Inappropiate argument for this action (colour)")
    user = superadmin.ok("user_create", arguments={"tenant_id": tenant, "name": " Bob ",
                                                   "password": "s3cret"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant,
                                                 "name": "desk"})["rows"][0]["id"]
    osf_row = superadmin.ok("osf_get_list", filters={"id": osf})["rows"][0]
    assert (osf_row["memory"], osf_row["overlay"], osf_row["user_storage"]) == (256, 1, 0)
    host = superadmin.ok("host_create", arguments={"name": "lc-node",
                                                   "address": "10.9.0.1"})["rows"][0]["id"]
    vm = superadmin.ok("vm_create", arguments={"name": "desk-1", "user_id": user,
                                               "osf_id": osf})["rows"][0]["id"]
    row = superadmin.ok("vm_get_list", filters={"id": vm},
                        fields=["name", "user_name", "state", "di_tag", "tenant_name"])
    assert row == {"status": 0, "message": "Successful completion", "total": 1,
                   "rows": [{"name": "desk-1", "user_name": "bob", "state": "stopped",
                             "di_tag": "default", "tenant_name": "lifecycle"}]}
    superadmin.ok("vm_update", filters={"id": vm}, arguments={"description": "mine",
                                                              "blocked": 1})
    assert superadmin.ok("vm_get_list", filters={"id": vm}, fields=["description", "blocked"])[
        "rows"] == [{"description": "mine", "blocked": 1}]
    error(superadmin.call("vm_stop", filters={"id": vm}), 1200,
          "Action not accomplished for all elements")
    failure = superadmin.call("vm_stop", filters={"id": vm})["failures"][str(vm)]
    assert (failure["status"], failure["message"]) == (5120, "Unable to stop VM in current state (vm_state)")
    api.db.query("UPDATE vm_runtimes SET vm_state = 'running', host_id = %s WHERE vm_id = %s",
                 (host, vm))
    failure = superadmin.call("vm_delete", filters={"id": vm})["failures"][str(vm)]
    assert failure["status"] == 7310
    superadmin.ok("vm_stop", filters={"id": vm})
    assert api.db.query("SELECT vm_cmd FROM vm_runtimes WHERE vm_id = %s", (vm,)) == [("stop",)]
    api.db.query("UPDATE vm_runtimes SET vm_state = 'stopped', vm_cmd = NULL WHERE vm_id = %s",
                 (vm,))
    assert superadmin.ok("vm_delete", filters={"id": vm})["total"] == 1
    error(superadmin.call("vm_delete", filters={"id": vm}), 1300,
          "Zero items selected, no item has been changed")
    audit = api.db.query("SELECT action, object_id, status, arguments FROM log"
                         " WHERE qvd_object = 'user' AND type_of_action = 'create'"
                         " AND object_id = %s", (user,))
    assert audit[0][:3] == ("user_create", user, 0)
    assert json.loads(audit[0][3])["password"] == "**********" and "s3cret" not in audit[0][3]


def test_vm_and_osf_of_different_tenants(superadmin: Session) -> None:
    a = superadmin.ok("tenant_create", arguments={"name": "ta"})["rows"][0]["id"]
    b = superadmin.ok("tenant_create", arguments={"name": "tb"})["rows"][0]["id"]
    user = superadmin.ok("user_create", arguments={"tenant_id": a, "name": "x",
                                                   "password": "x"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": b, "name": "o"})["rows"][0]["id"]
    error(superadmin.call("vm_create", arguments={"name": "v", "user_id": user, "osf_id": osf}),
          7300, "Unable to create VM with OSF and User from different tenants")


def test_filters_order_and_pages(superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "pages"})["rows"][0]["id"]
    for n in range(7):
        superadmin.ok("user_create", arguments={"tenant_id": tenant, "name": f"p{n}",
                                                "password": "x", "blocked": n % 2})
    def names(**keys):
        answer = superadmin.ok("user_get_list", fields=["name"], **keys)
        return answer["total"], [r["name"] for r in answer["rows"]]
    base = {"tenant_id": tenant}
    assert names(filters=base, order_by={"field": "name", "order": "-desc"}, block=3,
                 offset=2) == (7, ["p3", "p2", "p1"])
    assert names(filters={**base, "blocked": 1}, order_by={"field": "name"}) == (
        3, ["p1", "p3", "p5"])
    assert names(filters=["tenant_id", tenant, "-or", ["name", "p0", "name", {"~": "p6%"}]],
                 order_by={"field": "name"}) == (2, ["p0", "p6"])
    assert names(filters={**base, "-not": {"name": ["p0", "p1"]}, "id": {"-between": [0, 10**9]}},
                 order_by={"field": "name"})[0] == 5
    assert superadmin.ok("user_get_list", filters=base, block=3, offset=9)["total"] == 7
    error(superadmin.call("user_get_list", filters={"colour": "red"}), 6210,
          "Inappropiate filter for this action (colour)")
    error(superadmin.call("user_get_list", fields=["colour"]), 6250,
          "Inappropiate field for this action (colour)")
    error(superadmin.call("user_get_list", order_by={"field": "name", "order": "up"}), 6600,
          "Invalid order direction (up)")
    error(superadmin.call("user_get_list", order_by={"field": "number_of_vms"}), 6610,
          "Invalid order by field (number_of_vms)")
    error(superadmin.call("user_get_list", filters={"id": {"nope": 1}}), 6320,
          "Invalid filter value (id)")


def test_di_tags(api: RunningAPI, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "images"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant, "name": "o"})["rows"][0]["id"]
    first = superadmin.ok("di_create", arguments={"osf_id": osf, "disk_image": "a.tar.gz",
                                                  "version": "1"})["rows"][0]["id"]
    second = superadmin.ok("di_create", arguments={"osf_id": osf, "disk_image": "b.tar.gz",
                                                   "version": "2"})["rows"][0]["id"]
    tags = {r["id"]: sorted(t["tag"] for t in r["tags"]) for r in superadmin.ok(
        "di_get_list", filters={"osf_id": osf}, fields=["id", "tags"])["rows"]}
    assert tags == {first: ["1", "default"], second: ["2", "head"]}
    superadmin.ok("di_update", filters={"id": second},
                  arguments={"__tags_changes__": {"create": ["default", "beta"]}})
    failure = superadmin.call("di_update", filters={"id": first}, arguments={
        "__tags_changes__": {"create": ["2"]}})["failures"][str(first)]
    assert failure["status"] == 7330
    failure = superadmin.call("di_update", filters={"id": second}, arguments={
        "__tags_changes__": {"delete": ["head"]}})["failures"][str(second)]
    assert failure["status"] == 7340
    assert api.db.query("SELECT tag FROM di_tags WHERE di_id = %s ORDER BY tag", (second,)) == [
        ("2",), ("beta",), ("default",), ("head",)]


def test_roles_acls_and_admins(api: RunningAPI, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "rbac"})["rows"][0]["id"]
    role = superadmin.ok("role_create", arguments={
        "tenant_id": tenant, "name": "Desk", "__roles__": ["VMs Reader"],
        "__acls__": ["vm.update.state"]})["rows"][0]["id"]
    superadmin.ok("role_update", filters={"id": role},
                  arguments={"__acls_changes__": {"unassign_acls": ["vm.see.mac"]}})
    acls = superadmin.ok("role_get_list", filters={"id": role}, fields=["acls", "roles"])["rows"][0]
    assert acls["acls"] == {"positive": ["vm.update.state"], "negative": ["vm.see.mac"]}
    assert [r["name"] for r in acls["roles"].values()] == ["VMs Reader"]
    heir = superadmin.ok("role_create", arguments={"tenant_id": tenant, "name": "Heir",
                                                   "__roles__": [role]})["rows"][0]["id"]
    cycle = superadmin.call("role_update", filters={"id": role}, arguments={
        "__roles_changes__": {"assign_roles": [heir]}})
    assert cycle["failures"][str(role)]["status"] == 7350
    # built-in (tenant -1) roles are outside every administrator's scope for changes
    error(superadmin.call("role_update", filters={"id": 64}, arguments={"description": "x"}),
          1300, "Zero items selected, no item has been changed")
    admin = superadmin.ok("administrator_create", arguments={
        "tenant_id": tenant, "name": "desk", "password": "pw", "__roles__": [role]})["rows"][0]["id"]
    operative = superadmin.ok("get_acls_in_admins", filters={"admin_id": admin, "operative": 1},
                              fields=["name"], block=1000)
    names = {r["name"] for r in operative["rows"]}
    assert "vm.update.state" in names and "vm.see-main." in names and "vm.see.mac" not in names
    counts = superadmin.call("number_of_acls_in_role", filters={"role_id": role,
                                                                 "acl_pattern": ["vm.see.%"]})
    assert counts["vm.see.%"]["effective"] == counts["vm.see.%"]["total"] - 1
    session = api.login("desk", "pw", "rbac")
    assert session.setup["acls"] == sorted(names)
    error(session.call("administrator_delete", filters={"id": admin}), 4210,
          "Forbidden action for this administrator (administrator_delete)")
    error(superadmin.call("administrator_delete", filters={"id": 1}), 1200,
          "Action not accomplished for all elements")


def test_config_actions(superadmin: Session) -> None:
    superadmin.ok("config_set", arguments={"tenant_id": -1, "key": "api.public.footer.x",
                                           "value": "hello"})
    rows = superadmin.ok("config_get", filters={"key": "api.public.footer.x"})["rows"]
    assert rows == [{"key": "api.public.footer.x", "tenant_id": -1, "operative_value": "hello",
                     "default_value": None, "is_default": 0}]
    assert superadmin.ok("config_get", filters={"key": {"~": "database.%"}})["total"] == 0
    superadmin.ok("config_delete", filters={"key": "api.public.footer.x"})
    error(superadmin.call("config_delete", filters={"key": "l7r.port"}), 7370,
          "Unable to remove a core config item")
    error(superadmin.call("config_set", arguments={"tenant_id": -1, "key": "wat.multitenant",
                                                   "value": "0"}), 7373,
          "Unable to switch to monotenant mode - More than one tenant in the system")


def test_properties_views_statistics_and_staging(api: RunningAPI, superadmin: Session) -> None:
    prop = superadmin.ok("property_create", arguments={
        "tenant_id": 1, "key": "colour", "__property_assign__": ["vm", "user"]})["rows"][0]["id"]
    listed = superadmin.ok("property_get_list", filters={"id": prop})["rows"][0]
    assert listed["key"] == "colour" and listed["in_vm"] and listed["in_user"] and not listed["in_host"]
    error(superadmin.call("property_create", arguments={"tenant_id": 1, "key": "colour"}), 7210,
          "This property already exists (colour)")
    user = superadmin.ok("user_create", arguments={"tenant_id": 1, "name": "painter",
                                                   "password": "x", "__properties__": {
                                                       "colour": "blue"}})["rows"][0]["id"]
    found = superadmin.ok("user_get_list", filters={"colour": "blue"}, fields=["id", "properties"])
    assert [r["id"] for r in found["rows"]] == [user]
    assert [v["value"] for v in found["rows"][0]["properties"].values()] == ["blue"]
    superadmin.ok("tenant_attribute_view_set", arguments={
        "tenant_id": 1, "field": "ip", "visible": 0, "view_type": "list_column",
        "device_type": "desktop", "qvd_object": "vm"})
    views = superadmin.ok("tenant_view_get_list", filters={"tenant_id": 1})["rows"]
    assert {"field": "ip", "visible": 0, "view_type": "list_column"}.items() <= views[0].items()
    assert superadmin.ok("tenant_view_reset", filters={"tenant_id": 1, "qvd_object": "vm"})[
        "total"] == 1
    stats = superadmin.ok("qvd_objects_statistics")
    assert stats["users_count"] >= 1 and "top_populated_hosts" in stats
    open(f"{api.directory}/storage/staging/img.tar.gz", "wb").close()
    assert superadmin.ok("dis_in_staging")["rows"] == [{"name": "img.tar.gz"}]


def test_di_from_staging_is_copied_and_published(api: RunningAPI, superadmin: Session) -> None:
    import os
    import time
    tenant = superadmin.ok("tenant_create", arguments={"name": "staging"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant, "name": "o"})["rows"][0]["id"]
    with open(f"{api.directory}/storage/staging/desk.tar.gz", "wb") as f:
        f.write(b"image bytes")
    answer = superadmin.client.call({"sid": superadmin.sid, "arguments": {
        "osf_id": osf, "disk_image": "desk.tar.gz"}}, "/api/di/staging")
    envelope_ok(answer)
    di = answer["rows"][0]["id"]
    deadline = time.monotonic() + 10
    while api.db.query("SELECT CAST(state AS text) FROM di_runtimes WHERE di_id = %s",
                       (di,)) != [("published",)]:
        assert time.monotonic() < deadline, "the DI was not published within 10 s"
        time.sleep(0.05)
    with open(os.path.join(api.directory, "storage", "images", f"{di}-desk.tar.gz"), "rb") as f:
        assert f.read() == b"image bytes"
    missing = superadmin.client.call({"sid": superadmin.sid, "arguments": {
        "osf_id": osf, "disk_image": "nothing-here.tar.gz", "version": "x"}}, "/api/di/staging")
    envelope_ok(missing)  # answered at once; the copy fails afterwards
    failed = missing["rows"][0]["id"]
    deadline = time.monotonic() + 10
    while api.db.query("SELECT CAST(state AS text), error_code FROM di_runtimes WHERE di_id = %s",
                       (failed,)) != [("fail", 2240)]:
        assert time.monotonic() < deadline, "the missing image did not fail the DI"
        time.sleep(0.05)
