"""After ``101``: the raw stream of a slave request joined to a program.

sshfs in slave mode and ``sftp-server`` speak SFTP on their standard input
and output.  ``ProcessBridge`` is the protocol a ``SwitchProtocols`` hands the
stream to: it starts the program (as the session's account), copies bytes
both ways with backpressure (each side pauses the other when its write
buffer fills), passes half-closes on, and ends the connection when the
program exits.  The program's standard error is logged line by line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.stream.lines import LineSplitter

log = Logger()


@dataclass(frozen=True)
class Program:
    """A program to start: ``uid``/``gid`` None = our own identity."""

    argv: list[str]
    env: dict[str, str]
    path: Optional[str] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    name: str = field(default="")

    @property
    def label(self) -> str:
        return self.name or self.argv[0].rsplit("/", 1)[-1]

    def spawn(self, reactor: Any, protocol: ProcessProtocol,
              child_fds: Optional[dict[int, Any]] = None) -> Any:
        return reactor.spawnProcess(protocol, self.argv[0], self.argv, env=self.env,
                                    path=self.path, uid=self.uid, gid=self.gid,
                                    childFDs=child_fds or {0: "w", 1: "r", 2: "r"})


@implementer(interfaces.IPushProducer)
class _Output:
    """The program's output as a producer for the connection's write buffer."""

    def __init__(self, bridge: "ProcessBridge"):
        self.bridge = bridge

    def pauseProducing(self) -> None:
        self.bridge._process.pauseProducing()

    def resumeProducing(self) -> None:
        self.bridge._process.resumeProducing()

    def stopProducing(self) -> None:
        self.bridge._stop_program()


class _Child(ProcessProtocol):
    def __init__(self, bridge: "ProcessBridge"):
        self.bridge = bridge
        self._errors = LineSplitter()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.bridge.transport.write(data)
            return
        for line in self._errors.feed(data):
            log.info("{program}: {line}", program=self.bridge.program.label,
                     line=line.decode("utf-8", "replace").rstrip())

    def childConnectionLost(self, fd: int) -> None:
        if fd == 1 and self.bridge.transport is not None:
            self.bridge.output_ended()

    def processEnded(self, reason: Failure) -> None:
        self.bridge.program_ended(reason)


@implementer(interfaces.IHalfCloseableProtocol)
class ProcessBridge(Protocol):
    """The stream to and from ``program``; ``ended`` (if given) hears its exit status."""

    def __init__(self, reactor: Any, program: Program,
                 ended: Optional[Callable[[Optional[int]], None]] = None):
        self.reactor = reactor
        self.program = program
        self.ended = ended
        self.child: Optional[_Child] = None
        self._process: Any = None
        self._finished = False
        self._producing = False

    def connectionMade(self) -> None:
        self.child = _Child(self)
        try:
            self._process = self.program.spawn(self.reactor, self.child)
        except OSError as e:
            log.warn("cannot run {argv}: {error}", argv=" ".join(self.program.argv), error=e)
            self.transport.loseConnection()
            self._report(None)
            return
        self.transport.registerProducer(_Output(self), True)
        self._producing = True
        self._process.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if self._process is not None and not self._finished:
            self._process.write(data)

    def readConnectionLost(self) -> None:
        """The peer sent all it will: the program reads to its end of input."""
        self._close_input()

    def writeConnectionLost(self) -> None:
        """The peer reads no more: stop the program."""
        self._stop_program()

    def output_ended(self) -> None:
        """The program wrote all it will: half-close towards the peer."""
        self._stop_producing()
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_program()

    def _close_input(self) -> None:
        if self._process is not None and not self._finished:
            self._process.unregisterProducer()
            self._process.closeStdin()

    def _stop_producing(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def _stop_program(self) -> None:
        if self._process is not None and not self._finished:
            self._close_input()
            try:
                self._process.signalProcess("TERM")
            except ProcessExitedAlready:
                pass

    def program_ended(self, reason: Failure) -> None:
        self._finished = True
        if self.transport is not None:
            self._stop_producing()
            self.transport.loseConnection()
        code = getattr(reason.value, "exitCode", 0)
        self._report(code)

    def _report(self, code: Optional[int]) -> None:
        if self.ended is not None:
            callback, self.ended = self.ended, None
            callback(code)


class Run(ProcessProtocol):
    """A program run to its end: its output (bounded) logged and kept; ``ended``
    fires with (exit status, output)."""

    MAX_OUTPUT = 4096

    def __init__(self, program: Program):
        self.program = program
        self.output = b""
        self.ended: Any = Deferred()
        self._lines = LineSplitter()

    def start(self, reactor: Any, stdin: Optional[int] = None) -> "Run":
        """Spawns it, its input ``stdin`` (a descriptor) or none (raises OSError if it
        cannot start)."""
        self.program.spawn(reactor, self, {0: "w" if stdin is None else stdin, 1: "r", 2: "r"})
        return self

    @property
    def running(self) -> bool:
        return self.transport is not None and not self.ended.called

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output = (self.output + data)[-self.MAX_OUTPUT:]
        for line in self._lines.feed(data):
            log.info("{program}: {line}", program=self.program.label,
                     line=line.decode("utf-8", "replace").rstrip())

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", 0)
        self.ended.callback((code if code is not None else -1,
                             self.output.decode("utf-8", "replace").strip()))


def run_program(reactor: Any, program: Program, stdin: Optional[int] = None) -> Any:
    """Start ``program`` (input: the descriptor ``stdin``, or none); a Deferred firing
    with (exit status, output), or failing if it cannot start."""
    try:
        return Run(program).start(reactor, stdin).ended
    except OSError as e:
        return fail(e)
