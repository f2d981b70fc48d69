"""Where a daemon's log goes, at which level and in which format (``log.*`` in node.conf
and vma.conf, read before the database).

``log.level`` is QVD 4's (``ALL DEBUG INFO WARN ERROR FATAL OFF``): events below
it are dropped whatever the destination.  ``log.format`` is ``text`` (Twisted's
usual lines) or ``json``: one JSON object a line, with the event's time, level,
namespace, system, formatted message and every field of its own (``login``,
``vm_id``...), for log shippers.  The destination, first match wins:

1. ``twistd --syslog``: syslog, as before (text; syslog stamps its own lines);
2. ``twistd --logfile FILE`` (``-``: standard output): that file, as before;
3. ``log.filename`` set in the file: that file (``-``: standard output), opened
   for appending so that logrotate's ``copytruncate`` can rotate it;
4. ``twistd --nodaemon`` (systemd, ``./run-node``, the tests): standard output,
   which systemd sends to the journal;
5. a daemon in the background: ``log.filename``'s default,
   ``${path.log}/qvd.log``, where QVD 4 logs (instead of twistd's ``twistd.log``).

twistd takes the observer from the application's ``ILogObserver`` component,
which ``offer`` sets; ``twistd --logger`` (how L7R workers send their events to
the first process) overrides it, and the first process filters what it relays.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Optional, TextIO

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, ILogObserver, LegacyLogObserverWrapper,
    LogLevel, LogLevelFilterPredicate, PredicateResult, formatEvent, formatTime,
    textFileLogObserver,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from qvd.config import Config, ConfigError

LEVELS: dict[str, Optional[LogLevel]] = {
    "ALL": LogLevel.debug, "TRACE": LogLevel.debug, "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info, "WARN": LogLevel.warn, "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error, "FATAL": LogLevel.critical, "CRITICAL": LogLevel.critical,
    "OFF": None,
}
FORMATS = ("text", "json")
# keys of legacy (twisted.python.log) events that are not fields of the event
_LEGACY_KEYS = frozenset({"message", "isError", "system", "time", "format", "why", "failure"})


def level(config: Config) -> Optional[LogLevel]:
    """The lowest level logged (None: nothing is)."""
    name = config.get("log.level", default="INFO").strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"log.level = {name!r}: use one of {', '.join(LEVELS)}")
    return LEVELS[name]


def log_format(config: Config) -> str:
    name = config.get("log.format", default="text").strip().lower()
    if name not in FORMATS:
        raise ConfigError(f"log.format = {name!r}: use text or json")
    return name


def _plain(value: Any) -> Any:
    """``value`` if JSON can carry it as is, else its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def json_line(event: Mapping[str, Any]) -> str:
    """One event as one line of JSON: time, level, namespace, system, message, then its
    own fields (a failure as its traceback)."""
    level_ = event.get("log_level")
    record: dict[str, Any] = {
        "time": formatTime(event.get("log_time"), "%Y-%m-%dT%H:%M:%S.%f%z"),
        "level": level_.name if isinstance(level_, LogLevel) else "info",
        "namespace": event.get("log_namespace"),
        "system": event.get("log_system"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in _LEGACY_KEYS and key not in record:
            record[key] = _plain(value)
    return json.dumps(record, ensure_ascii=False) + "\n"


def stream_observer(stream: TextIO, fmt: str) -> ILogObserver:
    return FileLogObserver(stream, json_line) if fmt == "json" else textFileLogObserver(stream)


def filtered(observer: ILogObserver, lowest: Optional[LogLevel]) -> ILogObserver:
    """``observer`` behind the ``log.level`` filter."""
    if lowest is None:  # OFF: nothing passes
        return FilteringLogObserver(observer, [lambda event: PredicateResult.no])
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=lowest)])


def append_file(path: str) -> TextIO:
    """``path`` opened for appending (O_APPEND: a logrotate ``copytruncate`` leaves no hole)."""
    directory = os.path.dirname(path)
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
        return open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConfigError(f"cannot open the log file {path} (log.filename):"
                          f" {e.strerror}") from None


def observer(config: Config, twistd: Optional[Mapping[str, Any]]) -> Optional[ILogObserver]:
    """The observer a daemon run by twistd with options ``twistd`` should log to; None when
    twistd decides alone (not run by twistd, or ``--logger``)."""
    if twistd is None or twistd.get("logger"):
        return None
    lowest, fmt = level(config), log_format(config)
    if twistd.get("syslog"):
        from twisted.python.syslog import SyslogObserver
        syslog = SyslogObserver(twistd.get("prefix") or "")
        base: ILogObserver = LegacyLogObserverWrapper(syslog.emit)
    elif twistd.get("logfile"):
        name = twistd["logfile"]
        base = stream_observer(sys.stdout if name == "-" else LogFile.fromFullPath(name), fmt)
    elif config.in_file("log.filename") or not twistd.get("nodaemon"):
        name = config.get("log.filename").strip()
        base = stream_observer(sys.stdout if name in ("", "-") else append_file(name), fmt)
    else:
        base = stream_observer(sys.stdout, fmt)
    return filtered(base, lowest)


def offer(application: Any, chosen: Optional[ILogObserver]) -> None:
    """Make ``chosen`` the log observer twistd starts for ``application`` (the
    ``Application`` twistd puts the daemon's top service in)."""
    if chosen is not None and isinstance(application, Componentized):
        application.setComponent(ILogObserver, chosen)


def twistd_options(options: Any) -> Optional[Mapping[str, Any]]:
    """twistd's own options, above a plugin's (None when the plugin was not run by twistd)."""
    return getattr(options, "parent", None)
