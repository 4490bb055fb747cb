"""Windows: Name Resolution Policy Table (NRPT) rules that send cluster names to our DNS server.

NRPT rules are the Windows way of per-domain DNS: a rule for the namespace ``.cluster.local`` makes
the DNS Client send every name under it to the rule's name servers, whatever the interfaces' own DNS
servers are; other names keep going where they went. One rule per routing domain (the cluster domain,
each mapped namespace, the include-suffixes, the reverse zones of the routed subnets), each carrying
the comment ``tether:<owner mark>``: that comment is the ownership marker, so ``revert`` and
``cleanup_stale`` remove only our rules. Only one helper (the service) runs on a Windows machine, so
``cleanup_stale`` at start-up removes every rule with the marker.

Commands (all through ``tether.helper.root.powershell``: values are quoted literals)::

    Get-DnsClientServerAddress -AddressFamily IPv4          (upstream; JSON; our adapters left out)
    Get-DnsClientNrptRule                                   (ownership; JSON)
    Add-DnsClientNrptRule -Namespace .DOMAIN -NameServers ADDR -Comment tether:MARK
    Remove-DnsClientNrptRule -Name {GUID} -Force
    Set-DnsClient -InterfaceAlias TUN -ConnectionSpecificSuffix SEARCH   (single-label names)
    Get-DnsClientGlobalSetting / Set-DnsClientGlobalSetting -SuffixSearchList ...
    Clear-DnsClientCache                                    (answers cached before the change)

Single-label names (``web``): Windows appends the connection-specific suffix of each interface to a
single-label name, so the TUN gets ``default.svc.cluster.local`` (the settings' search domain) as its
suffix; removing the adapter removes it too. When a global suffix search list is configured, Windows
ignores the per-interface suffixes; then our search domain is put first in that list and the list is
put back exactly as it was on ``revert`` (only if nobody changed it meanwhile).

Port: NRPT name servers are addresses without a port, so the helper's DNS server must listen on
port 53; ``apply`` refuses any other port naming it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from typing import Any

from tether.helper.root.dns.resolvers.base import RESTORED_ON_RESTART, IPAddress, ResolverError, ResolverSettings
from tether.helper.root.journal import LINK_PREFIX, Journal, owner_mark
from tether.helper.root.powershell import Command, PowerShell, PowerShellError, PowerShellRunner, json_rows

log = logging.getLogger("tether.helper.root.dns.resolvers")

MODE = "windows"
MARKER_PREFIX = "tether:"
DNS_PORT = 53
# NRPT names servers by address only, so ours listens on port 53, on a loopback address of its own: all of
# 127.0.0.0/8 answers locally on Windows, and a dedicated address does not collide with a local DNS
# proxy on 127.0.0.1:53 (Acrylic, dnscrypt-proxy, a container runtime's). The TUN has no address of its
# own to use (the netstack behind it answers for every address routed into it).
LISTEN_ADDRESS = "127.84.69.53"
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_GUID_RE = re.compile(r"^\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}$")

UPSTREAM = Command(
    "Get-DnsClientServerAddress",
    (("AddressFamily", "IPv4"),),
    json=True,
    select=("InterfaceAlias", "InterfaceIndex", "ServerAddresses"),
)
RULES = Command("Get-DnsClientNrptRule", json=True, select=("Name", "Namespace", "NameServers", "Comment"))
GLOBAL = Command("Get-DnsClientGlobalSetting", json=True, select=("SuffixSearchList",))
CLEAR_CACHE = Command("Clear-DnsClientCache")


def validate_domain(domain: str) -> str:
    """``domain`` without its trailing dot, checked label by label; ResolverError naming it otherwise."""
    name = domain.strip().rstrip(".").lstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise ResolverError(f"invalid DNS domain {domain!r} for an NRPT rule")
    return name.lower()


def add_rule(domain: str, server: IPAddress, marker: str) -> Command:
    return Command(
        "Add-DnsClientNrptRule",
        (("Namespace", "." + validate_domain(domain)), ("NameServers", str(server)), ("Comment", marker)),
    )


def remove_rule(name: str) -> Command:
    if not _GUID_RE.match(name):
        raise ResolverError(f"refusing to remove NRPT rule {name!r}: not a rule name (a GUID in braces)")
    return Command("Remove-DnsClientNrptRule", (("Name", name), ("Force", True)))


def set_suffix(alias: str, suffix: str) -> Command:
    return Command("Set-DnsClient", (("InterfaceAlias", alias), ("ConnectionSpecificSuffix", suffix)))


def set_search_list(suffixes: tuple[str, ...]) -> Command:
    # An empty list is written as the empty string: that is how the setting is cleared.
    return Command("Set-DnsClientGlobalSetting", (("SuffixSearchList", suffixes or ("",)),))


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(str(v) for v in value if v)


def upstream_from_rows(rows: list[dict[str, Any]], own_prefix: str = LINK_PREFIX) -> tuple[IPAddress, ...]:
    """The IPv4 DNS servers of every interface but ours, in order, without duplicates."""
    found: dict[IPAddress, None] = {}
    for row in rows:
        if str(row.get("InterfaceAlias") or "").startswith(own_prefix):
            continue
        for text in _strings(row.get("ServerAddresses")):
            try:
                found[ipaddress.ip_address(text)] = None
            except ValueError:
                log.warning("dns: ignoring a DNS server address Windows reported: %r", text)
    return tuple(found)


def our_rules(rows: list[dict[str, Any]]) -> list[str]:
    """The names of the rules whose comment carries our marker."""
    return [str(row["Name"]) for row in rows if str(row.get("Comment") or "").startswith(MARKER_PREFIX)]


class WindowsNrptConfigurator:
    mode = MODE
    crash_safety = (
        f"{RESTORED_ON_RESTART}: the service manager restarts it (recovery actions), "
        "its start-up cleanup removes the NRPT rules"
    )
    listen = (LISTEN_ADDRESS, DNS_PORT)

    def __init__(
        self, shell: PowerShell | None = None, marker: str | None = None, journal: Journal | None = None
    ) -> None:
        # ``journal`` is taken as every configurator takes it, and not needed: each rule's comment carries our
        # marker, which is what cleanup_stale() goes by after a crash
        self.shell: PowerShell = shell or PowerShellRunner()
        self.marker = marker or MARKER_PREFIX + owner_mark(os.getpid())
        if not self.marker.startswith(MARKER_PREFIX):
            raise ValueError(f"NRPT marker {self.marker!r} must start with {MARKER_PREFIX!r}")
        # (the global list before apply, the list apply wrote) when apply changed it
        self._search_list: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def _run(self, command: Command) -> str:
        try:
            return self.shell.run(command)
        except PowerShellError as exc:
            raise ResolverError(str(exc)) from None

    def _rows(self, command: Command) -> list[dict[str, Any]]:
        try:
            return json_rows(self._run(command))
        except PowerShellError as exc:
            raise ResolverError(str(exc)) from None

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        return upstream_from_rows(self._rows(UPSTREAM))

    def apply(self, settings: ResolverSettings) -> None:
        if settings.port != DNS_PORT:
            raise ResolverError(
                f"NRPT rules cannot name a port: the DNS server must listen on port {DNS_PORT}, not {settings.port}"
            )
        domains = list(dict.fromkeys(validate_domain(d) for d in settings.routing_domains))
        search = validate_domain(settings.search_domain) if settings.search_domain else ""
        commands = [add_rule(d, settings.server, self.marker) for d in domains]  # all validated before any runs
        self._remove_ours()
        for command in commands:
            try:
                self._run(command)
            except ResolverError:
                self._remove_ours()
                raise
        if search:
            self._run(set_suffix(settings.tun_name, search))
            self._put_first_in_search_list(search)
        self._run(CLEAR_CACHE)
        log.info("dns: NRPT rules for %s point at %s", ", ".join(domains), settings.server)

    def _put_first_in_search_list(self, search: str) -> None:
        rows = self._rows(GLOBAL)
        current = _strings(rows[0].get("SuffixSearchList")) if rows else ()
        if not current:
            return  # the per-interface suffix is used
        wanted = (search, *(s for s in current if s.lower() != search))
        if self._search_list is not None:
            current = self._search_list[0]
        self._run(set_search_list(wanted))
        self._search_list = (current, wanted)

    def revert(self) -> None:
        self._remove_ours()
        if self._search_list is not None:
            before, written = self._search_list
            rows = self._rows(GLOBAL)
            now = _strings(rows[0].get("SuffixSearchList")) if rows else ()
            if now == written:
                self._run(set_search_list(before))
            else:
                log.warning("dns: the global DNS suffix search list changed since connect; leaving it as it is")
            self._search_list = None
        self._run(CLEAR_CACHE)

    def cleanup_stale(self) -> bool:
        removed = self._remove_ours()
        if removed:
            log.info("dns: removed %d leftover NRPT rules", removed)
        return bool(removed)

    def _remove_ours(self) -> int:
        names = our_rules(self._rows(RULES))
        for name in names:
            try:
                self.shell.run(remove_rule(name))
            except PowerShellError as exc:
                if not exc.not_found:
                    raise ResolverError(str(exc)) from None
        return len(names)
