"""Applying a RoutePlan to the TUN device: the interface and the per-platform table.

An applier is bound to one device. ``apply(plan)`` makes the device's routes and addresses equal to
the plan, incrementally: what is already there stays untouched, missing items are added, stale ones
removed. It either succeeds completely or raises ``RouteError`` and leaves things as they were
(what the failed call added is removed again). It only ever touches routes it owns.

The calls block (netlink round trips); from asyncio code use ``apply_async`` / ``clear_async``.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.helper.root.routing.table import EMPTY_PLAN, RoutePlan

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

__all__ = [
    "PLATFORMS",
    "RouteApplier",
    "RouteError",
    "UnsupportedPlatform",
    "open_applier",
]


class UnsupportedPlatform(NotImplementedError):
    """No route applier for this platform (yet)."""


class RouteError(Exception):
    """Adding or removing a route or address failed. Names the item, the device and the cause.

    ``item`` is the route (a network) or address (an interface) that failed; ``code`` the errno when
    the OS gave one; ``existing`` describes a conflicting route owned by someone else, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        item: object = None,
        code: int | None = None,
        existing: str | None = None,
    ) -> None:
        super().__init__(message)
        self.device = device
        self.item = item
        self.code = code
        self.existing = existing


Change = tuple[RoutePlan, RoutePlan]  # (added, removed)


def roll_back(undo: list[tuple[str, Callable[[], object]]], error: RouteError) -> None:
    """Run the undo steps of a failed apply, newest first; a step that fails too is noted on ``error``."""
    for what, step in reversed(undo):
        try:
            step()
        except Exception as undo_exc:
            error.add_note(f"rolling back {what} failed too: {undo_exc}")


class RouteApplier(abc.ABC):
    device: str

    @property
    @abc.abstractmethod
    def applied(self) -> RoutePlan:
        """The plan the last successful ``apply`` put in place (EMPTY_PLAN at first)."""

    @abc.abstractmethod
    def apply(self, plan: RoutePlan) -> Change:
        """Make the device match ``plan``; returns ``(added, removed)``. All or nothing (RouteError)."""

    def clear(self) -> Change:
        """Remove everything this applier put in place."""
        return self.apply(EMPTY_PLAN)

    async def apply_async(self, plan: RoutePlan) -> Change:
        return await asyncio.to_thread(self.apply, plan)

    async def clear_async(self) -> Change:
        return await asyncio.to_thread(self.clear)


# --- the platform table ------------------------------------------------------------------------------

ApplierFactory = Callable[..., RouteApplier]


def _lazy(module: str, attr: str) -> ApplierFactory:
    def factory(device: str, **kwargs: Any) -> RouteApplier:
        return getattr(importlib.import_module(module), attr)(device, **kwargs)

    return factory


PLATFORMS: dict[str, ApplierFactory] = {
    "linux": _lazy("tether.helper.root.routing.apply_linux", "LinuxRouteApplier"),
    "darwin": _lazy("tether.helper.root.routing.apply_darwin", "DarwinRouteApplier"),
    "windows": _lazy("tether.helper.root.routing.apply_windows", "WindowsRouteApplier"),
}


def open_applier(device: str, *, journal: Journal | None = None, platform: str = sys.platform) -> RouteApplier:
    """The route applier for ``device`` on this platform; records its routes in ``journal`` if given."""
    from tether.helper.root.vif.device import platform_key

    factory = PLATFORMS.get(platform_key(platform))
    if factory is None:
        raise UnsupportedPlatform(f"no route applier for platform {platform!r}")
    return factory(device, journal=journal)
