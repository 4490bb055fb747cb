"""Reading macOS's routing table for the conflict check: ``netstat -rn -f inet`` and ``-f inet6``, parsed.

netstat abbreviates destinations the BSD way, which the parser undoes:

* ``default`` is 0.0.0.0/0 (::/0); ``10.96/12`` is 10.96.0.0/12; a dotted prefix without a length is
  classful by its octets (``127`` is 127.0.0.0/8, ``192.168.1`` 192.168.1.0/24); a full address is a host.
* IPv6 destinations and gateways may carry a scope (``fe80::%en0/64``); it is dropped.
* ``link#N`` as the gateway means "directly on the interface": no gateway.

Left out, as the Linux reader leaves out what cannot carry traffic: rows without the ``U`` (up) flag and
link-layer entries (``L`` with a MAC address as the gateway: the ARP/NDP cache, not routes). ``R`` (reject)
and ``B`` (blackhole) rows become ``unreachable``/``blackhole`` routes, ``m`` rows multicast ones; ``S``
(static) is reported as protocol ``static``, everything else as ``kernel``. The column layout is read from
the header line (newer macOS dropped the ``Refs`` and ``Use`` columns).
"""

from __future__ import annotations

import ipaddress

from tether.helper.root.journal import MAIN_TABLE
from tether.helper.root.oscommand import CommandFailed, CommandRunner, run_command
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.os_routes import RouteReader, RouteReadError
from tether.helper.root.routing.table import IPAddress, IPNetwork

__all__ = ["NETSTAT_COMMANDS", "DarwinRouteReader", "parse_destination", "parse_netstat"]

NETSTAT_COMMANDS = (("netstat", "-rn", "-f", "inet"), ("netstat", "-rn", "-f", "inet6"))


def _unscoped(text: str) -> str:
    """``fe80::%en0/64`` -> ``fe80::/64``; ``fe80::1%en0`` -> ``fe80::1``."""
    address, _, rest = text.partition("%")
    if not rest:
        return text
    _, slash, length = rest.partition("/")
    return f"{address}{slash}{length}"


def parse_destination(text: str, version: int, flags: str = "") -> IPNetwork:
    """A netstat destination as a network (see the module docstring); ValueError naming the text."""
    if text == "default":
        return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    plain = _unscoped(text)
    address, slash, length = plain.partition("/")
    try:
        if version == 6:
            return ipaddress.IPv6Network(plain if slash else f"{address}/128", strict=False)
        octets = address.split(".")
        if not 1 <= len(octets) <= 4:
            raise ValueError(text)
        prefix = int(length) if slash else (32 if "H" in flags else 8 * len(octets))
        return ipaddress.IPv4Network(f"{'.'.join(octets + ['0'] * (4 - len(octets)))}/{prefix}", strict=False)
    except ValueError:
        raise ValueError(f"netstat destination {text!r} is not an IPv{version} network") from None


def _gateway(text: str, version: int) -> IPAddress | None:
    if text.startswith("link#"):
        return None
    try:
        address = ipaddress.ip_address(_unscoped(text))
    except ValueError:
        return None
    return address if address.version == version else None


def _kind(flags: str) -> str:
    if "B" in flags:
        return "blackhole"
    if "R" in flags:
        return "unreachable"
    if "m" in flags:
        return "multicast"
    return "unicast"


def parse_netstat(text: str) -> list[OSRoute]:
    """The usable routes in one ``netstat -rn -f inet|inet6`` output, sorted. RouteReadError on a bad row."""
    routes: set[OSRoute] = set()
    version = 4
    netif = -1
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] == "Routing":
            continue
        if words[0] in ("Internet:", "Internet6:"):
            version = 4 if words[0] == "Internet:" else 6
            continue
        if words[0] == "Destination":
            netif = words.index("Netif") if "Netif" in words else -1
            continue
        if netif < 0 or len(words) <= netif:
            raise RouteReadError(f"netstat output line {number} does not fit the table's header: {line.strip()!r}")
        destination, gateway, flags = words[0], words[1], words[2]
        link_layer = _gateway(gateway, version) is None and not gateway.startswith("link#")  # a MAC: ARP/NDP
        if "U" not in flags or link_layer:
            continue
        try:
            network = parse_destination(destination, version, flags)
        except ValueError as exc:
            raise RouteReadError(f"netstat output line {number}: {exc}") from None
        routes.add(
            OSRoute(
                destination=network,
                device=words[netif],
                gateway=_gateway(gateway, version),
                table=MAIN_TABLE,
                protocol="static" if "S" in flags else "kernel",
                scope="host" if "H" in flags and network.prefixlen == network.max_prefixlen else "universe",
                type=_kind(flags),
            )
        )
    return sorted(routes, key=OSRoute.sort_key)


class DarwinRouteReader(RouteReader):
    """Both families' routes from netstat (read through ``run``, a CommandRunner)."""

    def __init__(self, run: CommandRunner | None = None) -> None:
        self._run = run or run_command

    def read(self) -> list[OSRoute]:
        routes: list[OSRoute] = []
        for argv in NETSTAT_COMMANDS:
            try:
                output = self._run(list(argv))
            except CommandFailed as exc:
                raise RouteReadError(f"cannot read the routing table: {exc}", code=exc.returncode) from None
            routes += parse_netstat(output)
        return sorted(set(routes), key=OSRoute.sort_key)
