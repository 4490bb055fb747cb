"""Which resolver mechanism this host needs (pure), and the table of implementations.

Probes are gathered by `probe_host()` (I/O, in probe.py); `decide()` only looks at them, so every
real-world combination is a row of a unit test. What decides on Linux is where programs' queries go:
the primary nameserver of /etc/resolv.conf. When that is systemd-resolved's stub and resolved answers
on the system bus, resolved must learn the cluster's domains (its per-link DNS); any other nameserver
(a router, a local dnsmasq, WSL's generated host address, resolved's uplink file) is redirected with
nftables. The other probes (the symlink's target, resolved's own ResolvConfMode, NetworkManager's dns
mode, WSL) only explain the choice in its reason, and name what is wrong on a broken host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tether.helper.api.dnsmodes import Mode, platform_family
from tether.helper.api.validate import ValidationError, dns_mode
from tether.helper.root.dns.resolvers.base import ResolverConfigurator
from tether.helper.root.dns.resolvers.linux_nft import HeldNftConfigurator, nameservers
from tether.helper.root.dns.resolvers.linux_resolved import LinuxResolvedConfigurator
from tether.helper.root.dns.resolvers.macos_resolver import MacosResolverConfigurator
from tether.helper.root.dns.resolvers.windows_nrpt import WindowsNrptConfigurator

__all__ = ["Mode"]  # re-exported: the table below and its users name modes through this module

# The addresses of systemd-resolved's stub listeners (127.0.0.54 is the "proxy" stub).
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")
# Where a resolv.conf symlink commonly points, and whose file that is.
LINK_OWNERS = {
    "/run/systemd/resolve/stub-resolv.conf": "systemd-resolved's stub file",
    "/usr/lib/systemd/resolv.conf": "systemd-resolved's static stub file",
    "/lib/systemd/resolv.conf": "systemd-resolved's static stub file",
    "/run/systemd/resolve/resolv.conf": "systemd-resolved's uplink file",
    "/run/NetworkManager/resolv.conf": "NetworkManager's file",
    "/run/NetworkManager/no-stub-resolv.conf": "NetworkManager's file",
    "/run/resolvconf/resolv.conf": "resolvconf's file",
    "/mnt/wsl/resolv.conf": "WSL's file",
}


# mode -> implementation; None marks the modes that are not written yet (they must not be faked).
IMPLEMENTATIONS: dict[Mode, type[ResolverConfigurator] | None] = {
    Mode.LINUX_NFT: HeldNftConfigurator,
    Mode.SYSTEMD_RESOLVED: LinuxResolvedConfigurator,
    Mode.MACOS_RESOLVER: MacosResolverConfigurator,
    Mode.WINDOWS: WindowsNrptConfigurator,
}


class UnsupportedHost(RuntimeError):
    """No resolver integration exists (yet) for this host; the text names the mode or what is wrong."""


@dataclass(frozen=True)
class Probes:
    platform: str  # sys.platform
    resolv_conf: str | None = None  # the text of /etc/resolv.conf, None when absent
    resolved_on_bus: bool = False  # org.freedesktop.resolve1 has an owner on the system bus
    resolv_conf_link: str | None = None  # where /etc/resolv.conf links to; None for a plain file (or none)
    resolved_resolv_conf_mode: str = ""  # resolved's ResolvConfMode (stub, static, uplink, foreign, missing)
    networkmanager_dns: str = ""  # NetworkManager's dns mode (default, dnsmasq, systemd-resolved, none); "": none
    networkmanager_on_bus: bool = False  # the dns mode came from the running NetworkManager, not its config
    wsl: bool = False  # the kernel is WSL's
    wsl_generates_resolv_conf: bool = True  # /etc/wsl.conf [network] generateResolvConf (WSL's default: true)
    bus_error: str = ""  # why the system bus could not be asked; "" when it answered

    def primary_nameserver(self) -> str | None:
        found = nameservers(self.resolv_conf) if self.resolv_conf is not None else ()
        return str(found[0]) if found else None

    def summary(self) -> tuple[tuple[str, str], ...]:
        """(name, value) pairs for the connect log and the state: what the choice was made from."""
        rows = [
            ("platform", self.platform),
            ("resolv.conf", _describe_resolv_conf(self)),
            ("systemd-resolved", _describe_resolved(self)),
            ("NetworkManager", _describe_networkmanager(self)),
        ]
        if self.wsl:
            rows.append(("WSL", "generates resolv.conf" if self.wsl_generates_resolv_conf else "resolv.conf is ours"))
        if self.bus_error:
            rows.append(("system bus", self.bus_error))
        return tuple(rows)


def link_owner(target: str | None) -> str:
    """Whose file /etc/resolv.conf links to, in words ("a file" when it is no link)."""
    if target is None:
        return "a file"
    absolute = target if target.startswith("/") else "/" + target.lstrip("./")  # ../run/... from /etc
    return LINK_OWNERS.get(absolute, f"a link to {target}")


def _describe_resolv_conf(probes: Probes) -> str:
    if probes.resolv_conf is None:
        return "missing" + (f" (a dangling link to {probes.resolv_conf_link})" if probes.resolv_conf_link else "")
    primary = probes.primary_nameserver()
    text = f"nameserver {primary}" if primary else "no nameserver"
    return f"{text} ({link_owner(probes.resolv_conf_link)})"


def _describe_resolved(probes: Probes) -> str:
    if not probes.resolved_on_bus:
        return "not on the system bus"
    mode = probes.resolved_resolv_conf_mode
    return "on the system bus" + (f", ResolvConfMode {mode}" if mode else "")


def _describe_networkmanager(probes: Probes) -> str:
    if not probes.networkmanager_dns:
        return "not found"
    where = "running" if probes.networkmanager_on_bus else "configured"
    return f"dns={probes.networkmanager_dns} ({where})"


@dataclass(frozen=True)
class Choice:
    mode: Mode
    reason: str  # one sentence: why this mode
    probes: Probes
    forced: bool = False


def decide(probes: Probes, forced: str = "") -> Choice:
    """The mode for this host and why; `forced` (a --dns-mode value) wins over the probes when it fits the platform.

    Raises UnsupportedHost naming the platform, or what is broken on the host, when no mode fits."""
    if forced:
        return _forced(probes, forced)
    family = platform_family(probes.platform)
    if family == "darwin":
        return Choice(Mode.MACOS_RESOLVER, "macOS: per-domain files in /etc/resolver", probes)
    if family == "win32":
        return Choice(Mode.WINDOWS, "Windows: DNS server and search list on the TUN interface", probes)
    if family == "linux":
        return _decide_linux(probes)
    raise UnsupportedHost(f"no DNS integration for platform {probes.platform!r}")


def _forced(probes: Probes, forced: str) -> Choice:
    try:
        mode = dns_mode(forced, probes.platform)
    except ValidationError as exc:
        raise UnsupportedHost(str(exc)) from None
    assert mode is not None
    try:
        probed = decide(probes)
        would = f"the probes choose {probed.mode}: {probed.reason}"
    except UnsupportedHost as exc:
        would = f"the probes choose none: {exc}"
    return Choice(mode, f"forced with --dns-mode ({would})", probes, forced=True)


def _decide_linux(probes: Probes) -> Choice:
    primary = probes.primary_nameserver()
    if primary is None and link_owner(probes.resolv_conf_link).startswith("systemd-resolved's stub"):
        primary = RESOLVED_STUBS[0]  # a dangling link to the stub file: resolved is meant to answer
    if primary is None:
        if probes.resolved_on_bus:
            return Choice(
                Mode.SYSTEMD_RESOLVED,
                "/etc/resolv.conf names no nameserver; systemd-resolved on the system bus answers programs "
                "through nss-resolve",
                probes,
            )
        what = "is missing" if probes.resolv_conf is None else "names no nameserver"
        raise UnsupportedHost(
            f"/etc/resolv.conf {what} and systemd-resolved is not on the system bus: this host has no resolver "
            "to send cluster names through (add a nameserver to /etc/resolv.conf, or force a mode with --dns-mode)"
        )
    if primary in RESOLVED_STUBS:
        if probes.resolved_on_bus:
            return Choice(
                Mode.SYSTEMD_RESOLVED,
                f"resolv.conf sends queries to systemd-resolved's stub {primary} and resolved is on the system bus",
                probes,
            )
        why = f" ({probes.bus_error})" if probes.bus_error else ""
        said = (
            f"sends queries to {primary}, systemd-resolved's stub, but"
            if probes.resolv_conf is not None
            else f"links to {probes.resolv_conf_link} (systemd-resolved's stub file, which does not exist) and"
        )
        raise UnsupportedHost(
            f"/etc/resolv.conf {said} systemd-resolved is not on the system bus{why}: name resolution on this host "
            "is broken; start systemd-resolved or point it at a nameserver (or force a mode with --dns-mode)"
        )
    return Choice(Mode.LINUX_NFT, _nft_reason(probes, primary), probes)


def _nft_reason(probes: Probes, primary: str) -> str:
    """Why the primary nameserver is redirected: the line that names who put it there."""
    redirected = f"queries to {primary} are redirected"
    if probes.wsl and probes.wsl_generates_resolv_conf:
        return f"WSL generates resolv.conf with the Windows host's resolver: {redirected}"
    if probes.resolved_on_bus:
        how = link_owner(probes.resolv_conf_link)
        if probes.resolved_resolv_conf_mode:
            how += f", ResolvConfMode {probes.resolved_resolv_conf_mode}"
        return f"systemd-resolved runs but resolv.conf bypasses its stub ({how}): {redirected}"
    if probes.networkmanager_dns == "dnsmasq" or (
        ipaddress.ip_address(primary).is_loopback and probes.networkmanager_dns
    ):
        return f"NetworkManager's local resolver ({probes.networkmanager_dns}) answers at {primary}: {redirected}"
    if probes.networkmanager_dns:
        return f"NetworkManager (dns={probes.networkmanager_dns}) writes resolv.conf, no systemd-resolved: {redirected}"
    if ipaddress.ip_address(primary).is_loopback:
        return f"a local resolver answers at {primary}, no systemd-resolved: {redirected}"
    return f"resolv.conf names {primary}, no systemd-resolved: {redirected}"


def choose_mode(probes: Probes) -> Mode:
    return decide(probes).mode


def implementation(mode: Mode) -> type[ResolverConfigurator]:
    cls = IMPLEMENTATIONS.get(mode)
    if cls is None:
        raise UnsupportedHost(f"not implemented yet on this host: {mode}")
    return cls


def choose(probes: Probes) -> type[ResolverConfigurator]:
    """The configurator class for this host, or UnsupportedHost naming the mode it would need."""
    return implementation(choose_mode(probes))
