"""Linux without systemd-resolved: redirect queries for the primary nameserver to our server with nftables.

This is the "overriding resolver" mode. /etc/resolv.conf is only read, never written: an nftables
table of our own DNATs UDP and TCP port 53 bound for the primary nameserver to our DNS server, so
every program's queries reach us whatever resolver library it uses. Our server forwards the names
that are not the cluster's to that same nameserver from sockets carrying `mark`; the table's first
rule lets marked packets through untouched, which is what stops the redirection from looping; a raw-priority
chain keeps them out of conntrack, so a stale entry cannot translate them either.

Why the ``output`` hook only: it sees the queries of local programs, which is what the workstation
needs. DNAT there works even when the primary nameserver is a loopback address (a local dnsmasq
or unbound on 127.0.0.1): the packet never leaves the host, the kernel re-routes it after NAT, and
conntrack maps our replies back so the program sees them come from 127.0.0.1:53. Redirecting
forwarded traffic (containers, VMs) would need the ``prerouting`` hook, and DNAT from there to a
loopback address needs ``route_localnet=1`` on the inbound interface, a host-wide change we do not
make; that is later work.

Caveats: flows already tracked by conntrack before apply() (a long-lived UDP socket to the
nameserver) keep their old translation until they expire (30 s for UDP); likewise after revert().
Only the first nameserver is redirected (glibc asks the others only after it times out).

The table carries a comment as its ownership marker; nothing here touches a table without it.

Crash safety: given a holder (nft_holder.py, the helper's own netlink socket), the table is created with
``flags owner``, so the kernel deletes it the moment the helper dies, SIGKILL included, and no program is
left sending its queries to a server that is gone. Every later change goes through that same socket (the
kernel refuses any other). A kernel without the flag (before 5.12) refuses it; then the table is made as
before and only the next helper's start-up cleanup (the journal) removes a killed helper's table, which
``crash_safety`` says so that `tether status` can.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.helper.root.dns.resolvers.base import (
    DIES_WITH_HELPER,
    DNS_BYPASS_MARK,
    IPAddress,
    ResolverError,
    ResolverSettings,
)
from tether.helper.root.dns.resolvers.nft_holder import NftHolder, NftHolderError, open_lib_holder
from tether.helper.root.journal import Journal, OwnerMark, owner_mark, parse_owner_mark, process_start_time

log = logging.getLogger("tether.helper.root.dns.resolvers")

MODE = "linux-nft"
TABLE = "tether_dns"
# Names this process (pid and start time), so a cleanup run by another helper can tell a live owner's
# table from a crashed one's.
MARKER = owner_mark(os.getpid(), process_start_time()) + " dns redirect; removed on disconnect"
# The standard destination-NAT priority; spelled as a number because nft 1.0.6 (Debian 12) rejects
# the name "dstnat" in the output hook.
PRIORITY = -100
# Before conntrack (-200): our marked upstream queries are never tracked. The nat chain is consulted only for
# a connection's first packet, so without this a conntrack entry that already DNATs the same 5-tuple (a
# program's query from the port our socket now uses, still within UDP's 30 s) would send our own query back
# to us, mark or not.
RAW_PRIORITY = -300

# (argv, stdin) -> stdout; raises ResolverError on failure.
Runner = Callable[[Sequence[str], str | None], str]
# Opens the socket that will own the table (None: none available, fall back to plain tables).
HolderFactory = Callable[[], NftHolder | None]

OWNED = f"{DIES_WITH_HELPER} (its nftables table is owned by the helper's socket)"
JOURNALED = "stays after a crash until the next helper start removes it (this kernel or nft lacks nftables' owner flag)"
UNHELD = "stays after a crash until the next helper start removes it (no libnftables to own the table)"
# What nft says when the kernel (EOPNOTSUPP for an unknown table flag) or nft itself does not know the flag.
_NO_OWNER_FLAG = ("Operation not supported", "syntax error")


def run_command(argv: Sequence[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResolverError(f"{' '.join(argv)}: {exc}") from None
    if done.returncode != 0:
        raise ResolverError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def nameservers(resolv_conf_text: str) -> tuple[IPAddress, ...]:
    """The nameserver lines of a resolv.conf, in order; unparsable ones are skipped, as glibc does."""
    found: list[IPAddress] = []
    for raw in resolv_conf_text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(words[1].split("%", 1)[0]))
            except ValueError:
                continue
    return tuple(found)


def ruleset(
    nameserver: IPAddress, server: IPAddress, port: int, mark: int, table: str = TABLE, owned: bool = False
) -> str:
    """The whole nft script for apply(): replaces any earlier version of our table in one transaction.

    owned: the table carries ``flags owner`` (the first line too: the kernel refuses to change an owned
    table's flags, so re-adding it without the flag would fail).
    """
    if nameserver.version != server.version:
        raise ResolverError(
            f"the primary nameserver {nameserver} is IPv{nameserver.version} but our DNS server {server} is "
            f"IPv{server.version}: NAT cannot change the address family"
        )
    if nameserver == server and port == 53:
        raise ResolverError(f"our DNS server {server}:53 is the nameserver it would redirect: use another port")
    if not 0 < mark < 2**32:
        raise ResolverError(f"mark {mark:#x} must be a non-zero 32-bit value")
    family = "ip" if nameserver.version == 4 else "ip6"
    target = f"{server}:{port}" if server.version == 4 else f"[{server}]:{port}"
    rules = [f"meta mark {mark:#x} return"]
    rules += [f"{family} daddr {nameserver} {proto} dport 53 dnat {family} to {target}" for proto in ("udp", "tcp")]
    body = "\n".join(f"\t\t{rule}" for rule in rules)
    # "add table; delete table; table {...}" is the atomic replace idiom: the add makes the delete
    # safe when the table is absent, and nft -f applies the three as one transaction.
    flags = "\tflags owner\n" if owned else ""
    return (
        (f"table inet {table} {{ flags owner; }}\n" if owned else f"table inet {table}\n")
        + f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"{flags}"
        f'\tcomment "{MARKER}"\n'
        f"\tchain untracked {{\n"
        f"\t\ttype filter hook output priority {RAW_PRIORITY}; policy accept;\n"
        f"\t\tmeta mark {mark:#x} notrack\n"
        f"\t}}\n"
        f"\tchain output {{\n"
        f"\t\ttype nat hook output priority {PRIORITY}; policy accept;\n"
        f"{body}\n"
        f"\t}}\n"
        f"}}\n"
    )


def _owned_by_another_live_helper(owner: OwnerMark | None) -> bool:
    if owner is None or owner.pid is None or owner.pid == os.getpid():
        return False
    running = process_start_time(owner.pid)
    return running is not None and (owner.start_time is None or running == owner.start_time)


def table_comment(listing: str) -> str | None:
    """The comment of the table in `nft list table` output (None when it has none)."""
    match = re.search(
        r'^table [^\n]*\{[^\n]*\n(?:\s*flags [^\n]*\n)?\s*comment "((?:[^"\\]|\\.)*)"', listing, re.MULTILINE
    )
    return match.group(1) if match else None


class LinuxNftConfigurator:
    mode = MODE

    def __init__(
        self,
        resolv_conf: Path = Path("/etc/resolv.conf"),
        mark: int = DNS_BYPASS_MARK,
        run: Runner = run_command,
        nft: Sequence[str] = ("nft",),
        table: str = TABLE,
        journal: Journal | None = None,
        holder: HolderFactory | None = None,
    ) -> None:
        self.resolv_conf = resolv_conf
        self.mark = mark
        self.run = run
        # The nft command line; tests prefix it with `ip netns exec NS` to stay out of the host.
        self.nft = tuple(nft)
        self.table = table
        self.redirected: IPAddress | None = None  # the nameserver apply() redirects
        self._owner: OwnerMark | None = None
        self.journal = journal  # the table goes in it, for the crash cleanup
        # None: plain tables through the nft command (no socket of ours outlives a command).
        self._open_holder = holder
        self._holder: NftHolder | None = None
        self._held = False  # the table now in the kernel is owned by self._holder
        self.crash_safety = OWNED if holder is not None else UNHELD

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        try:
            text = self.resolv_conf.read_text()
        except OSError as exc:
            raise ResolverError(f"cannot read {self.resolv_conf}: {exc.strerror}") from None
        return nameservers(text)

    def apply(self, settings: ResolverSettings) -> None:
        servers = self.upstream_nameservers()
        if not servers:
            raise ResolverError(f"{self.resolv_conf} names no nameserver to redirect")
        exists = self._ownership()
        if exists is False:
            raise ResolverError(f"nftables table inet {self.table} exists and is not ours; not touching it")
        if self.journal is not None:
            self.journal.add_nft_table("inet", self.table)
        holder = self._holding()
        if holder is None or not self._apply_owned(holder, servers[0], settings, leftover=bool(exists)):
            script = ruleset(servers[0], settings.server, settings.port, self.mark, self.table)
            self.run([*self.nft, "-f", "-"], script)
        self.redirected = servers[0]
        log.info("dns: redirecting %s port 53 to %s port %d", servers[0], settings.server, settings.port)

    def _holding(self) -> NftHolder | None:
        if self._holder is None and self._open_holder is not None:
            self._holder = self._open_holder()
            if self._holder is None:
                self._open_holder = None
                self.crash_safety = UNHELD
        return self._holder

    def _apply_owned(
        self, holder: NftHolder, nameserver: IPAddress, settings: ResolverSettings, leftover: bool
    ) -> bool:
        """Create or replace the owned table; False when the kernel or nft lacks the owner flag (fall back)."""
        script = ruleset(nameserver, settings.server, settings.port, self.mark, self.table, owned=True)
        if leftover and not self._held:
            # An earlier helper's plain table: an owned one cannot replace it in place (the flags differ).
            script = f"delete table inet {self.table}\n{script}"
        try:
            holder.run(script)
        except NftHolderError as exc:
            if self._held or not any(sign in str(exc) for sign in _NO_OWNER_FLAG):
                raise ResolverError(f"nft (table inet {self.table}): {exc}") from None
            log.warning("dns: nftables refused an owned table (%s); a killed helper's table stays until restart", exc)
            self._release()
            self._open_holder = None
            self.crash_safety = JOURNALED
            return False
        self._held = True
        return True

    def revert(self) -> None:
        self.redirected = None
        self._delete_if_ours()
        self._release()
        if self.journal is not None:
            self.journal.remove_nft_table("inet", self.table)

    def _release(self) -> None:
        holder, self._holder = self._holder, None
        self._held = False
        if holder is not None:
            holder.close()

    def cleanup_stale(self) -> bool:
        removed = self._delete_if_ours()
        if removed:
            log.info("dns: removed a leftover nftables table inet %s", self.table)
        return removed

    def _ownership(self) -> bool | None:
        """True: our table exists; False: a table of that name exists without our marker; None: absent."""
        try:
            listing = self.run([*self.nft, "list", "table", "inet", self.table], None)
        except ResolverError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        self._owner = parse_owner_mark(table_comment(listing))
        return self._owner is not None

    def _delete_if_ours(self) -> bool:
        owned = self._ownership()
        if owned is False:
            log.warning("dns: nftables table inet %s has no tether marker; leaving it alone", self.table)
        if not owned:
            return False
        if _owned_by_another_live_helper(self._owner):
            log.info("dns: nftables table inet %s belongs to a running helper; leaving it alone", self.table)
            return False
        if self._held and self._holder is not None:
            # Only the owning socket may delete an owned table.
            try:
                self._holder.run(f"delete table inet {self.table}")
            except NftHolderError as exc:
                raise ResolverError(f"nft delete table inet {self.table}: {exc}") from None
        else:
            self.run([*self.nft, "delete", "table", "inet", self.table], None)
        return True


class HeldNftConfigurator(LinuxNftConfigurator):
    """The helper's configurator: its table is owned by the helper's own netlink socket (see the module text)."""

    def __init__(self, journal: Journal | None = None, holder: HolderFactory | None = open_lib_holder) -> None:
        super().__init__(journal=journal, holder=holder)
