"""Routing: which subnets go into the TUN (``table``, pure) and putting that in place (``apply``).

Typical use by a session::

    plan = compute_plan(service_subnets=..., pod_subnets=..., never_route=[api_server_ip, dns_ip])
    applier = open_applier(device.name, journal=journal)
    await applier.apply_async(plan)        # incremental on every cluster-info change
    await applier.clear_async()            # on disconnect
"""

from tether.helper.routing.apply import FakeRouteApplier, RouteApplier, RouteError, open_applier
from tether.helper.routing.table import (
    EMPTY_PLAN,
    InvalidSubnet,
    PlanError,
    RoutePlan,
    compute_plan,
    diff,
)

__all__ = [
    "EMPTY_PLAN",
    "FakeRouteApplier",
    "InvalidSubnet",
    "PlanError",
    "RouteApplier",
    "RouteError",
    "RoutePlan",
    "compute_plan",
    "diff",
    "open_applier",
]
