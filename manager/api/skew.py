"""Version skew: which client and traffic-manager API levels work together, and the words when they don't.

Pure; spoken by both sides. The client (the helper) judges the manager from its ``Version`` answer with
:func:`judge_manager`; the manager judges each arriving client with :func:`judge_client` and refuses one that
is too old. The promise behind the numbers: a manager keeps serving clients up to ``COMPATIBILITY_WINDOW``
API levels behind its own, so a client accepts managers up to that far ahead of it; older managers are
accepted down to ``MIN_MANAGER_API_LEVEL``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tether.manager.api.version import API_LEVEL

# The oldest manager API level this client speaks to. A manager reporting 0 predates API levels.
MIN_MANAGER_API_LEVEL = 1
# How many API levels a manager may be ahead of a client, and a client behind a manager, and still work.
COMPATIBILITY_WINDOW = 1
# The oldest client API level this manager serves (never below 1: level 1 is the first that was spoken).
MIN_CLIENT_API_LEVEL = max(1, API_LEVEL - COMPATIBILITY_WINDOW)
# The level of a client that sent none: it predates the field, and level 1 is all such clients spoke.
UNSTATED_CLIENT_API_LEVEL = 1

UPGRADE_MANAGER_COMMAND = "tether manager upgrade --namespace {namespace}"


class Verdict(enum.Enum):
    COMPATIBLE = "compatible"
    MANAGER_TOO_OLD = "manager too old"  # the user upgrades the manager
    MANAGER_TOO_NEW = "manager too new"  # beyond the client's window: the user upgrades tether
    CLIENT_TOO_OLD = "client too old"  # the manager says it no longer serves this client: upgrade tether


@dataclass(frozen=True)
class Side:
    """One end of the connection: its version string and the API level it speaks."""

    version: str
    api_level: int

    def describe(self, what: str) -> str:
        return f"{what} {self.version or '(unknown version)'} (API level {self.api_level})"


@dataclass(frozen=True)
class Skew:
    verdict: Verdict
    message: str  # empty when compatible

    @property
    def compatible(self) -> bool:
        return self.verdict is Verdict.COMPATIBLE


def judge_manager(
    client: Side,
    manager: Side,
    manager_min_client_level: int = 0,
    namespace: str = "",
    *,
    min_manager_level: int = MIN_MANAGER_API_LEVEL,
    window: int = COMPATIBILITY_WINDOW,
) -> Skew:
    """The client's verdict on a manager from its Version answer (``manager_min_client_level``: what the
    manager says it still serves, 0 when it says nothing). ``namespace`` is where the manager runs."""
    if manager.api_level < min_manager_level:
        return Skew(Verdict.MANAGER_TOO_OLD, _manager_too_old(client, manager, namespace, min_manager_level))
    if manager_min_client_level > client.api_level:
        return Skew(Verdict.CLIENT_TOO_OLD, _client_too_old(client, manager, manager_min_client_level, namespace))
    if manager.api_level > client.api_level + window:
        return Skew(Verdict.MANAGER_TOO_NEW, _manager_too_new(client, manager, namespace, window))
    return Skew(Verdict.COMPATIBLE, "")


def judge_client(client: Side, manager: Side, min_client_level: int = MIN_CLIENT_API_LEVEL) -> Skew:
    """The manager's verdict on an arriving client; a client level of 0 means it stated none."""
    level = client.api_level or UNSTATED_CLIENT_API_LEVEL
    if level < min_client_level:
        client = Side(client.version, level)
        return Skew(Verdict.CLIENT_TOO_OLD, _client_too_old(client, manager, min_client_level, ""))
    return Skew(Verdict.COMPATIBLE, "")


def _where(namespace: str) -> str:
    return f' in namespace "{namespace}"' if namespace else ""


def _upgrade_tether(manager: Side) -> str:
    target = f" {manager.version} or later" if manager.version else ""
    return f"Upgrade tether on this machine (the CLI and the helper) to{target or ' a newer version'}."


def _manager_too_old(client: Side, manager: Side, namespace: str, min_level: int) -> str:
    command = UPGRADE_MANAGER_COMMAND.format(namespace=namespace or "NAMESPACE")
    return (
        f"the traffic-manager{_where(namespace)} is too old for this client: {manager.describe('manager')}, "
        f"{client.describe('tether')}, which needs a manager of API level {min_level} or later. "
        f"Upgrade the traffic-manager: {command}"
    )


def _manager_too_new(client: Side, manager: Side, namespace: str, window: int) -> str:
    return (
        f"the traffic-manager{_where(namespace)} is newer than this client supports: {manager.describe('manager')}, "
        f"{client.describe('tether')}, which supports managers up to API level {client.api_level + window}. "
        + _upgrade_tether(manager)
    )


def _client_too_old(client: Side, manager: Side, min_level: int, namespace: str) -> str:
    return (
        f"this client is too old for the traffic-manager{_where(namespace)}: {client.describe('tether')}, "
        f"{manager.describe('manager')}, which serves clients of API level {min_level} or later. "
        + _upgrade_tether(manager)
    )
