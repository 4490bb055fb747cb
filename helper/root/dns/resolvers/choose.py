"""Which resolver mechanism this host needs (pure), and the table of implementations.

Probes are gathered by `probe_host()` (I/O, in probe.py); `choose_mode()` only looks at them, so
every combination is a plain unit test.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tether.helper.root.dns.resolvers.base import ResolverConfigurator
from tether.helper.root.dns.resolvers.linux_nft import LinuxNftConfigurator, nameservers
from tether.helper.root.dns.resolvers.linux_resolved import LinuxResolvedConfigurator

# The addresses of systemd-resolved's stub listeners (127.0.0.54 is the "proxy" stub).
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")


class Mode(enum.StrEnum):
    LINUX_NFT = "linux-nft"  # no systemd-resolved: DNAT the primary nameserver to our server
    SYSTEMD_RESOLVED = "systemd-resolved"  # per-link DNS and routing domains over D-Bus on the TUN
    MACOS_RESOLVER = "macos-resolver"  # one /etc/resolver/<domain> file per routing domain
    WINDOWS = "windows"  # DNS server and search list on the TUN interface


# mode -> implementation; None marks the modes that are not written yet (they must not be faked).
IMPLEMENTATIONS: dict[Mode, type[ResolverConfigurator] | None] = {
    Mode.LINUX_NFT: LinuxNftConfigurator,
    Mode.SYSTEMD_RESOLVED: LinuxResolvedConfigurator,
    Mode.MACOS_RESOLVER: None,
    Mode.WINDOWS: None,
}


class UnsupportedHost(RuntimeError):
    """No resolver integration exists (yet) for this host; the text names the mode."""


@dataclass(frozen=True)
class Probes:
    platform: str  # sys.platform
    resolv_conf: str | None = None  # the text of /etc/resolv.conf, None when absent
    resolved_running: bool = False  # /run/systemd/resolve exists


def resolved_owns_resolv_conf(probes: Probes) -> bool:
    """systemd-resolved is in charge: resolv.conf points at its stub and its runtime directory exists."""
    if not probes.resolved_running or probes.resolv_conf is None:
        return False
    return any(str(ns) in RESOLVED_STUBS for ns in nameservers(probes.resolv_conf))


def choose_mode(probes: Probes) -> Mode:
    if probes.platform == "darwin":
        return Mode.MACOS_RESOLVER
    if probes.platform in ("win32", "cygwin"):
        return Mode.WINDOWS
    if probes.platform.startswith("linux"):
        return Mode.SYSTEMD_RESOLVED if resolved_owns_resolv_conf(probes) else Mode.LINUX_NFT
    raise UnsupportedHost(f"no DNS integration for platform {probes.platform!r}")


def implementation(mode: Mode) -> type[ResolverConfigurator]:
    cls = IMPLEMENTATIONS.get(mode)
    if cls is None:
        raise UnsupportedHost(f"not implemented yet on this host: {mode}")
    return cls


def choose(probes: Probes) -> type[ResolverConfigurator]:
    """The configurator class for this host, or UnsupportedHost naming the mode it would need."""
    return implementation(choose_mode(probes))
