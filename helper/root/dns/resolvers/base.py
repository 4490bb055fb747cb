"""The OS resolver integration behind one small interface, one implementation per mechanism.

A configurator points the OS's resolver at our DNS server for cluster names and takes that back
again. Every change it makes carries an ownership marker, so `cleanup_stale()` at the next start
can remove what a crashed helper left behind without touching anyone else's configuration.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The SO_MARK on the helper's own upstream queries; the DNS server and the Linux configurator must
# agree on it (the firewall lets marked packets through instead of redirecting them back to us).
DNS_BYPASS_MARK = 0x7E7E0053


# Where the helper's DNS server listens unless the configurator says otherwise (its ``listen`` class
# attribute): loopback with a port the OS picks, which nftables (redirect), resolved (SetLinkDNSEx) and
# /etc/resolver files (``port``) can all name.
DEFAULT_LISTEN = ("127.0.0.1", 0)


def listen_address(configurator: object) -> tuple[str, int]:
    """(host, port) for the DNS server under ``configurator`` (a class or an instance); port 0: the OS picks."""
    return getattr(configurator, "listen", DEFAULT_LISTEN)


# How ``crash_safety`` begins when the change goes away by itself when the helper process dies (SIGKILL too).
DIES_WITH_HELPER = "dies with the helper"
# ... and when only the service manager's restart of the helper and its start-up cleanup undo it.
RESTORED_ON_RESTART = "restored when the helper is restarted"


class ResolverError(RuntimeError):
    """The OS resolver could not be configured; the text names the file, command or value at fault."""


@dataclass(frozen=True)
class ResolverSettings:
    server: IPAddress  # our DNS server
    port: int
    tun_name: str  # per-link modes (resolved, Windows) attach the settings to this interface
    routing_domains: tuple[str, ...] = ()  # names to send to our server (per-domain modes)
    search_domain: str = ""  # appended by the OS to short names, so that `web` reaches us as `web.<search>`

    def __post_init__(self) -> None:
        object.__setattr__(self, "server", ipaddress.ip_address(self.server))
        if not 0 < self.port < 65536:
            raise ValueError(f"DNS server port {self.port} is out of range")


@runtime_checkable
class ResolverConfigurator(Protocol):
    mode: str
    # What becomes of the change if the helper is killed (one phrase, for `tether status`).
    crash_safety: str

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        """The resolvers the OS uses now, for the DNS server to forward non-cluster names to."""
        ...

    def apply(self, settings: ResolverSettings) -> None:
        """Send (cluster) names to our server; calling it again replaces the previous settings."""
        ...

    def revert(self) -> None:
        """Undo apply(); harmless when nothing is applied."""
        ...

    def cleanup_stale(self) -> bool:
        """Remove what an earlier helper left behind (crash recovery); True when something was removed."""
        ...
