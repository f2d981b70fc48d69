"""QVD configuration: ``node.conf`` files layered under the ``configs`` table.

Lookup order for ``Config.get(key, tenant)`` (QVD 4 semantics, see the
reference §6.1):

1. ``l7r.ssl.*`` keys come from the ``ssl_configs`` table only;
2. per-tenant keys (``PER_TENANT``) asked for a tenant: that tenant's
   ``configs`` rows;
3. global ``configs`` rows (tenant -1), unless the key is file-only;
4. ``node.conf``, then the built-in defaults (``qvd/defaults.conf``).

Keys needed before the database can be reached (``FILE_ONLY``) never come
from the database, so a bad row cannot lock a node out of its own DB.
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from typing import Callable, Iterable, Mapping, Optional, TypeVar

DEFAULT_PATH = "/etc/qvd/node.conf"
ENV_PATH = "QVD_CONFIG"
GLOBAL_TENANT = -1

Number = TypeVar("Number", int, float)

FILE_ONLY = ("nodename", "database.", "internal.database.", "log.")
PER_TENANT = (
    "l7r.auth.plugins",
    "l7r.auth.plugin.default.tenant",
    "model.user.login.case-sensitive",
    "auth.ldap.",
    "auth.auto.",
    "l7r.auth.plugin.totp.",
)
SSL_PREFIX = "l7r.ssl."

_BOOLEANS = {"1": True, "true": True, "yes": True, "y": True, "on": True,
             "0": False, "false": False, "no": False, "n": False, "off": False}
_REFERENCE = re.compile(r"\$\{([^}]+)\}")
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class ConfigError(Exception):
    """A configuration file or value that cannot be used."""


class MissingKeyError(ConfigError, KeyError):
    """A mandatory key has no value anywhere."""

    def __init__(self, key: str, needed_by: Optional[str] = None):
        self.key = key
        where = f" (referenced by {needed_by!r})" if needed_by else ""
        super().__init__(
            f"configuration key {key!r}{where} is not set: add it to node.conf"
            " or set it with 'qa config set'"
        )

    def __str__(self) -> str:
        return self.args[0]


def parse_bool(text: str) -> Optional[bool]:
    """QVD's yes/no spellings (1/0, true/false, yes/no, y/n, on/off); None for others."""
    return _BOOLEANS.get(text.strip().lower())


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


@functools.lru_cache(maxsize=4096)  # every lookup asks; the answer never changes
def is_file_only(key: str) -> bool:
    return _matches(key, FILE_ONLY)


@functools.lru_cache(maxsize=4096)
def is_per_tenant(key: str) -> bool:
    return _matches(key, PER_TENANT)


def _unescape(text: str) -> str:
    out = []
    chars = iter(text)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt == "u":
            digits = "".join(next(chars, "") for _ in range(4))
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise ConfigError(f"bad unicode escape \\u{digits}") from None
        else:
            out.append(_ESCAPES.get(nxt, nxt))
    return "".join(out)


# Characters str.splitlines() breaks lines at: a value must not contain them raw.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def escape(text: str, key: bool = False) -> str:
    """``text`` as ``parse_properties`` reads it back unchanged (``_unescape``'s twin).

    Backslashes and line breaks are escaped, and leading blanks, which the parser would
    strip; in a key (``key=True``) also every blank, ``=`` and ``:``, and a leading
    ``#`` or ``!``.
    """
    out = []
    leading = True
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch in _LINE_BREAKS:
            out.append("\\n" if ch == "\n" else f"\\u{ord(ch):04x}")
        elif (ch.isspace() and (key or leading)) or (key and (ch in "=:" or (
                not out and ch in "#!"))):
            out.append("\\" + ch)
        else:
            out.append(ch)
        leading = leading and ch.isspace()
    return "".join(out)


def format_properties(values: Mapping[str, str], header: str = "") -> str:
    """``values`` as node.conf text, sorted, with ``header`` as a comment line first:
    what ``parse_properties`` turns back into ``values``."""
    lines = [f"# {header}\n"] if header else []
    lines += [f"{escape(k, key=True)} = {escape(v)}\n" for k, v in sorted(values.items())]
    return "".join(lines)


def _split_key(line: str) -> tuple[str, str]:
    """Split a logical line at the first unescaped ``=``, ``:`` or blank."""
    i = 0
    while i < len(line) and (line[i] == "\\" or (line[i] not in "=:" and not line[i].isspace())):
        i += 2 if line[i] == "\\" else 1
    key, rest = line[:i], line[i:].lstrip()
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip()
    return key, rest


def parse_properties(text: str, source: str = "<string>") -> dict[str, str]:
    """Parse Java-properties text as QVD does (Config::Properties).

    ``#``/``!`` start comments, a trailing backslash continues the line,
    backslash escapes are processed, a repeated key keeps its last value.
    """
    values: dict[str, str] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start = number + 1
        line = lines[number].lstrip()
        number += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and number < len(lines):
            line = line[:-1] + lines[number].lstrip()
            number += 1
        if _continues(line):
            line = line[:-1]
        raw_key, raw_value = _split_key(line)
        try:
            key, value = _unescape(raw_key), _unescape(raw_value)
        except ConfigError as e:
            raise ConfigError(f"{source}:{start}: {e}") from None
        if not key:
            raise ConfigError(f"{source}:{start}: line has no key: {line!r}")
        values[key] = value
    return values


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def load_file(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    return parse_properties(text, path)


def builtin_defaults() -> dict[str, str]:
    text = resources.files("qvd").joinpath("defaults.conf").read_text(encoding="utf-8")
    return parse_properties(text, "qvd/defaults.conf")


def config_path(explicit: Optional[str] = None) -> str:
    return explicit or os.environ.get(ENV_PATH) or DEFAULT_PATH


class Config:
    """The merged configuration of one process.

    Database rows are swapped in whole by ``replace_db_rows`` (on start and
    on every ``qvd_config_changed``); observers hear about each swap.
    """

    def __init__(self, file_values: Mapping[str, str], path: Optional[str] = None):
        self.path = path
        self._defaults = builtin_defaults()
        self._file = dict(file_values)
        self._db: dict[int, dict[str, str]] = {}
        self._ssl: dict[str, str] = {}
        self._observers: list[Callable[["Config"], None]] = []

    @classmethod
    def load(cls, path: Optional[str] = None) -> "Config":
        """Read node.conf; a missing file is an error only when named explicitly."""
        chosen = config_path(path)
        if not os.path.exists(chosen) and not (path or os.environ.get(ENV_PATH)):
            return cls({}, None)
        return cls(load_file(chosen), chosen)

    # -- database layer -------------------------------------------------
    def replace_db_rows(
        self, rows: Iterable[tuple[int, str, str]], ssl_rows: Iterable[tuple[str, str]] = ()
    ) -> None:
        by_tenant: dict[int, dict[str, str]] = {}
        for tenant_id, key, value in rows:
            by_tenant.setdefault(int(tenant_id), {})[key] = value
        self._db = by_tenant
        self._ssl = dict(ssl_rows)
        for observer in list(self._observers):
            observer(self)

    def add_observer(self, observer: Callable[["Config"], None]) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Callable[["Config"], None]) -> None:
        self._observers.remove(observer)

    # -- lookups -------------------------------------------------------
    def _raw(self, key: str, tenant: Optional[int]) -> Optional[str]:
        if key.startswith(SSL_PREFIX):
            if tenant not in (None, GLOBAL_TENANT):
                raise ConfigError(f"{key} is global; it cannot be looked up per tenant")
            return self._ssl.get(key)
        if not is_file_only(key):
            if tenant not in (None, GLOBAL_TENANT) and is_per_tenant(key):
                value = self._db.get(int(tenant), {}).get(key)
                if value is not None:
                    return value
            value = self._db.get(GLOBAL_TENANT, {}).get(key)
            if value is not None:
                return value
        if key in self._file:
            return self._file[key]
        return self._defaults.get(key)

    def _expand(self, key: str, tenant: Optional[int], seen: tuple[str, ...]) -> str:
        raw = self._raw(key, tenant)
        if raw is None:
            raise MissingKeyError(key, seen[-1] if seen else None)

        def substitute(match: re.Match) -> str:
            ref = match.group(1)
            if ref in seen or ref == key:
                raise ConfigError(f"configuration key {key!r} refers to itself through {ref!r}")
            return self._expand(ref, tenant, seen + (key,))

        return _REFERENCE.sub(substitute, raw)

    def get(self, key: str, tenant: Optional[int] = None, default: Optional[str] = None) -> str:
        """The value of ``key`` with ``${...}`` expanded; ``default`` if unset.

        Without ``default`` an unset key raises ``MissingKeyError``.
        """
        try:
            return self._expand(key, tenant, ())
        except MissingKeyError as e:
            if default is not None and e.key == key:
                return default
            raise

    def has(self, key: str, tenant: Optional[int] = None) -> bool:
        return self._raw(key, tenant) is not None

    def get_int(self, key: str, tenant: Optional[int] = None, default: Optional[int] = None) -> int:
        return self._get_number(key, tenant, default, int, "an integer")

    def get_float(
        self, key: str, tenant: Optional[int] = None, default: Optional[float] = None
    ) -> float:
        return self._get_number(key, tenant, default, float, "a number")

    def _get_number(self, key: str, tenant: Optional[int], default: Optional[Number],
                    parse: Callable[[str], Number], what: str) -> Number:
        """The value read by ``parse``; a ConfigError naming the key and ``what`` it must be."""
        value = self.get(key, tenant, None if default is None else str(default))
        try:
            return parse(value.strip())
        except ValueError:
            raise ConfigError(f"configuration key {key!r} must be {what}, not {value!r}") from None

    def get_bool(
        self, key: str, tenant: Optional[int] = None, default: Optional[bool] = None
    ) -> bool:
        value = self.get(key, tenant, None if default is None else ("1" if default else "0"))
        flag = parse_bool(value) if value.strip() else False  # an empty value is off
        if flag is not None:
            return flag
        raise ConfigError(f"configuration key {key!r} must be 0 or 1, not {value!r}")

    def get_list(self, key: str, tenant: Optional[int] = None) -> list[str]:
        """A comma-separated value as a list of trimmed, non-empty items."""
        return [item.strip() for item in self.get(key, tenant, "").split(",") if item.strip()]

    def db_values(self, tenant: int = GLOBAL_TENANT) -> dict[str, str]:
        """The ``configs`` rows of one tenant, unexpanded (the API's config_get)."""
        return dict(self._db.get(int(tenant), {}))

    def tenants_in_db(self) -> list[int]:
        return sorted(self._db)

    def in_file(self, key: str) -> bool:
        """Whether node.conf itself sets ``key`` (not only the built-in defaults)."""
        return key in self._file

    def fallback(self, key: str) -> Optional[str]:
        """What ``key`` is without the database: node.conf, else the built-in default."""
        return self._file.get(key, self._defaults.get(key))

    def effective(self) -> dict[str, str]:
        """Every known key with its global value, expanded (what a child's config file
        needs: the HKD writes each process VM's vma.conf from it)."""
        keys = set(self._defaults) | set(self._file) | set(self._db.get(GLOBAL_TENANT, {}))
        return {key: self.get(key) for key in sorted(keys)}
