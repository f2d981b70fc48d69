"""The session's sound: a PulseAudio of the session's account, tunnelled to the client.

With ``vma.audio.enable``, nxagent gets ``media=1`` and says ``Listening to
multimedia connections on port 'tcp:localhost:<port>'`` (reference §4.6).
Once the session has started (not before: see ``SessionChannels``), the VMA
starts PulseAudio
as the session's account with one sink, ``module-tunnel-sink-new`` to that
port: what the desktop plays travels through the NX link to the
PulseAudio of the client's machine.  Programs find it through
``PULSE_SERVER`` (a socket under ``path.run``, one per VM, so that several
VMs of the process hypervisor sharing an account do not meet).  It is
stopped when the session is suspended or ends, and started again with the
next client.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from qvd.slave.bridge import Program, Run
from qvd.vma.provisioning import SessionAccount
from qvd.vma.settings import VMASettings

log = Logger()

STOP_TIMEOUT = 5.0


class SessionAudio:
    def __init__(self, reactor: Any, settings: VMASettings):
        self.reactor = reactor
        self.settings = settings
        self.runtime = os.path.join(settings.run_dir, "pulse")
        self.socket = os.path.join(self.runtime, "native")
        self._run: Optional[Run] = None

    def environment(self) -> dict[str, str]:
        return {"PULSE_SERVER": f"unix:{self.socket}"} if self.settings.audio else {}

    def script(self, port: int) -> str:
        """``default.pa``: the session's socket and the tunnel to the client, nothing
        else, so that the tunnel is the only (thus the default) sink.  One attempt:
        a client that does not forward sound closes the channel at once, and the
        tunnel goes away instead of retrying for the whole session."""
        return (f"load-module module-native-protocol-unix socket={self.socket}"
                " auth-anonymous=1\n"
                f"load-module module-tunnel-sink-new server=tcp:127.0.0.1:{port} sink_name=qvd"
                " sink_properties=device.description=QVD\n")

    def start(self, port: int, account: SessionAccount, env: dict[str, str]) -> None:
        """(Re)start the session's PulseAudio for the multimedia port ``port``."""
        self.stop()
        config = self.settings.pulseaudio_config_path
        with open(config, "w") as f:
            f.write(self.script(port))
        os.makedirs(self.runtime, mode=0o700, exist_ok=True)
        if account.uid is not None:
            os.chown(self.runtime, account.uid, account.gid)
        env = dict(env, PULSE_RUNTIME_PATH=self.runtime)
        env.pop("PULSE_SERVER", None)
        program = Program([self.settings.commands["pulseaudio"], "-n", "--daemonize=no",
                           "--exit-idle-time=-1", "--use-pid-file=no", "-F", config],
                          env, account.home, account.uid, account.gid, "pulseaudio")
        log.info("starting the session's PulseAudio: its sound goes to the client through"
                 " port {port}", port=port)
        try:
            self._run = Run(program).start(self.reactor)
        except OSError as e:
            log.warn("cannot start PulseAudio: {error}", error=e)

    def stop(self) -> Deferred:
        """TERM the session's PulseAudio (KILL if it lingers); fires once it has exited."""
        run, self._run = self._run, None
        if run is None or not run.running:
            return succeed(None)
        run.signal("TERM")
        timer = self.reactor.callLater(STOP_TIMEOUT, run.signal, "KILL")
        ended: Deferred = Deferred()
        run.ended.addBoth(lambda result: (timer.cancel() if timer.active() else None,
                                          ended.callback(None)))
        return ended
