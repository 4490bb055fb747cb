"""Routing: which subnets go into the TUN (``table``, pure) and putting that in place (``apply``).

Typical use by a session::

    plan = compute_plan(service_subnets=..., pod_subnets=..., never_route=[api_server_ip, dns_ip])
    applier = open_applier(device.name, journal=journal)
    await applier.apply_async(plan)        # incremental on every cluster-info change
    await applier.clear_async()            # on disconnect

VPN conflicts (``conflicts``, pure; ``os_routes`` reads the OS's tables; ``monitor`` watches them)::

    reader = open_reader()
    conflicts = find_conflicts(subnets, await reader.read_async(), own_devices=[device.name], allowed=allow)
    if conflicts:
        raise ConflictError(conflicts)
    monitor = RouteMonitor(on_routes_changed)   # awaits on_routes_changed(routes) after changes
    await monitor.start()
"""

from tether.helper.root.routing.apply import RouteApplier, RouteError, open_applier
from tether.helper.root.routing.conflicts import (
    Conflict,
    ConflictError,
    OSRoute,
    find_conflicts,
    format_conflicts,
    suggest_allowed,
)
from tether.helper.root.routing.monitor import RouteMonitor
from tether.helper.root.routing.os_routes import RouteReader, RouteReadError, open_reader
from tether.helper.root.routing.table import EMPTY_PLAN, InvalidSubnet, PlanError, RoutePlan, compute_plan, diff

__all__ = [
    "EMPTY_PLAN",
    "Conflict",
    "ConflictError",
    "InvalidSubnet",
    "OSRoute",
    "PlanError",
    "RouteApplier",
    "RouteError",
    "RouteMonitor",
    "RoutePlan",
    "RouteReadError",
    "RouteReader",
    "compute_plan",
    "diff",
    "find_conflicts",
    "format_conflicts",
    "open_applier",
    "open_reader",
    "suggest_allowed",
]
