"""Wires the tray together: controller -> view -> tray icon, notifications on transitions, menu clicks ->
controller or windows. It holds no state of its own beyond what was last announced.
"""

from __future__ import annotations

from typing import Protocol

from PySide6.QtCore import QObject, Signal

from tether.gui import intercept_menu, notify, view
from tether.gui.controller import TrayController
from tether.gui.tray import TrayIcon
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperError


class WindowOpener(Protocol):
    """What the presenter needs of ``windows.Windows`` (tests pass a recorder)."""

    def open_status(self) -> object: ...

    def open_settings(self) -> object: ...

    def open_conflicts(self, state: pb.State | None = None, context: str = "") -> object: ...

    def open_add_cluster(self) -> object: ...

    def open_intercept(self, name: str) -> object: ...


class TrayPresenter(QObject):
    quitRequested = Signal()

    def __init__(
        self,
        controller: TrayController,
        tray: TrayIcon,
        notifier: notify.Notifier,
        windows: WindowOpener,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        self.tray = tray
        self.notifier = notifier
        self.windows = windows
        self._seen = notify.Seen()
        self._seen_intercepts: notify.InterceptSummary | None = None  # None: no state seen yet

        controller.stateChanged.connect(self._state_changed)
        controller.helperUnreachable.connect(self._unreachable)
        controller.helperReachable.connect(self._reachable)
        controller.activityChanged.connect(self.refresh)
        controller.clustersChanged.connect(self.refresh)
        controller.connectFailed.connect(self._connect_failed)
        controller.disconnectFailed.connect(self._disconnect_failed)
        controller.conflictsFound.connect(self._conflicts_found)
        controller.workloadsChanged.connect(self.refresh)
        controller.interceptFailed.connect(self._intercept_failed)
        controller.leaveFailed.connect(self._leave_failed)
        tray.actionTriggered.connect(self.trigger)
        tray.menuAboutToShow.connect(controller.refresh_clusters)
        tray.menuAboutToShow.connect(controller.refresh_workloads)
        self.refresh()

    def current_view(self) -> view.TrayView:
        c = self.controller
        section = intercept_menu.section(c.state, c.workloads, reachable=c.unreachable is None)
        return view.compute_view(c.state, c.unreachable, c.clusters, c.activity, section, c.lost_session)

    def refresh(self, *_: object) -> None:
        self.tray.render(self.current_view())

    # --- helper news ---

    def _state_changed(self, state: pb.State) -> None:
        if (notification := notify.on_state(self._seen, state)) is not None:
            self.notifier.notify(notification)
        self._seen = notify.seen(state, None, self._seen)
        now = intercept_menu.summary(state)
        for notification in notify.on_intercepts(self._seen_intercepts, now):
            self.notifier.notify(notification)
        self._seen_intercepts = now
        self.refresh()

    def _unreachable(self, error: HelperError) -> None:
        if (notification := notify.on_unreachable(self._seen, error)) is not None:
            self.notifier.notify(notification)
        self._seen = notify.seen(None, error, self._seen)
        self.refresh()

    def _reachable(self) -> None:
        if (notification := notify.on_reachable(self._seen, self.controller.lost_session)) is not None:
            self.notifier.notify(notification)
        self._seen = notify.Seen(self._seen.phase, self._seen.cluster, self._seen.last_error, "")

    def _connect_failed(self, error: str) -> None:
        self.notifier.notify(notify.connect_failed(self.controller.last_target or "the cluster", error))

    def _disconnect_failed(self, error: str) -> None:
        self.notifier.notify(notify.Notification("Could not disconnect", error, notify.Level.ERROR))

    def _intercept_failed(self, name: str, error: str) -> None:
        self.notifier.notify(notify.intercept_failed(name, error))

    def _leave_failed(self, name: str, error: str) -> None:
        self.notifier.notify(notify.leave_failed(name, error))

    def _conflicts_found(self, state: pb.State) -> None:
        self.windows.open_conflicts(state, self.controller.last_target)

    # --- menu clicks ---

    def trigger(self, action: str, argument: str = "") -> None:
        c = self.controller
        if action == view.CONNECT and argument:
            c.connect_cluster(argument)
        elif action in (view.DISCONNECT, view.CANCEL):
            c.disconnect()
        elif action == view.CONFLICTS:
            self.windows.open_conflicts(c.state)
        elif action == view.STATUS_WINDOW:
            self.windows.open_status()
        elif action == view.SETTINGS:
            self.windows.open_settings()
        elif action == view.ADD_CLUSTER:
            self.windows.open_add_cluster()
        elif action == view.RECONNECT and argument:
            c.connect_cluster(argument)
        elif action == intercept_menu.INTERCEPT and argument:
            self.windows.open_intercept(argument)
        elif action == intercept_menu.LEAVE and argument:
            c.leave(argument)
        elif action == intercept_menu.REFRESH_WORKLOADS:
            c.refresh_workloads()
        elif action == view.RETRY:
            c.retry_now()
        elif action == view.QUIT:
            self.quitRequested.emit()
