"""The Windows route reader: ``Get-NetRoute`` and ``Get-NetIPInterface`` through PowerShell, as JSON.

Two commands, both read-only::

    Get-NetIPInterface -ConnectionState Connected | Select-Object InterfaceIndex,InterfaceAlias,AddressFamily
    Get-NetRoute -PolicyStore ActiveStore | Select-Object DestinationPrefix,NextHop,InterfaceIndex,...

(each wrapped in ``ConvertTo-Json``). Only the active store is read: persistent routes of an interface
that is not connected are not in it. Routes through interfaces that are not connected (a VPN adapter
that exists but is down) are left out, like the Linux reader leaves out routes of down links.

Mapping to ``OSRoute``: an on-link next hop (``0.0.0.0`` / ``::``) is no gateway; the metric is
``RouteMetric + InterfaceMetric`` (what Windows compares); Windows has one table (``table`` is the
main table's number); ``Protocol`` (a number in the JSON, or a name) becomes Windows' name in lower
case ("netmgmt" for static routes). Windows routes carry no owner number like Linux's protocol 126, so
routes through our own adapter (its alias starts with ``own_prefix``) are reported with our protocol
number: the adapter is the ownership marker on Windows, and the conflict check skips our routes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from tether.helper.root.journal import LINK_PREFIX, MAIN_TABLE, ROUTE_PROTO
from tether.helper.root.powershell import Command, PowerShell, PowerShellError, PowerShellRunner, json_rows
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.os_routes import RouteReader, RouteReadError

__all__ = ["INTERFACES", "ROUTES", "WindowsRouteReader", "routes_from_rows"]

INTERFACES = Command(
    "Get-NetIPInterface",
    (("ConnectionState", "Connected"),),
    json=True,
    select=("InterfaceIndex", "InterfaceAlias", "AddressFamily"),
)
ROUTES = Command(
    "Get-NetRoute",
    (("PolicyStore", "ActiveStore"),),
    json=True,
    select=(
        "DestinationPrefix",
        "NextHop",
        "InterfaceIndex",
        "InterfaceAlias",
        "RouteMetric",
        "InterfaceMetric",
        "Protocol",
    ),
)
# NL_ROUTE_PROTOCOL (nldef.h): the names Get-NetRoute prints.
PROTOCOLS = {
    1: "other",
    2: "local",
    3: "netmgmt",
    4: "icmp",
    5: "egp",
    6: "ggp",
    7: "hello",
    8: "rip",
    9: "is-is",
    10: "es-is",
    11: "cisco",
    12: "bbn",
    13: "ospf",
    14: "bgp",
    15: "idpr",
    16: "eigrp",
    17: "dvmrp",
    18: "rpl",
    19: "dhcp",
    10002: "autostatic",
    10006: "staticnondod",
    10007: "static",
}
_ON_LINK = ("0.0.0.0", "::", "")


def _protocol(value: Any) -> str | int:
    if isinstance(value, bool):
        raise ValueError(f"route protocol {value!r}")
    if isinstance(value, int):
        return PROTOCOLS.get(value, f"windows-{value}")
    return str(value).strip().lower() or "other"


def _int(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} {value!r} is not a number")
    return int(value)


def routes_from_rows(
    routes: list[dict[str, Any]], connected: Mapping[int, str], own_prefix: str = LINK_PREFIX
) -> list[OSRoute]:
    """``OSRoute``s from ``Get-NetRoute`` rows; ``connected`` maps the connected interfaces' index to alias."""
    found: set[OSRoute] = set()
    for row in routes:
        try:
            index = _int(row, "InterfaceIndex")
            if index not in connected:
                continue
            alias = str(row.get("InterfaceAlias") or connected[index] or f"if{index}")
            next_hop = str(row.get("NextHop") or "")
            gateway = None if next_hop in _ON_LINK else ipaddress.ip_address(next_hop.split("%")[0])
            ours = alias.startswith(own_prefix)
            found.add(
                OSRoute(
                    destination=ipaddress.ip_network(str(row["DestinationPrefix"]), strict=False),
                    device=alias,
                    gateway=gateway,
                    table=MAIN_TABLE,
                    protocol=ROUTE_PROTO if ours else _protocol(row.get("Protocol", 1)),
                    metric=_int(row, "RouteMetric") + _int(row, "InterfaceMetric"),
                    scope="link" if gateway is None else "universe",
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise RouteReadError(f"cannot read a route from Get-NetRoute ({exc}): {row!r}") from None
    return sorted(found, key=OSRoute.sort_key)


def connected_interfaces(rows: list[dict[str, Any]]) -> dict[int, str]:
    return {_int(row, "InterfaceIndex"): str(row.get("InterfaceAlias") or "") for row in rows}


class WindowsRouteReader(RouteReader):
    def __init__(self, shell: PowerShell | None = None, own_prefix: str = LINK_PREFIX) -> None:
        self.shell: PowerShell = shell or PowerShellRunner()
        self.own_prefix = own_prefix

    def read(self) -> list[OSRoute]:
        try:
            connected = connected_interfaces(json_rows(self.shell.run(INTERFACES)))
            rows = json_rows(self.shell.run(ROUTES))
        except PowerShellError as exc:
            raise RouteReadError(f"cannot read the routing table: {exc}") from None
        return routes_from_rows(rows, connected, self.own_prefix)
