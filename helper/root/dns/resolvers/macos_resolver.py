"""macOS: one ``/etc/resolver/<domain>`` file per routing domain, pointing that domain at our DNS server.

macOS's resolver (see resolver(5)) sends names under a domain to the nameserver of the file named after
it, so each routing domain (the cluster domain, every mapped namespace, ``svc``, the include-suffixes,
the reverse zones of the routed subnets, and our search domain) gets a file::

    # tether-helper pid=812 written by Tether; removed on disconnect
    domain cluster.local
    nameserver 127.0.0.1
    port 53535

Single labels: macOS never sends ``web`` to a per-domain resolver, so the cluster domain's file also
carries ``search <search domain>``. The OS appends it (``web`` becomes ``web.tether.local``), the search
domain's own file sends that to us, and the DNS rules read it as the service ``web`` in the current
namespace (``tether.helper.root.dns.rules``).

Every file is written atomically (``tether.runtime.atomicfile``) and starts with our ownership marker.
A file of the same name without the marker belongs to someone else: apply refuses before writing
anything. revert and cleanup_stale remove only files carrying our marker (cleanup_stale: not those of
another running helper). mDNSResponder watches the directory; the cache is flushed with
``dscacheutil -flushcache`` after each change.

The upstream (for names that are not the cluster's) is read from ``scutil --dns``: the nameservers of
the unscoped resolvers that serve no particular domain (a full-tunnel VPN's when one is up), in order;
when there is none, those of the scoped resolvers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
from pathlib import Path

from tether.helper.root.dns.resolvers.base import RESTORED_ON_RESTART, IPAddress, ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.linux_nft import _owned_by_another_live_helper
from tether.helper.root.journal import Journal, owner_mark, parse_owner_mark, process_start_time
from tether.helper.root.oscommand import CommandFailed, CommandRunner, run_command
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.helper.root.dns.resolvers")

__all__ = ["MODE", "MacosResolverConfigurator", "parse_scutil_dns", "resolver_file", "resolver_files"]

MODE = "macos-resolver"
RESOLVER_DIR = Path("/etc/resolver")
MARKER_NOTE = "written by Tether; removed on disconnect"
FLUSH = ("dscacheutil", "-flushcache")
SCUTIL_DNS = ("scutil", "--dns")
_LABELS = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def _file_name(domain: str) -> str:
    name = domain.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not _LABELS.match(name):
        raise ResolverError(f"cannot write a resolver file for domain {domain!r}: not a DNS name")
    return name


def resolver_file(domain: str, settings: ResolverSettings, marker: str, search: str = "") -> str:
    """The text of one /etc/resolver file (see the module docstring)."""
    lines = [f"# {marker}", f"domain {_file_name(domain)}", f"nameserver {settings.server}", f"port {settings.port}"]
    if search:
        lines.append(f"search {_file_name(search)}")
    return "\n".join(lines) + "\n"


def resolver_files(settings: ResolverSettings, marker: str) -> dict[str, str]:
    """File name -> text for every routing domain; the first (the cluster domain) carries the search line."""
    if not settings.routing_domains:
        raise ResolverError("no routing domains to send to the cluster: refusing to write no resolver files")
    search = settings.search_domain
    files: dict[str, str] = {}
    for index, domain in enumerate(settings.routing_domains):
        name = _file_name(domain)
        if name not in files:
            files[name] = resolver_file(domain, settings, marker, search if index == 0 else "")
    if search and _file_name(search) not in files:
        files[_file_name(search)] = resolver_file(search, settings, marker)
    return files


def parse_scutil_dns(text: str) -> tuple[IPAddress, ...]:
    """The upstream nameservers in ``scutil --dns`` output (see the module docstring)."""
    sections: dict[bool, list[dict[str, list[str]]]] = {False: [], True: []}
    scoped = False
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("DNS configuration"):
            scoped = "scoped" in line
            current = None
        elif line.startswith("resolver #"):
            current = {}
            sections[scoped].append(current)
        elif current is not None and ":" in line:
            key, _, value = line.partition(":")
            current.setdefault(re.sub(r"\[\d+\]$", "", key.strip()), []).append(value.strip())
    for part in (False, True):
        found: list[IPAddress] = []
        for resolver in sections[part]:
            if "domain" in resolver or "mdns" in " ".join(resolver.get("options", [])):
                continue
            for value in resolver.get("nameserver", []):
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(value)
                    if address not in found:
                        found.append(address)
        if found:
            return tuple(found)
    return ()


class MacosResolverConfigurator:
    mode = MODE
    crash_safety = (
        f"{RESTORED_ON_RESTART}: launchd restarts it (KeepAlive), its start-up cleanup removes the /etc/resolver files"
    )

    def __init__(
        self, resolver_dir: Path = RESOLVER_DIR, run: CommandRunner | None = None, journal: Journal | None = None
    ) -> None:
        # ``journal`` is taken as every configurator takes it, and not needed: each file carries its owner's
        # marker, which is what cleanup_stale() goes by after a crash
        self.resolver_dir = resolver_dir
        self.run = run or run_command
        self.marker = f"{owner_mark(os.getpid(), process_start_time())} {MARKER_NOTE}"
        self.written: set[str] = set()  # file names apply() wrote and revert() removes

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        try:
            return parse_scutil_dns(self.run(list(SCUTIL_DNS)))
        except CommandFailed as exc:
            raise ResolverError(f"cannot read the system's DNS configuration: {exc}") from None

    def _owner_line(self, path: Path) -> str | None:
        """The marker of a file (None: no marker; "" : the file does not exist)."""
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                first = handle.readline()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise ResolverError(f"cannot read {path}: {exc.strerror}") from None
        text = first[1:].strip() if first.startswith("#") else ""
        return text if parse_owner_mark(text) is not None else None

    def apply(self, settings: ResolverSettings) -> None:
        files = resolver_files(settings, self.marker)
        foreign = [name for name in files if self._owner_line(self.resolver_dir / name) is None]
        if foreign:
            paths = ", ".join(str(self.resolver_dir / name) for name in foreign)
            raise ResolverError(f"{paths} exists and was not written by Tether; not touching it")
        for name, text in files.items():
            try:
                write_atomic(self.resolver_dir / name, text, mode=0o644, make_parents=True, parents_mode=0o755)
            except OSError as exc:
                raise ResolverError(f"cannot write {self.resolver_dir / name}: {exc.strerror or exc}") from None
            self.written.add(name)
        for name in sorted(self.written - set(files)):
            self._remove_if_ours(name)
        self.written = set(files)
        self._flush()
        log.info("dns: %d resolver files in %s point at %s port %d", len(files), self.resolver_dir,
                 settings.server, settings.port)  # fmt: skip

    def revert(self) -> None:
        removed = [name for name in sorted(self.written) if self._remove_if_ours(name)]
        self.written = set()
        if removed:
            self._flush()

    def cleanup_stale(self) -> bool:
        try:
            names = sorted(entry.name for entry in self.resolver_dir.iterdir() if entry.is_file())
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ResolverError(f"cannot list {self.resolver_dir}: {exc.strerror}") from None
        removed = []
        for name in names:
            marker = self._owner_line(self.resolver_dir / name)
            if not marker or name in self.written:
                continue
            if _owned_by_another_live_helper(parse_owner_mark(marker)):
                log.info("dns: %s belongs to a running helper; leaving it alone", self.resolver_dir / name)
                continue
            if self._remove_if_ours(name):
                removed.append(name)
        if removed:
            log.info("dns: removed leftover resolver files %s", ", ".join(removed))
            self._flush()
        return bool(removed)

    def _remove_if_ours(self, name: str) -> bool:
        path = self.resolver_dir / name
        if not self._owner_line(path):
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ResolverError(f"cannot remove {path}: {exc.strerror}") from None
        return True

    def _flush(self) -> None:
        try:
            self.run(list(FLUSH))
        except CommandFailed as exc:  # the files are in place; stale cache entries expire by themselves
            log.warning("dns: flushing the resolver cache failed: %s", exc)
