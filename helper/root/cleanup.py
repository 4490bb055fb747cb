"""Undo whatever a helper left behind: from its journal, and from ownership markers when there is none.

``run()`` is what the helper calls at start-up (before creating anything) and what
``tether helper cleanup`` calls. It removes:

* everything the journal (``tether.helper.root.journal``) records: other modules' records (through their
  registered cleanup steps), nftables tables, routes, TUN devices — in that order, the reverse of
  how a session creates them;
* and, with ``sweep`` (the default), anything carrying our ownership markers even if the journal is
  missing or corrupt: links named ``tether*`` whose alias is a ``tether-helper`` owner mark, routes
  with our protocol number, nftables tables named ``tether_*`` whose comment is an owner mark.

It is idempotent: things already gone are fine, and a run with nothing to do changes nothing. It
refuses to undo a *running* helper's work (the journal's pid is alive and is not the caller) unless
``force``; marked objects whose owner mark names another live helper are skipped the same way.
The journal is deleted once everything is gone; when something could not be removed it stays, so a
later run can retry.

Other modules add their own steps with ``register_cleanup(kind, fn)``: ``fn(records)`` gets the
journal's records of that kind (``Journal.add_record(kind, ...)``; an empty list when the journal is
missing or holds none), undoes them, and should also look for its own marked leftovers. It returns
descriptions of what it removed (or None), raises on failure, and must be idempotent. Records name
the module that registers their kind, and ``run`` imports it first, so a bare
``tether helper cleanup`` process finds every step.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import ipaddress
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.helper.root.journal import (
    DEFAULT_JOURNAL_PATH,
    LINK_PREFIX,
    NFT_TABLE_PREFIX,
    ROUTE_PROTO,
    ExtraRecord,
    JournalCorrupt,
    JournalState,
    NftTableRecord,
    OwnerMark,
    parse_owner_mark,
    process_start_time,
    read_journal,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

__all__ = [
    "CleanupFn",
    "CleanupRefused",
    "CleanupReport",
    "register_cleanup",
    "registered_kinds",
    "run",
    "unregister_cleanup",
]

log = logging.getLogger(__name__)

CleanupFn = Callable[[Sequence[ExtraRecord]], Iterable[str] | None]

_REGISTRY: dict[str, CleanupFn] = {}
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL)


def register_cleanup(kind: str, fn: CleanupFn) -> None:
    """Register the cleanup step for journal records of ``kind`` (see the module docstring).

    Registering the same kind again replaces the step (modules may be reloaded).
    """
    if not _KIND_RE.match(kind):
        raise ValueError(f"invalid cleanup kind {kind!r}: use lower-case letters, digits, '.', '_', '-'")
    if not callable(fn):
        raise TypeError(f"cleanup step for {kind!r} is not callable")
    _REGISTRY[kind] = fn


def unregister_cleanup(kind: str) -> None:
    _REGISTRY.pop(kind, None)


def registered_kinds() -> list[str]:
    return list(_REGISTRY)


class CleanupRefused(RuntimeError):
    """The journal belongs to a helper that is still running."""

    def __init__(self, owner: OwnerMark, path: Path) -> None:
        self.owner = owner
        self.path = path
        super().__init__(
            f"the helper that wrote {path} (pid {owner.pid}) is still running; stop it first, or clean up with force"
        )


@dataclass
class CleanupReport:
    journal: str = "missing"  # "missing", "read" or "corrupt"
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        lines = [f"removed {item}" for item in self.removed]
        lines += [f"left alone {item}" for item in self.skipped]
        lines += list(self.notes)
        lines += [f"error: {item}" for item in self.errors]
        return "\n".join(lines) if lines else "nothing to clean up"


def _live_other_helper(owner: OwnerMark | None) -> bool:
    """Whether ``owner`` names a helper process that still runs and is not the caller."""
    if owner is None or owner.pid is None or owner.pid == os.getpid():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if owner.start_time is not None:
        start = process_start_time(owner.pid)
        if start is not None and start != owner.start_time:
            return False  # the pid was reused by an unrelated process
    return True


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return exc.errno if isinstance(exc, OSError) else None


# --- other modules' steps --------------------------------------------------------------------------------


def _import_providers(state: JournalState | None, modules: Iterable[str], report: CleanupReport) -> None:
    wanted = list(modules)
    if state is not None:
        wanted += [r.module for r in state.records if r.module]
    for name in dict.fromkeys(wanted):
        if not name.startswith("tether."):
            report.errors.append(f"refusing to import {name!r} for cleanup: not a tether module")
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            report.errors.append(f"cannot import {name} for cleanup: {exc}")


def _run_registered(state: JournalState | None, sweep: bool, report: CleanupReport) -> None:
    records = state.records if state is not None else ()
    for kind, fn in list(_REGISTRY.items()):
        mine = [r for r in records if r.kind == kind]
        if not mine and not sweep:
            continue
        try:
            done = fn(mine)
        except Exception as exc:
            report.errors.append(f"{kind}: {exc}")
            continue
        report.removed.extend(f"{kind}: {item}" for item in (done or ()))
    for kind in dict.fromkeys(r.kind for r in records):
        if kind not in _REGISTRY:
            report.errors.append(f"no cleanup step is registered for {kind!r} records")


# --- nftables ----------------------------------------------------------------------------------------------

_TABLE_LINE = re.compile(r"^table (\S+) (\S+)$")
_COMMENT_LINE = re.compile(r'^\s*comment "(.*)"$')


def _nft(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)


def _nft_owner(binary: str, table: NftTableRecord) -> OwnerMark | None:
    out = _nft(binary, "list", "table", table.family, table.name)
    if out.returncode != 0:
        return None
    lines = out.stdout.splitlines()
    for line in lines[1:3]:  # the table's own comment comes right after its opening line
        match = _COMMENT_LINE.match(line)
        if match:
            return parse_owner_mark(match.group(1))
    return None


def _clean_nft(state: JournalState | None, sweep: bool, force: bool, report: CleanupReport, nft: str) -> None:
    journaled = list(state.nft_tables) if state is not None else []
    binary = shutil.which(nft)
    if binary is None:
        if journaled:
            report.errors.append(f"cannot remove nftables tables ({', '.join(map(str, journaled))}): {nft} not found")
        return
    targets: dict[NftTableRecord, OwnerMark | None] = {t: None for t in journaled}
    listing = _nft(binary, "list", "tables")
    if listing.returncode != 0:
        report.errors.append(f"nft list tables failed: {listing.stderr.strip()}")
        return
    present = set()
    for line in listing.stdout.splitlines():
        match = _TABLE_LINE.match(line.strip())
        if match:
            present.add(NftTableRecord(match.group(1), match.group(2)))
    for table in sorted(present):
        if table in targets:
            targets[table] = _nft_owner(binary, table)
        elif sweep and table.name.startswith(NFT_TABLE_PREFIX):
            owner = _nft_owner(binary, table)
            if owner is not None:
                targets[table] = owner
    for table, owner in targets.items():
        if table not in present:
            continue
        if _live_other_helper(owner) and not force:
            report.skipped.append(f"nftables {table} (owned by running helper pid {owner.pid})")  # type: ignore[union-attr]
            continue
        out = _nft(binary, "delete", "table", table.family, table.name)
        if out.returncode == 0:
            report.removed.append(f"nftables {table}")
        elif "No such file or directory" not in out.stderr:
            report.errors.append(f"cannot remove nftables {table}: {out.stderr.strip()}")


# --- links and routes (Linux) ---------------------------------------------------------------------------


def _route_dst(msg: Any) -> str:
    dst = msg.get("RTA_DST") or ("0.0.0.0" if msg["family"] == 2 else "::")
    return str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))


def _route_table(msg: Any) -> int:
    return msg.get("RTA_TABLE") or msg["table"]


def _clean_links_routes(state: JournalState | None, sweep: bool, force: bool, report: CleanupReport) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links: dict[int, tuple[str, OwnerMark | None]] = {}
        for msg in ipr.link("dump"):
            links[msg["index"]] = (msg.get("IFLA_IFNAME") or "", parse_owner_mark(msg.get("IFLA_IFALIAS")))
        protected = {
            index
            for index, (_, owner) in links.items()
            if owner is not None and _live_other_helper(owner) and not force
        }
        _clean_routes(ipr, state, sweep, links, protected, report)
        _clean_links(ipr, state, sweep, links, protected, report)


def _clean_routes(
    ipr: IPRoute,
    state: JournalState | None,
    sweep: bool,
    links: dict[int, tuple[str, OwnerMark | None]],
    protected: set[int],
    report: CleanupReport,
) -> None:
    journaled = {(r.dst, r.proto, r.table) for r in state.routes} if state is not None else set()
    protos = {proto for _, proto, _ in journaled} | ({ROUTE_PROTO} if sweep else set())
    if not protos:
        return
    for msg in ipr.route("dump"):
        proto, table = msg["proto"], _route_table(msg)
        if proto not in protos:
            continue
        dst = _route_dst(msg)
        if not ((sweep and proto == ROUTE_PROTO) or (dst, proto, table) in journaled):
            continue
        oif = msg.get("RTA_OIF")
        dev = links.get(oif, (f"if{oif}", None))[0]
        what = f"route {dst} dev {dev} proto {proto}" + ("" if table == 254 else f" table {table}")
        if oif in protected:
            report.skipped.append(f"{what} (device owned by a running helper)")
            continue
        args: dict[str, Any] = {"dst": dst, "proto": proto, "table": table, "scope": msg["scope"]}
        if oif is not None:
            args["oif"] = oif
        if msg.get("RTA_PRIORITY") is not None:
            args["priority"] = msg.get("RTA_PRIORITY")
        try:
            ipr.route("del", **args)
        except Exception as exc:
            if _code(exc) not in _GONE:
                report.errors.append(f"cannot remove {what}: {exc}")
            continue
        report.removed.append(what)


def _clean_links(
    ipr: IPRoute,
    state: JournalState | None,
    sweep: bool,
    links: dict[int, tuple[str, OwnerMark | None]],
    protected: set[int],
    report: CleanupReport,
) -> None:
    journaled = set(state.links) if state is not None else set()
    for index, (name, owner) in sorted(links.items()):
        if name in journaled and owner is None:
            report.skipped.append(f"link {name} (listed in the journal but not marked as ours)")
            continue
        if owner is None or not (name in journaled or (sweep and name.startswith(LINK_PREFIX))):
            continue
        if index in protected:
            report.skipped.append(f"link {name} (owned by running helper pid {owner.pid})")
            continue
        try:
            ipr.link("del", index=index)
        except Exception as exc:
            if _code(exc) not in _GONE:
                report.errors.append(f"cannot remove link {name}: {exc}")
            continue
        report.removed.append(f"link {name}")


def _clean_linux(state: JournalState | None, sweep: bool, force: bool, report: CleanupReport, nft: str) -> None:
    _clean_nft(state, sweep, force, report, nft)
    if sweep or (state is not None and (state.routes or state.links)):
        try:
            _clean_links_routes(state, sweep, force, report)
        except Exception as exc:
            report.errors.append(f"cannot clean up links and routes: {exc}")


def _clean_darwin(state: JournalState | None, sweep: bool, force: bool, report: CleanupReport, nft: str) -> None:
    # A utun belongs to the control socket that created it: the kernel destroys it, and the routes through
    # it, when its helper exits, crash or not (tun_darwin journals no links for that reason). The routes
    # the journal lists were already removed by apply_darwin's registered step, which also covers routes
    # a crash left pointing elsewhere.
    for name in state.links if state is not None else ():
        report.notes.append(f"link {name}: a utun vanishes with the process that opened it")


def _remove_cut_writes(journal: Path, report: CleanupReport) -> None:
    """A helper killed while it rewrote its journal leaves the temporary file of that atomic write
    (tether.runtime.atomicfile); nothing else reads it, and it would keep the socket directory from going."""
    for leftover in journal.parent.glob(f".{journal.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            report.notes.append(f"removed {leftover}, a journal write cut short")


PlatformCleaner = Callable[[JournalState | None, bool, bool, CleanupReport, str], None]
# Per platform: links, routes and firewall state left by a crashed helper, after the registered steps.
PLATFORM_CLEANERS: dict[str, PlatformCleaner] = {
    "linux": _clean_linux,
    "darwin": _clean_darwin,
    "win32": lambda *args: importlib.import_module("tether.helper.root.cleanup_windows").clean_links(*args),
}


# --- the whole run ---------------------------------------------------------------------------------------


def run(
    journal_path: Path | str = DEFAULT_JOURNAL_PATH,
    *,
    sweep: bool = True,
    force: bool = False,
    modules: Iterable[str] = (),
    nft: str = "nft",
    platform: str = sys.platform,
) -> CleanupReport:
    """Undo a previous helper's changes in the calling thread's network namespace; see the module docstring.

    ``sweep=False`` removes only what the journal lists. ``modules`` are imported first (modules
    whose cleanup steps should run even without journal records). Raises CleanupRefused when the
    journal belongs to a running helper (unless ``force``); otherwise problems are collected in the
    report (``report.ok``), and the journal is kept when there were any.
    """
    path = Path(journal_path)
    report = CleanupReport()
    state: JournalState | None = None
    try:
        state = read_journal(path)
        report.journal = "missing" if state is None else "read"
    except JournalCorrupt as exc:
        report.journal = "corrupt"
        report.notes.append(f"{exc}; cleaning up by ownership markers only")
        if not sweep:
            report.errors.append(f"{exc}, and sweeping by ownership markers is off")
            return report
    if state is not None and _live_other_helper(state.owner) and not force:
        raise CleanupRefused(state.owner, path)
    _remove_cut_writes(path, report)

    _import_providers(state, modules, report)
    _run_registered(state, sweep, report)

    cleaner = PLATFORM_CLEANERS.get(platform)
    if cleaner is not None:
        cleaner(state, sweep, force, report, nft)
    elif state is not None and (state.routes or state.links or state.nft_tables):
        report.errors.append(f"cleaning up links, routes and nftables is not implemented on {platform}")

    if report.ok and report.journal != "missing":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        report.notes.append(f"journal {path} removed")
    for line in str(report).splitlines():
        log.info("cleanup: %s", line)
    return report
