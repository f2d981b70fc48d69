"""One libvirt connection, used only from its own small thread pool.

libvirt calls block (on libvirtd, on QEMU), so none runs in the reactor thread.  The
connection is opened on first use and opened again after libvirtd went away.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from qvd.config import ConfigError

try:
    import libvirt
except ImportError:  # the default process hypervisor does not need it
    libvirt = None

T = TypeVar("T")


def require_libvirt() -> Any:
    if libvirt is None:
        raise ConfigError("the kvm and lxc hypervisors need libvirt-python:"
                          " pip install 'qvd-node[libvirt]' (Debian: libvirt-dev to build it)")
    return libvirt


class LibvirtConnection:
    def __init__(self, reactor: Any, uri: str, threads_max: int):
        self.module = require_libvirt()
        self.module.registerErrorHandler(lambda *_: None, None)  # errors are raised, not printed
        self.reactor = reactor
        self.uri = uri
        self._conn: Optional[Any] = None
        self._pool = ThreadPool(1, max(1, threads_max), name=f"libvirt {uri}")
        self._pool.start()

    def call(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """``fn(connection, *args)`` in the pool."""
        return threads.deferToThreadPool(self.reactor, self._pool, self._call, fn, *args)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._connection()
        try:
            return fn(conn, *args)
        except self.module.libvirtError:
            if not _alive(conn):
                self._conn = None
                _close(conn)
            raise

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or not _alive(conn):
            conn = self._conn = self.module.open(self.uri)
        return conn

    def close(self) -> None:
        """Stop the pool (waiting for calls in progress) and close the connection."""
        self._pool.stop()
        if self._conn is not None:
            _close(self._conn)
            self._conn = None


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:
        return False


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass
