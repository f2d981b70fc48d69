"""Sessions outlive an API restart; ``/api/ws`` pushes a VM's new state within a
second of ``qa vm start``."""

from __future__ import annotations

import asyncio
import io
import json
import ssl
import time
from urllib.parse import quote

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from qvd.admin.cli import main as qa
from tests.support.api import RunningAPI, Session


def test_a_session_survives_a_restart(api: RunningAPI) -> None:
    session = api.login("superadmin", "superadmin")
    api.stop()
    api.start()
    session.client.close()
    assert session.call("tenant_get_list")["status"] == 0


class _Listener(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.set_result(True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put_nowait(json.loads(payload))


async def _live(api: RunningAPI, sid: str, vm_id: int, conf: str) -> tuple[dict, dict, float]:
    query = (f"sid={sid}&action=vm_get_list&filters={quote(json.dumps({'id': vm_id}))}"
             f"&fields={quote(json.dumps(['id', 'state']))}")
    url = f"wss://127.0.0.1:{api.port}/api/ws?{query}"
    factory = WebSocketClientFactory(url)
    factory.protocol = _Listener
    factory.messages = asyncio.Queue()
    factory.opened = asyncio.get_running_loop().create_future()
    context = ssl.create_default_context(cafile=api.cert)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(factory, "127.0.0.1", api.port, ssl=context,
                                                server_hostname="localhost")
    try:
        first = await asyncio.wait_for(factory.messages.get(), 5)
        host = api.db.query("SELECT id FROM hosts WHERE name = 'ws-node'")[0][0]
        started = time.monotonic()
        out, err = io.StringIO(), io.StringIO()
        assert qa(["-c", conf, "vm", f"id={vm_id}", "start"], out, err) == 0, err.getvalue()
        # a fake HKD: what the real one does on qvd_cmd_for_vm_on_host<id> (claim the start)
        api.db.query("UPDATE vm_runtimes SET vm_cmd = NULL, vm_state = 'starting'"
                     " WHERE vm_id = %s AND vm_cmd = 'start' AND host_id = %s", (vm_id, host))
        second = await asyncio.wait_for(factory.messages.get(), 5)
        return first, second, time.monotonic() - started
    finally:
        transport.close()


def test_ws_pushes_the_new_state(api: RunningAPI, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "live"})["rows"][0]["id"]
    user = superadmin.ok("user_create", arguments={"tenant_id": tenant, "name": "u",
                                                   "password": "x"})["rows"][0]["id"]
    osf = superadmin.ok("osf_create", arguments={"tenant_id": tenant, "name": "o"})["rows"][0]["id"]
    vm = superadmin.ok("vm_create", arguments={"name": "v", "user_id": user,
                                               "osf_id": osf})["rows"][0]["id"]
    host = superadmin.ok("host_create", arguments={"name": "ws-node",
                                                   "address": "10.7.0.1"})["rows"][0]["id"]
    api.db.query("UPDATE host_runtimes SET state = 'running', ok_ts = LOCALTIMESTAMP,"
                 " usable_ram = 4000, usable_cpu = 4000 WHERE host_id = %s", (host,))
    first, second, seconds = asyncio.run(_live(api, superadmin.sid, vm, api.conf))
    assert first["rows"] == [{"id": vm, "state": "stopped"}]
    assert second["rows"] == [{"id": vm, "state": "starting"}]
    assert seconds < 1.0
