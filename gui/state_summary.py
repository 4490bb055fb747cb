"""A helper ``State`` as the lines the status window and the diagnostics report show (pure: no Qt, no I/O).

How each conflict was resolved is pieced together from three places, because the helper reports what it
did, not why: ``State.remapped`` (subnets behind virtual IPs: proxy-via with its workload, or the automatic
remap), ``State.conflicts`` (conflicts still standing) and the routed subnets that fall inside the allow
list of the Resolution the tray connected with (the helper no longer reports a conflict it was told to
allow, so only the tray knows).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution

PHASES = {
    pb.State.DISCONNECTED: "disconnected",
    pb.State.CONNECTING: "connecting",
    pb.State.CONNECTED: "connected",
    pb.State.ERROR: "error",
    pb.State.RECONNECTING: "reconnecting",
}


@dataclass(frozen=True)
class ResolutionLine:
    subnet: str
    how: str  # "allowed", "remapped via default/echo", "automatic remap", "unresolved"
    detail: str = ""


def phase_name(state: pb.State) -> str:
    return PHASES.get(state.phase, f"unknown ({state.phase})")


def versioned(version: str, api_level: int) -> str:
    """A version with the API level it speaks ("1.2.0 (API level 2)"); "" when there is no version."""
    if not version:
        return ""
    return f"{version} (API level {api_level})" if api_level else version


def client_version(state: pb.State) -> str:
    """The helper's version: it is the client that spoke to the traffic-manager."""
    return versioned(state.client_version, state.client_api_level)


def manager_version(state: pb.State) -> str:
    return versioned(state.manager_version, state.manager_api_level)


def routed_lines(state: pb.State) -> list[str]:
    return [f"{s.cidr} via {s.via}" if s.via else s.cidr for s in state.routed_subnets]


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        return None


def _inside_any(text: str, ranges: Iterable[str]) -> str:
    """The first range of ``ranges`` that contains ``text``, or ""."""
    network = _network(text)
    if network is None:
        return ""
    for candidate in ranges:
        container = _network(candidate)
        if container is not None and container.version == network.version and network.subnet_of(container):  # type: ignore[arg-type]
            return candidate
    return ""


def resolution_lines(state: pb.State, resolution: Resolution | None = None) -> list[ResolutionLine]:
    """One line per conflicting cluster subnet and how it was resolved (see the module docstring)."""
    lines: list[ResolutionLine] = []
    for remap in state.remapped:
        if remap.workload:
            lines.append(ResolutionLine(remap.subnet, f"remapped via {remap.workload}", "proxy-via"))
        else:
            lines.append(ResolutionLine(remap.subnet, "automatic remap", "the traffic-manager dials"))
    if resolution is not None and resolution.allow_conflicting_subnets:
        for subnet in state.routed_subnets:
            allowed_by = _inside_any(subnet.cidr, resolution.allow_conflicting_subnets)
            if allowed_by:
                lines.append(
                    ResolutionLine(subnet.cidr, "allowed", f"routed into the cluster by the allow range {allowed_by}")
                )
    for conflict in state.conflicts:
        route = f"{conflict.route} on {conflict.device}" if conflict.device else conflict.route
        lines.append(ResolutionLine(conflict.subnet, "unresolved", f"overlaps the route {route}"))
    return lines


def format_resolution_line(line: ResolutionLine) -> str:
    return f"{line.subnet}: {line.how}" + (f" ({line.detail})" if line.detail else "")


def connected_since(state: pb.State) -> str:
    if not state.connected_since_unix:
        return ""
    moment = dt.datetime.fromtimestamp(state.connected_since_unix, tz=dt.UTC).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
