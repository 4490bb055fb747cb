"""Desktop notifications: which changes deserve one (pure), and who shows them (an interface; the Qt tray icon).

A notification marks a transition, never a state: the helper repeats states (every subnet change sends
one), and the user wants to hear "connected" once. The first state the tray sees is its baseline, not
news: starting the tray while connected says nothing. Failures of a connect this tray asked for are
announced from the connect's own error (``connect_failed``), so the state that follows it stays quiet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperError

if TYPE_CHECKING:
    from PySide6.QtWidgets import QSystemTrayIcon

APP_TITLE = "Tether"


class Level(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Notification:
    title: str
    message: str
    level: Level = Level.INFO


@dataclass(frozen=True)
class Seen:
    """What the tray last showed, for deciding what is new."""

    phase: int | None = None  # None: nothing seen yet
    cluster: str = ""
    last_error: str = ""
    unreachable: str = ""  # the unreachable error's message, "" while reachable


def seen(state: pb.State | None, unreachable: HelperError | None, before: Seen) -> Seen:
    if unreachable is not None:
        return Seen(before.phase, before.cluster, before.last_error, unreachable.message)
    if state is None:
        return before
    return Seen(state.phase, state.cluster or before.cluster, state.last_error, "")


def on_state(before: Seen, state: pb.State) -> Notification | None:
    """The notification for moving from ``before`` to ``state``, if the move deserves one."""
    if before.phase is None:
        return None
    cluster = state.cluster or before.cluster or "the cluster"
    if state.phase == before.phase:
        return None
    if state.phase == pb.State.CONNECTED:
        if before.phase == pb.State.RECONNECTING:
            return Notification(APP_TITLE, f"Reconnected to {cluster}")
        return Notification(APP_TITLE, f"Connected to {cluster}")
    if state.phase == pb.State.DISCONNECTED and before.phase in (pb.State.CONNECTED, pb.State.RECONNECTING):
        if state.last_error:
            return Notification(APP_TITLE, f"Disconnected from {cluster}: {state.last_error}", Level.ERROR)
        return Notification(APP_TITLE, f"Disconnected from {cluster}")
    if state.phase == pb.State.RECONNECTING and before.phase == pb.State.CONNECTED:
        return Notification(APP_TITLE, f"Lost the connection to {cluster}; reconnecting", Level.WARNING)
    if state.phase == pb.State.ERROR and before.phase != pb.State.CONNECTING:
        # An ERROR straight out of CONNECTING is a failed connect: connect_failed tells that one.
        detail = state.last_error or "see the status window"
        return Notification(APP_TITLE, f"Error on {cluster}: {detail}", Level.ERROR)
    return None


def on_unreachable(before: Seen, error: HelperError) -> Notification | None:
    """Once when the helper stops answering (or is missing at start), not on every retry."""
    if before.unreachable:
        return None
    text = f"{error.message}. {error.fix}" if error.fix else error.message
    return Notification("Tether helper unreachable", text, Level.ERROR)


def on_reachable(before: Seen, lost: str = "") -> Notification | None:
    """``lost``: the cluster of the session the helper died in, which the menu now offers to reconnect."""
    if not before.unreachable:
        return None
    if lost:
        return Notification(APP_TITLE, f"The Tether helper is back: choose Reconnect to {lost} in the menu")
    return Notification(APP_TITLE, "The Tether helper is reachable again")


def connect_failed(cluster: str, error: str) -> Notification:
    return Notification(f"Could not connect to {cluster}", error, Level.ERROR)


InterceptSummary = dict[tuple[str, str, int], tuple[str, str]]  # intercept_menu.summary(state)


def on_intercepts(before: InterceptSummary | None, after: InterceptSummary) -> list[Notification]:
    """One notification per intercept of ours that became active, failed or ended; ``before`` None: baseline."""
    if before is None:
        return []
    found: list[Notification] = []
    for key, (phase, error) in after.items():
        namespace, workload, port = key
        old = before.get(key)
        if old is not None and old[0] == phase:
            continue
        if phase == "active":
            found.append(Notification(APP_TITLE, f"Intercepting {namespace}/{workload} port {port}"))
        elif phase == "failed":
            text = f"The intercept of {namespace}/{workload} port {port} failed: {error or 'see the status window'}"
            found.append(Notification(APP_TITLE, text, Level.ERROR))
    for key in before.keys() - after.keys():
        if before[key][0] == "waiting":
            continue  # it never started: the failed call says why (the CLI's, or the tray's own notification)
        namespace, workload, port = key
        found.append(Notification(APP_TITLE, f"The intercept of {namespace}/{workload} port {port} ended"))
    return found


def intercept_failed(workload: str, error: str) -> Notification:
    return Notification(f"Could not intercept {workload}", error, Level.ERROR)


def leave_failed(workload: str, error: str) -> Notification:
    return Notification(f"Could not leave the intercept of {workload}", error, Level.ERROR)


# --- who shows them ------------------------------------------------------------------------------------


class Notifier(Protocol):
    def notify(self, notification: Notification) -> None: ...


class TrayNotifier:
    """Shows notifications as the tray icon's balloon/notification (``QSystemTrayIcon.showMessage``)."""

    TIMEOUT_MS = 6000

    def __init__(self, tray: QSystemTrayIcon) -> None:
        from PySide6.QtWidgets import QSystemTrayIcon  # here, so the rules above import without Qt

        self._tray = tray
        self._icons = {
            Level.INFO: QSystemTrayIcon.MessageIcon.Information,
            Level.WARNING: QSystemTrayIcon.MessageIcon.Warning,
            Level.ERROR: QSystemTrayIcon.MessageIcon.Critical,
        }

    def notify(self, notification: Notification) -> None:
        self._tray.showMessage(
            notification.title, notification.message, self._icons[notification.level], self.TIMEOUT_MS
        )
