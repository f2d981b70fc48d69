"""A real ``twistd qvd-api`` on a test database, over TLS on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from qvd.admin.remote import APIClient, APIUnreachable
from qvd.embedded import ensure_certificate
from qvd.stream.sockets import free_port
from tests.support.paths import TWISTD
from tests.support.postgres import TestDatabase
from tests.support.processes import stop_popen


class RunningAPI:
    """Start/stop/restart one API process (``twistd qvd-api``, or with ``plugin`` another
    daemon serving the API, such as ``qvd-node --api``); ``client()`` talks to it."""

    def __init__(self, db: TestDatabase, directory: str, extra_conf: str = "",
                 plugin: Sequence[str] = ("qvd-api",)):
        self.db = db
        self.directory = directory
        self.plugin = list(plugin)
        self.port = free_port()
        key = os.path.join(directory, "api-key.pem")
        self.cert = os.path.join(directory, "api-cert.pem")
        ensure_certificate(key, self.cert, "localhost")
        self.conf = db.write_conf(directory, (
            f"api.url = https://127.0.0.1:{self.port}/\n"
            f"path.api.ssl.key = {key}\npath.api.ssl.cert = {self.cert}\n"
            f"path.run = {directory}/run\npath.storage.root = {directory}/storage\n"
        ) + extra_conf)
        os.makedirs(os.path.join(directory, "storage", "staging"), exist_ok=True)
        self.url = f"https://127.0.0.1:{self.port}/"
        self.process: Optional[subprocess.Popen] = None
        self.log = os.path.join(directory, f"{self.plugin[0]}.log")

    def start(self, timeout: float = 30.0) -> "RunningAPI":
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "-l", self.log, *self.plugin,
             "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            cwd=self.directory)
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self.client().call({}, "/api/info")
                if answer.get("status") == 0:
                    return self
            except APIUnreachable:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(self.log) as f:
                    raise AssertionError(f"{self.plugin[0]} did not start:\n{f.read()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_popen(self.process)
        self.process = None

    def client(self) -> APIClient:
        return APIClient(self.url, ca=self.cert)

    def login(self, login: str, password: str, tenant: Optional[str] = "*") -> "Session":
        client = self.client()
        payload: dict[str, Any] = {"action": "current_admin_setup", "login": login,
                                   "password": password}
        if tenant is not None:
            payload["tenant"] = tenant
        answer = client.call(payload)
        assert answer["status"] == 0, answer
        return Session(client, answer["sid"], answer)


class Session:
    """An administrator's session: ``call(action, ...)`` sends the sid in the JSON body."""

    def __init__(self, client: APIClient, sid: str, setup: dict[str, Any]):
        self.client = client
        self.sid = sid
        self.setup = setup

    def call(self, action: str, **keys: Any) -> dict[str, Any]:
        return self.client.call({"action": action, "sid": self.sid, **keys})

    def ok(self, action: str, **keys: Any) -> dict[str, Any]:
        answer = self.call(action, **keys)
        assert answer.get("status") == 0, f"{action} {keys}: {answer}"
        return answer
