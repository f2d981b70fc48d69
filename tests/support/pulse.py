"""A real PulseAudio as a user's machine has one: a null sink ``speakers`` (whose
monitor the tests record), reachable on a socket of its own.

It runs as ``nobody`` when the suite is root (PulseAudio is a user's
daemon), with its home, runtime and state in a test directory; the socket
allows anonymous clients so that the root test process may use it too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile

from twisted.internet.defer import inlineCallbacks

from tests.support import waiting
from tests.support.processes import Child

SCRIPT = """\
load-module module-null-sink sink_name=speakers
load-module module-native-protocol-unix socket={socket} auth-anonymous=1
set-default-sink speakers
"""


class UserPulseAudio:
    """``server`` is its ``PULSE_SERVER`` value."""

    def __init__(self, testcase):
        self.testcase = testcase
        self.root = tempfile.mkdtemp(prefix="qvd-test-pulse-")
        testcase.addCleanup(shutil.rmtree, self.root, True)
        os.chmod(self.root, 0o755)
        self.socket = os.path.join(self.root, "native")
        self.server = f"unix:{self.socket}"
        with open(os.path.join(self.root, "client.pa"), "w") as f:
            f.write(SCRIPT.format(socket=self.socket))

    @inlineCallbacks
    def start(self):
        env = {"HOME": self.root, "PATH": "/usr/bin:/bin",
               "PULSE_RUNTIME_PATH": os.path.join(self.root, "runtime"),
               "PULSE_STATE_PATH": os.path.join(self.root, "state")}
        argv = ["/usr/bin/pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1",
                "--use-pid-file=no", "-F", os.path.join(self.root, "client.pa")]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            argv = ["/usr/bin/setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                    "--clear-groups"] + argv  # execs: TERM reaches PulseAudio itself
        Child(self.testcase, argv, env, stop_signal="TERM")
        yield waiting.poll(lambda: os.path.exists(self.socket), bool, 20, "PulseAudio socket")
