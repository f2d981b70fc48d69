"""``qvd-farm up 2``: two nodes, each in its own namespace at its own address with its own
HKD and L7R and a VM network of its own, one PostgreSQL, haproxy checking ``/qvd/ping``.
Whatever way the tool ends, everything it made goes: on Ctrl-C it removes it itself; if
it is SIGKILLed its janitor does; if the janitor dies too, ``qvd-farm down`` does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import psutil
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from qvd.farm import janitor, network
from qvd.farm.farm import PG_PORT, ping
from qvd.farm.sessions import request, settings_for
from tests.farm.support import missing_tools
from tests.support.paths import ROOT
from tests.support.waiting import poll_blocking

FARM = "from qvd.farm.cli import main; main()"


class Tool(ProcessProtocol):
    """``qvd-farm <args>``; ``ready`` fires with its summary, ``ended`` with its status."""

    def __init__(self, *args: str):
        self.out = b""
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        argv = [sys.executable, "-c", FARM, *args]
        self.process = reactor.spawnProcess(self, argv[0], argv,
                                            env=dict(os.environ, PYTHONPATH=ROOT))

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.out += data
        for line in self.out.decode(errors="replace").splitlines():
            if line.startswith("ready ") and not self.ready.called:
                self.ready.callback(json.loads(line[len("ready "):]))

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(AssertionError(f"qvd-farm ended early:\n{self.text}"))
        self.ended.callback(reason.value.exitCode)

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


def run_tool(*args: str) -> tuple[int, str]:
    """A short ``qvd-farm`` command: (status, output); blocking."""
    result = subprocess.run([sys.executable, "-c", FARM, *args], capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    return result.returncode, result.stdout + result.stderr


def remains(farm_id: str, directory: str, pids: list[int]) -> list[str]:
    """What is left of a farm: namespaces, links, processes, files, the database port."""
    prefix = f"qf{farm_id}"
    left = [ns for ns in network.namespaces() if ns.startswith(prefix)]
    left += [link for link in network.existing_names() if link.startswith(prefix)]
    left += [f"pid {pid}" for pid in pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    left += [path for path in (directory, janitor.state_path(farm_id),
                               janitor.log_path(farm_id)) if os.path.exists(path)]
    return left


def database_answers(address: str) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((address, PG_PORT)) == 0


class ToolTests(unittest.TestCase):
    timeout = 120
    skip = missing_tools()

    @inlineCallbacks
    def start(self):
        tool = Tool("up", "2", "--fast", "--account", "nobody", "--session",
                    "/usr/bin/xclock", "--desktops", "1")
        self.addCleanup(self.kill, tool)
        summary = yield tool.ready
        return tool, summary

    def kill(self, tool: Tool):
        if not tool.ended.called:
            tool.process.signalProcess("KILL")
        return tool.ended

    @inlineCallbacks
    def check_running(self, summary):
        """Two nodes up, as the summary says; the processes that make the farm."""
        farm_id = summary["id"]
        pids = []
        for i, (name, node) in enumerate(sorted(summary["nodes"].items()), 1):
            self.assertEqual(node["namespace"], f"qf{farm_id}n{i}")
            inside = network.ip("-n", node["namespace"], "-4", "-o", "addr", "show")
            self.assertIn(f"inet {node['address']}/24", inside)
            daemons = network.pids_in(node["namespace"])
            commands = sorted(" ".join(psutil.Process(p).cmdline()) for p in daemons)
            self.assertEqual(len(commands), 2, commands)
            self.assertIn("qvd-hkd", commands[0])
            self.assertIn("qvd-l7r", commands[1])
            pids += daemons
            with open(node["conf"]) as f:
                self.assertIn(f"vm.process.ip.range = {node['vm_network'][:-5]}", f.read())
            status, body = yield threads.deferToThread(ping, node["address"])
            self.assertEqual((status, body), (200, b"I am alive!\r\n"))
        address, port = summary["balancer"].split(":")
        self.assertTrue(database_answers(address))
        settings = settings_for(address, int(port), summary["ca"], "user1", "pw1")
        reply = yield request(reactor, settings, "/qvd/list_of_vm")  # through haproxy
        self.assertEqual(reply.status, 200)
        self.assertEqual([vm["name"] for vm in reply.json()], ["desk1"])
        state = janitor.State.load(farm_id)
        with open(state.haproxy_config) as f:  # every node checked as the manual says
            config = f.read()
        self.assertIn("http-check send meth GET uri /qvd/ping", config)
        for node in summary["nodes"].values():
            self.assertIn(f"{node['address']}:{port} weight 10", config)
        with open(os.path.join(state.pg_root, "pgdata", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        return pids + [state.haproxy_pid, postmaster]

    @inlineCallbacks
    def wait_gone(self, summary, pids):
        left = yield poll_blocking(lambda: remains(summary["id"], summary["directory"], pids),
                          lambda left: left == [], 60, "the farm's remains")
        self.assertEqual(left, [])

    @inlineCallbacks
    def test_interrupted_it_removes_everything(self):
        tool, summary = yield self.start()
        pids = yield self.check_running(summary)
        self.assertIn(f"qvd-client -h {summary['balancer'].split(':')[0]}", tool.text)
        tool.process.signalProcess("INT")
        self.assertEqual((yield tool.ended), 0, tool.text)
        self.assertIn("farm removed", tool.text)
        yield self.wait_gone(summary, pids)

    @inlineCallbacks
    def test_killed_its_janitor_removes_everything(self):
        tool, summary = yield self.start()
        pids = yield self.check_running(summary)
        tool.process.signalProcess("KILL")
        yield tool.ended
        yield self.wait_gone(summary, pids)

    @inlineCallbacks
    def test_abandoned_farms_are_removed_by_down(self):
        tool, summary = yield self.start()
        pids = yield self.check_running(summary)
        [keeper] = [p for p in psutil.process_iter(["cmdline"])
                    if (p.info["cmdline"] or [])[-2:] == ["qvd.farm.janitor", summary["id"]]]
        keeper.kill()
        tool.process.signalProcess("KILL")
        yield tool.ended
        code, out = yield threads.deferToThread(run_tool, "list")
        self.assertIn(f"{summary['id']}  2 nodes", out)
        self.assertIn("(abandoned)", out)
        self.assertNotEqual(remains(summary["id"], summary["directory"], pids), [])
        code, out = yield threads.deferToThread(run_tool, "down", summary["id"])
        self.assertEqual(code, 0, out)
        self.assertIn(f"farm {summary['id']} removed", out)
        yield self.wait_gone(summary, pids)
