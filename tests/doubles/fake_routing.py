"""Stand-ins for the routing layer's OS access (``tether.helper.root.routing``): an applier and a reader
that keep routes in memory, for tests of their callers."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from tether.helper.root.routing.apply import Change, RouteApplier, RouteError
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.os_routes import RouteReader
from tether.helper.root.routing.table import EMPTY_PLAN, IPNetwork, RoutePlan, diff, parse_subnet


class FakeRouteApplier(RouteApplier):
    """A route applier for tests of callers: keeps the plan in memory and records every call.

    ``foreign`` routes act like somebody else's identical route (adding one fails like EEXIST);
    ``fail_on`` makes adding those routes fail with another error. A failed apply changes nothing.
    """

    def __init__(
        self,
        device: str = "tether0",
        *,
        foreign: Iterable[str | IPNetwork] = (),
        fail_on: Iterable[str | IPNetwork] = (),
    ) -> None:
        self.device = device
        self.foreign: set[IPNetwork] = {parse_subnet(r, what="route") for r in foreign}
        self.fail_on: set[IPNetwork] = {parse_subnet(r, what="route") for r in fail_on}
        self.history: list[Change] = []
        self.calls: list[RoutePlan] = []
        self._applied = EMPTY_PLAN

    @property
    def applied(self) -> RoutePlan:
        return self._applied

    def apply(self, plan: RoutePlan) -> Change:
        self.calls.append(plan)
        added, removed = diff(self._applied, plan)
        for route in added.routes:
            if route in self.foreign:
                raise RouteError(
                    f"cannot add route {route} dev {self.device}: the same route already exists (foreign)",
                    device=self.device,
                    item=route,
                    code=errno.EEXIST,
                    existing=f"{route} (foreign)",
                )
            if route in self.fail_on:
                raise RouteError(
                    f"cannot add route {route} dev {self.device}: injected failure", device=self.device, item=route
                )
        self._applied = plan
        self.history.append((added, removed))
        return added, removed


class FakeRouteReader(RouteReader):
    """A reader for tests of callers: returns ``routes``; raises ``error`` while one is set."""

    def __init__(self, routes: Iterable[OSRoute] = (), *, error: BaseException | None = None) -> None:
        self.routes: list[OSRoute] = list(routes)
        self.error = error

    def read(self) -> list[OSRoute]:
        if self.error is not None:
            raise self.error
        return sorted(self.routes, key=OSRoute.sort_key)

    async def read_async(self) -> list[OSRoute]:
        return self.read()
