"""The status window: the connection as the helper reports it, recent events, and "Copy diagnostics".

``show_state(state, resolution=None)`` is called with every State from the helper's WatchState stream;
``resolution`` is the one the tray connected with, the only source for which routed subnets were
allowed conflicts (see ``state_summary``). ``set_unreachable(error)`` shows why the helper cannot be
reached (an error with ``message`` and ``fix``, like ``HelperError``) until the next state arrives.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from tether.gui import intercept_menu, state_summary
from tether.gui.diagnostics import collect_versions, diagnostics_text
from tether.gui.dialog_parts import ERROR_STYLE, message_label, show_message
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution

MAX_EVENTS = 100


class StatusWindow(QWidget):
    diagnosticsCopied = Signal(str)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        versions: Mapping[str, str] | None = None,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("statusWindow")
        self.setWindowTitle("Tether status")
        self.setMinimumWidth(520)
        self._versions = dict(versions) if versions is not None else None
        self._clock = clock
        self._state = pb.State()
        self._resolution: Resolution | None = None
        self._events: deque[str] = deque(maxlen=MAX_EVENTS)

        layout = QVBoxLayout(self)
        self.unreachableBanner = message_label("unreachableBanner")
        layout.addWidget(self.unreachableBanner)

        form = QFormLayout()
        self._fields: dict[str, QLabel] = {}
        for name, label in (
            ("statusPhase", "State"),
            ("statusCluster", "Cluster"),
            ("statusServer", "Server"),
            ("statusNamespace", "Namespace"),
            ("statusClientVersion", "Tether (client)"),
            ("statusManagerVersion", "Traffic-manager"),
            ("statusDnsMode", "DNS"),
            ("statusDnsReason", "DNS mode chosen"),
            ("statusDnsProbes", "DNS probes"),
            ("statusError", "Last error"),
        ):
            value = QLabel("—")
            value.setObjectName(name)
            value.setWordWrap(True)
            form.addRow(label, value)
            self._fields[name] = value
        layout.addLayout(form)

        self.routedSubnets = self._list_box(layout, "Routed subnets", "routedSubnets")
        self.conflictResolutions = self._list_box(layout, "Conflicts and how they were resolved", "conflictResolutions")
        self.intercepts = self._list_box(layout, "Intercepts", "intercepts")
        self.recentEvents = self._list_box(layout, "Recent events", "recentEvents")

        row = QHBoxLayout()
        row.addStretch(1)
        self.copyDiagnosticsButton = QPushButton("Copy diagnostics")
        self.copyDiagnosticsButton.setObjectName("copyDiagnosticsButton")
        self.copyDiagnosticsButton.setToolTip("Copy a report for a bug report to the clipboard (no credentials)")
        self.copyDiagnosticsButton.clicked.connect(self.copy_diagnostics)
        row.addWidget(self.copyDiagnosticsButton)
        layout.addLayout(row)
        self.show_state(self._state)

    @staticmethod
    def _list_box(layout: QVBoxLayout, title: str, name: str) -> QListWidget:
        box = QGroupBox(title)
        inner = QVBoxLayout(box)
        widget = QListWidget()
        widget.setObjectName(name)
        widget.setMaximumHeight(120)
        inner.addWidget(widget)
        layout.addWidget(box)
        return widget

    def field_text(self, name: str) -> str:
        return self._fields[name].text()

    def show_state(self, state: pb.State, resolution: Resolution | None = None) -> None:
        self._state = state
        if resolution is not None or state.phase == pb.State.DISCONNECTED:
            self._resolution = resolution
        show_message(self.unreachableBanner, "")
        dns = state.dns_mode + (f" ({state.dns_server})" if state.dns_mode and state.dns_server else "")
        values = {
            "statusPhase": state_summary.phase_name(state),
            "statusCluster": state.cluster,
            "statusServer": state.server,
            "statusNamespace": state.namespace,
            "statusClientVersion": state_summary.client_version(state),
            "statusManagerVersion": state_summary.manager_version(state),
            "statusDnsMode": dns,
            "statusDnsReason": state.dns_mode_reason,  # a forced mode's reason says so
            "statusDnsProbes": "\n".join(state.dns_probes),
            "statusError": state.last_error,
        }
        since = state_summary.connected_since(state)
        if since and state.phase == pb.State.CONNECTED:
            values["statusPhase"] += f" since {since}"
        for name, value in values.items():
            self._fields[name].setText(value or "—")
        self._fields["statusError"].setStyleSheet(ERROR_STYLE if state.last_error else "")
        self.routedSubnets.clear()
        self.routedSubnets.addItems(state_summary.routed_lines(state) or ["(none)"])
        self.conflictResolutions.clear()
        lines = state_summary.resolution_lines(state, self._resolution)
        self.conflictResolutions.addItems([state_summary.format_resolution_line(x) for x in lines] or ["(none)"])

    def show_intercepts(self, state: pb.State | None, workloads: intercept_menu.Workloads) -> None:
        """This session's intercepts, other users' in the namespace, and intercept errors (the CLI's words)."""
        self.intercepts.clear()
        self.intercepts.addItems(intercept_menu.status_lines(state, workloads) or ["(none)"])

    def set_unreachable(self, error: object) -> None:
        message = getattr(error, "message", "") or str(error)
        fix = getattr(error, "fix", "")
        show_message(
            self.unreachableBanner, f"The Tether helper cannot be reached: {message}" + (f"\n{fix}" if fix else "")
        )

    def add_event(self, text: str) -> None:
        """Remember an event (newest first on screen); only the last MAX_EVENTS are kept."""
        line = f"{self._clock().strftime('%H:%M:%S')}  {text}"
        self._events.append(line)
        self.recentEvents.insertItem(0, line)
        while self.recentEvents.count() > MAX_EVENTS:
            self.recentEvents.takeItem(self.recentEvents.count() - 1)

    def events(self) -> list[str]:
        """Recent events, oldest first."""
        return list(self._events)

    def diagnostics(self) -> str:
        if self._versions is None:
            self._versions = collect_versions()
        return diagnostics_text(self._state, self.events(), self._versions, self._resolution)

    def copy_diagnostics(self) -> None:
        text = self.diagnostics()
        QGuiApplication.clipboard().setText(text)
        self.diagnosticsCopied.emit(text)
