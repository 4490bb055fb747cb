"""What the helper changed on this machine, written down as it happens, so a crash can be undone.

The journal is one small JSON file (default ``journal.json`` in the helper's runtime directory:
``/run/tether`` on Linux, ``/var/run/tether`` on macOS, both cleared at boot, which undoes all of it
anyway; ``%ProgramData%\\Tether`` on Windows, where the next start's cleanup finds what is already
gone). Every change is written atomically (a temporary file in the same directory, fsync, rename),
so a reader sees either the old or the new content, never half of it. ``tether.helper.root.cleanup.run``
reads it at the next start, or from ``tether helper cleanup``.

It records:

* ``links``: network devices the helper created (TUN devices);
* ``routes``: routes the helper added (destination, device, protocol number, table);
* ``nft_tables``: nftables tables the helper created (family, name);
* ``records``: opaque entries other modules add (e.g. the resolver configurator), each with a
  ``kind`` that names the cleanup step able to undo it (see ``tether.helper.root.cleanup``), a ``key``
  unique within the kind, JSON data, and the module that registers that step;
* the helper's pid and process start time, so cleanup can refuse to undo a *running* helper's work.

The journal is not the only way cleanup finds our leftovers: everything the helper creates also
carries an ownership marker (below), so a missing or corrupt journal still leads to a clean host.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tether.helper.api.paths import runtime_dir
from tether.runtime.atomicfile import write_atomic

__all__ = [
    "DEFAULT_JOURNAL_PATH",
    "IFALIAS_PREFIX",
    "JOURNAL_VERSION",
    "LINK_PREFIX",
    "MAIN_TABLE",
    "NFT_TABLE_PREFIX",
    "ROUTE_PROTO",
    "ExtraRecord",
    "Journal",
    "JournalCorrupt",
    "JournalState",
    "NftTableRecord",
    "OwnerMark",
    "RouteRecord",
    "owner_mark",
    "parse_owner_mark",
    "process_start_time",
    "read_journal",
]

# In the helper's runtime directory, per platform (helper.api.paths.RUNTIME_DIRS).
DEFAULT_JOURNAL_PATH = runtime_dir() / "journal.json"
JOURNAL_VERSION = 1

# --- ownership markers -----------------------------------------------------------------------------
#
# * Links: the name starts with LINK_PREFIX and the interface alias (IFLA_IFALIAS, `ip link show`
#   prints it as "alias") is an owner mark, e.g. "tether-helper pid=1234 start=98765".
# * Routes: the route's protocol number is ROUTE_PROTO. The kernel keeps it verbatim and matches it on
#   delete, so "delete dst X proto 126" can never remove somebody else's route to X. 126 (0x7e) is not
#   used by the kernel, iproute2's rt_protos list or any routing daemon we know of.
# * nftables: the table name starts with NFT_TABLE_PREFIX and the table's comment is an owner mark.

LINK_PREFIX = "tether"
IFALIAS_PREFIX = "tether-helper"
ROUTE_PROTO = 126
MAIN_TABLE = 254
NFT_TABLE_PREFIX = "tether_"

_MARK_RE = re.compile(r"^tether-helper(?: pid=(\d+))?(?: start=(\d+))?(?:\s.*)?$")


@dataclass(frozen=True)
class OwnerMark:
    """Who created an object: the helper's pid and start time (None when unknown)."""

    pid: int | None = None
    start_time: int | None = None

    def __str__(self) -> str:
        return owner_mark(self.pid, self.start_time)


def owner_mark(pid: int | None = None, start_time: int | None = None) -> str:
    """The marker text for a link alias or an nft table comment: ``tether-helper pid=N start=T``."""
    text = IFALIAS_PREFIX
    if pid is not None:
        text += f" pid={pid}"
        if start_time is not None:
            text += f" start={start_time}"
    return text


def parse_owner_mark(text: str | None) -> OwnerMark | None:
    """The owner named by a marker text, or None when the text is not one of our markers."""
    if not text:
        return None
    match = _MARK_RE.match(text.strip())
    if match is None:
        return None
    pid, start = match.groups()
    return OwnerMark(int(pid) if pid else None, int(start) if start else None)


def process_start_time(pid: int | None = None) -> int | None:
    """A process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the fields after it don't.
    fields = stat.rsplit(")", 1)[1].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


# --- records ---------------------------------------------------------------------------------------


class JournalCorrupt(ValueError):
    """The journal file exists but cannot be read as a journal."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"journal {path} is unreadable: {reason}")


@dataclass(frozen=True, order=True)
class RouteRecord:
    dst: str
    dev: str
    proto: int = ROUTE_PROTO
    table: int = MAIN_TABLE

    def __str__(self) -> str:
        table = "" if self.table == MAIN_TABLE else f" table {self.table}"
        return f"{self.dst} dev {self.dev} proto {self.proto}{table}"


@dataclass(frozen=True, order=True)
class NftTableRecord:
    family: str
    name: str

    def __str__(self) -> str:
        return f"table {self.family} {self.name}"


@dataclass(frozen=True)
class ExtraRecord:
    """A change made by another module; undone by the cleanup step registered for ``kind``."""

    kind: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)
    # The module that registers the cleanup step for `kind` (imported by cleanup before it runs).
    module: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "data": dict(self.data), "module": self.module}


@dataclass(frozen=True)
class JournalState:
    pid: int | None = None
    start_time: int | None = None
    links: tuple[str, ...] = ()
    routes: tuple[RouteRecord, ...] = ()
    nft_tables: tuple[NftTableRecord, ...] = ()
    records: tuple[ExtraRecord, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.links or self.routes or self.nft_tables or self.records)

    @property
    def owner(self) -> OwnerMark:
        return OwnerMark(self.pid, self.start_time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JOURNAL_VERSION,
            "pid": self.pid,
            "start_time": self.start_time,
            "links": list(self.links),
            "routes": [{"dst": r.dst, "dev": r.dev, "proto": r.proto, "table": r.table} for r in self.routes],
            "nft_tables": [{"family": t.family, "name": t.name} for t in self.nft_tables],
            "records": [r.to_dict() for r in self.records],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, text: str, path: Path = Path("<journal>")) -> JournalState:
        """Parse a journal, strictly: anything unexpected raises JournalCorrupt naming the problem."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise JournalCorrupt(path, f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise JournalCorrupt(path, "not a JSON object")
        if data.get("version") != JOURNAL_VERSION:
            raise JournalCorrupt(path, f"unknown version {data.get('version')!r}")
        try:
            return cls(
                pid=_opt_int(data.get("pid"), "pid"),
                start_time=_opt_int(data.get("start_time"), "start_time"),
                links=tuple(_str(x, "links[]") for x in _list(data.get("links", []), "links")),
                routes=tuple(
                    RouteRecord(
                        dst=_str(r.get("dst"), "routes[].dst"),
                        dev=_str(r.get("dev"), "routes[].dev"),
                        proto=_int(r.get("proto", ROUTE_PROTO), "routes[].proto"),
                        table=_int(r.get("table", MAIN_TABLE), "routes[].table"),
                    )
                    for r in _dicts(data.get("routes", []), "routes")
                ),
                nft_tables=tuple(
                    NftTableRecord(
                        _str(t.get("family"), "nft_tables[].family"), _str(t.get("name"), "nft_tables[].name")
                    )
                    for t in _dicts(data.get("nft_tables", []), "nft_tables")
                ),
                records=tuple(
                    ExtraRecord(
                        kind=_str(r.get("kind"), "records[].kind"),
                        key=_str(r.get("key"), "records[].key"),
                        data=_dict(r.get("data", {}), "records[].data"),
                        module=_str(r.get("module", ""), "records[].module"),
                    )
                    for r in _dicts(data.get("records", []), "records")
                ),
            )
        except _Bad as exc:
            raise JournalCorrupt(path, str(exc)) from None


class _Bad(ValueError):
    pass


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(f"{what} is not a list")
    return value


def _dicts(value: Any, what: str) -> list[dict[str, Any]]:
    items = _list(value, what)
    for item in items:
        if not isinstance(item, dict):
            raise _Bad(f"{what} holds {item!r}, not an object")
    return items


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} is {value!r}, not an object")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is {value!r}, not a string")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"{what} is {value!r}, not an integer")
    return value


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def read_journal(path: Path | str = DEFAULT_JOURNAL_PATH) -> JournalState | None:
    """The journal at ``path``; None if there is none; JournalCorrupt if it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise JournalCorrupt(path, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise JournalCorrupt(path, exc.strerror or str(exc)) from None
    return JournalState.loads(text, path)


def _write_atomically(path: Path, text: str) -> None:
    # Durable (fsync), because the next helper's cleanup depends on it; private, because it names what
    # the helper changed on the host.
    write_atomic(path, text, mode=0o600, make_parents=True, parents_mode=0o700)


class Journal:
    """The running helper's journal: every method records one change and rewrites the file atomically.

    Creating a Journal starts a fresh one for this process (pid and start time), replacing any file at
    ``path``: run ``tether.helper.root.cleanup.run`` first, it undoes what an earlier helper left behind.
    Thread-safe. Recording an item that is already there, or dropping one that is not, is a no-op.
    """

    def __init__(self, path: Path | str = DEFAULT_JOURNAL_PATH, *, pid: int | None = None) -> None:
        self.path = Path(path)
        pid = os.getpid() if pid is None else pid
        start = process_start_time(pid)
        self._lock = threading.Lock()
        self._state = JournalState(pid=pid, start_time=start)
        _write_atomically(self.path, self._state.dumps())

    @property
    def state(self) -> JournalState:
        return self._state

    @property
    def owner(self) -> OwnerMark:
        """The marker to put on links and nft tables this helper creates."""
        return self._state.owner

    def _update(self, **changes: Any) -> None:
        new = replace(self._state, **changes)
        if new != self._state:
            _write_atomically(self.path, new.dumps())
            self._state = new

    # links
    def add_link(self, name: str) -> None:
        with self._lock:
            if name not in self._state.links:
                self._update(links=(*self._state.links, name))

    def remove_link(self, name: str) -> None:
        with self._lock:
            self._update(links=tuple(n for n in self._state.links if n != name))

    # routes
    def add_routes(self, routes: Iterable[RouteRecord]) -> None:
        with self._lock:
            known = set(self._state.routes)
            new = [r for r in dict.fromkeys(routes) if r not in known]
            if new:
                self._update(routes=(*self._state.routes, *new))

    def remove_routes(self, routes: Iterable[RouteRecord]) -> None:
        with self._lock:
            gone = set(routes)
            self._update(routes=tuple(r for r in self._state.routes if r not in gone))

    # nftables
    def add_nft_table(self, family: str, name: str) -> None:
        record = NftTableRecord(family, name)
        with self._lock:
            if record not in self._state.nft_tables:
                self._update(nft_tables=(*self._state.nft_tables, record))

    def remove_nft_table(self, family: str, name: str) -> None:
        record = NftTableRecord(family, name)
        with self._lock:
            self._update(nft_tables=tuple(t for t in self._state.nft_tables if t != record))

    # other modules' records
    def add_record(self, kind: str, key: str, data: Mapping[str, Any] | None = None, *, module: str = "") -> None:
        """Record a change another module made (replacing an earlier record with the same kind and key).

        ``data`` must be JSON-serialisable; ``module`` names the module that registers the cleanup step
        for ``kind``, so ``tether helper cleanup`` can import it.
        """
        record = ExtraRecord(kind, key, dict(data or {}), module)
        json.dumps(record.to_dict())  # fail here, in the caller, rather than when writing
        with self._lock:
            kept = tuple(r for r in self._state.records if (r.kind, r.key) != (kind, key))
            self._update(records=(*kept, record))

    def remove_record(self, kind: str, key: str) -> None:
        with self._lock:
            self._update(records=tuple(r for r in self._state.records if (r.kind, r.key) != (kind, key)))

    def discard(self) -> None:
        """Delete the file: the helper undid everything itself (clean shutdown)."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._state = JournalState(pid=self._state.pid, start_time=self._state.start_time)
