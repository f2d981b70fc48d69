"""What the web console needs of the API, over real HTTPS on a real QVD-DB: its files at
``/`` (with the headers that keep it from being framed or fed foreign scripts), a session
cookie another site cannot use, the actions an administrator may call, hosts' live load,
VMs and hosts by state, working role ACL lists, and an audit list that follows new rows."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Callable
from urllib.parse import quote

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from tests.support.api import RunningAPI, Session


def test_the_console_is_served_at_the_root(api: RunningAPI) -> None:
    client = api.client()
    status, headers, body = client.request("GET", "/")
    assert status == 200 and b'<script type="module" src="js/main.js">' in body
    assert headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    status, headers, body = client.request("GET", "/js/api.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"/api/ws" in body
    for path in ("/js/", "/js/nothing.js", "/../setup.cfg", "/%2e%2e/setup.cfg"):
        status, _, body = client.request("GET", path)
        assert status == 404 and b"import" not in body, path
    assert client.call({}, "/api/info")["status"] == 0  # the API is still the API


def test_the_session_cookie_stays_on_this_site_and_lives_as_the_session(api: RunningAPI) -> None:
    answer, headers = api.client().form({"login": "superadmin", "password": "superadmin",
                                         "tenant": "*", "action": "current_admin_setup"})
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"sid={answer['sid']}") and "samesite=strict" in cookie.lower()
    assert "expires" not in cookie.lower()  # the session's timeout decides, not the browser


def test_allowed_actions_are_what_the_api_would_accept(api: RunningAPI, superadmin: Session) -> None:
    everything = set(superadmin.setup["allowed_actions"])
    assert {"host_create", "tenant_get_list", "vm_start", "current_admin_setup"} <= everything
    tenant_admin = api.login("admin", "admin", "default")
    allowed = set(tenant_admin.setup["allowed_actions"])
    assert {"vm_get_list", "vm_start", "host_get_list", "myadmin_update"} <= allowed
    assert not {"host_create", "host_update", "host_delete", "tenant_get_list"} & allowed
    for action in ("host_create", "tenant_get_list"):
        assert tenant_admin.call(action)["status"] == 4210
    assert tenant_admin.call("vm_get_list")["status"] == 0


def test_hosts_load_and_objects_by_state(api: RunningAPI, superadmin: Session) -> None:
    host = superadmin.ok("host_create", arguments={"name": "loaded", "address": "10.9.0.1"})
    host_id = host["rows"][0]["id"]
    api.db.query("UPDATE host_runtimes SET state = 'running', usable_ram = 2048.5,"
                 " usable_cpu = 3000 WHERE host_id = %s", (host_id,))
    rows = superadmin.ok("host_get_list", filters={"id": host_id},
                         fields=["name", "state", "usable_ram", "usable_cpu"])["rows"]
    assert rows == [{"name": "loaded", "state": "running", "usable_ram": 2048.5, "usable_cpu": 3000.0}]
    tenant = superadmin.ok("tenant_create", arguments={"name": "bystate"})["rows"][0]["id"]
    user = superadmin.ok("user_create", arguments={"tenant_id": tenant, "name": "u", "password": "x"})
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant, "name": "o"})["rows"][0]["id"]
    for name in ("a", "b"):
        superadmin.ok("vm_create", arguments={"name": name, "user_id": user["rows"][0]["id"],
                                              "osf_id": osf})
    stats = superadmin.ok("qvd_objects_statistics")
    assert stats["vms_by_state"]["stopped"] >= 2
    assert stats["hosts_by_state"]["running"] >= 1
    assert sum(stats["vms_by_state"].values()) == stats["vms_count"]


def test_a_roles_acls_with_what_grants_them(superadmin: Session) -> None:
    role = superadmin.ok("role_create", arguments={
        "tenant_id": 1, "name": "Desk helper", "__acls__": ["user.see-main."],
        "__roles__": ["VMs Reader"]})["rows"][0]["id"]
    answer = superadmin.ok("get_acls_in_roles", filters={"role_id": role},
                           fields=["name", "operative"], block=1000)
    operative = {r["name"] for r in answer["rows"] if r["operative"]}
    assert {"user.see-main.", "vm.see-main."} <= operative and "vm.delete." not in operative
    assert superadmin.call("get_acls_in_roles", filters={})["status"] == 6220


class _Messages(WebSocketClientProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put_nowait(json.loads(payload))


async def _follow(api: RunningAPI, sid: str, action: str, filters: dict, fields: list,
                  change: Callable[[], object]) -> tuple[dict, dict]:
    """The first answer of a live ``action``, and the one after ``change()``."""
    query = (f"sid={sid}&action={action}&filters={quote(json.dumps(filters))}"
             f"&fields={quote(json.dumps(fields))}")
    factory = WebSocketClientFactory(f"wss://127.0.0.1:{api.port}/api/ws?{query}")
    factory.protocol = _Messages
    factory.messages = asyncio.Queue()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        factory, "127.0.0.1", api.port, ssl=ssl.create_default_context(cafile=api.cert),
        server_hostname="localhost")
    try:
        first = await asyncio.wait_for(factory.messages.get(), 5)
        await loop.run_in_executor(None, change)
        second = await asyncio.wait_for(factory.messages.get(), 5)
        return first, second
    finally:
        transport.close()


def test_the_audit_list_follows_new_rows(api: RunningAPI, superadmin: Session) -> None:
    def fail_a_login() -> None:
        api.client().call({"action": "vm_get_list", "login": "eve", "password": "x", "tenant": "*"})
    first, second = asyncio.run(_follow(api, superadmin.sid, "log_get_list",
                                        {"action": "login", "status": 3200}, ["admin_name"],
                                        fail_a_login))
    assert {"admin_name": "eve"} not in first["rows"]
    assert {"admin_name": "eve"} in second["rows"] and second["total"] == first["total"] + 1


def test_the_user_list_follows_its_vms_user_state(api: RunningAPI, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "connects"})["rows"][0]["id"]
    user = superadmin.ok("user_create", arguments={"tenant_id": tenant, "name": "cora",
                                                   "password": "x"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant, "name": "o"})["rows"][0]["id"]
    vm = superadmin.ok("vm_create", arguments={"name": "c", "user_id": user, "osf_id": osf})

    def connect() -> None:  # what the L7R writes when the user's client connects
        api.db.query("UPDATE vm_runtimes SET user_state = 'connected' WHERE vm_id = %s",
                     (vm["rows"][0]["id"],))
    first, second = asyncio.run(_follow(api, superadmin.sid, "user_get_list", {"id": user},
                                        ["number_of_vms_connected"], connect))
    assert first["rows"] == [{"number_of_vms_connected": 0}]
    assert second["rows"] == [{"number_of_vms_connected": 1}]
