"""The tray's windows (status, settings, conflicts, add cluster), created when first asked for and wired
to the controller: what they show comes from it, what they decide goes back to it.

The window modules are imported only when a window opens: the tray starts without building any widget
it may never show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QWidget

from tether.gui.autostart import Autostart, autostart_for
from tether.gui.contexts import Source
from tether.gui.controller import TrayController
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution

if TYPE_CHECKING:
    from tether.gui.add_cluster_dialog import AddClusterDialog
    from tether.gui.clusters import TokenVault
    from tether.gui.conflict_dialog import ConflictDialog
    from tether.gui.intercept_dialog import InterceptDialog
    from tether.gui.settings import SettingsStore
    from tether.gui.settings_dialog import SettingsDialog
    from tether.gui.status_window import StatusWindow
    from tether.gui.workloads import WorkloadSource


class Windows(QObject):
    def __init__(
        self,
        controller: TrayController,
        *,
        settings_store: SettingsStore | None = None,
        autostart: Autostart | None = None,
        vault: TokenVault | None = None,
        workloads: WorkloadSource | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        self._settings_store = settings_store
        self._autostart = autostart
        self._vault = vault
        self._workloads = workloads
        self.status: StatusWindow | None = None
        self.settings: SettingsDialog | None = None
        self.conflicts: ConflictDialog | None = None
        self.add_cluster: AddClusterDialog | None = None
        self.intercept: InterceptDialog | None = None

    # --- what the windows need, made on first use ---

    def settings_store(self) -> SettingsStore:
        if self._settings_store is None:
            from tether.gui.settings import SettingsStore

            self._settings_store = SettingsStore()
        return self._settings_store

    def vault(self) -> TokenVault:
        if self._vault is None:
            from tether.gui.clusters import KeyringVault

            self._vault = KeyringVault()
        return self._vault

    def workloads(self) -> WorkloadSource:
        if self._workloads is None:
            from tether.gui.workloads import KubeWorkloadSource

            self._workloads = KubeWorkloadSource(
                kubeconfig=self.controller.kubeconfig,
                kubeconfig_text_for=self._added_kubeconfig_text,
                environ=self.controller.environ,
            )
        return self._workloads

    def _added_kubeconfig_text(self, name: str) -> str | None:
        # Called from the workload list's worker thread; reading the cluster list is a plain attribute read.
        cluster = self.controller.clusters.find(name)
        if cluster is None or cluster.source is not Source.ADDED:
            return None
        from tether.gui.cluster_store import kubeconfig_for

        return kubeconfig_for(name, self.settings_store(), self.vault())

    # --- status window ---

    def open_status(self) -> StatusWindow:
        if self.status is None:
            from tether.gui.status_window import StatusWindow

            window = StatusWindow()
            for event in self.controller.events:
                window.add_event(event)
            if self.controller.state is not None:
                window.show_state(self.controller.state, self.controller.resolution)
            if self.controller.unreachable is not None:
                window.set_unreachable(self.controller.unreachable)
            self.controller.stateChanged.connect(self._status_state)
            self.controller.helperUnreachable.connect(window.set_unreachable)
            self.controller.eventLogged.connect(window.add_event)
            window.show_intercepts(self.controller.state, self.controller.workloads)
            self.controller.workloadsChanged.connect(self._status_intercepts)
            self.status = window
        _raise(self.status)
        return self.status

    def _status_state(self, state: pb.State) -> None:
        if self.status is not None:
            self.status.show_state(state, self.controller.resolution)
            self.status.show_intercepts(state, self.controller.workloads)

    def _status_intercepts(self, workloads: object) -> None:
        if self.status is not None:
            self.status.show_intercepts(self.controller.state, self.controller.workloads)

    # --- settings ---

    def open_settings(self) -> SettingsDialog:
        if self.settings is None:
            from tether.gui.settings_dialog import SettingsDialog

            if self._autostart is None:
                self._autostart = autostart_for()
            dialog = SettingsDialog(self.settings_store(), self._autostart)
            dialog.settingsSaved.connect(self._settings_saved)
            dialog.finished.connect(self._settings_closed)
            self.settings = dialog
        _raise(self.settings)
        return self.settings

    def _settings_saved(self, settings: object) -> None:
        self.controller.log("settings saved; they apply from the next connect")
        self.controller.refresh_clusters()

    def _settings_closed(self) -> None:
        if self.settings is not None:
            self.settings.deleteLater()
            self.settings = None

    # --- VPN conflicts ---

    def open_conflicts(self, state: pb.State | None = None, context: str = "") -> ConflictDialog | None:
        """The conflict dialog for ``state`` (default: the helper's current state); None without conflicts."""
        state = state if state is not None else self.controller.state
        if state is None or not state.conflicts:
            return None
        context = context or state.cluster or self.controller.last_target
        if self.conflicts is not None:
            self.conflicts.close()  # a newer failure replaces the dialog of an older one
        from tether.gui.conflict_dialog import ConflictDialog

        dialog = ConflictDialog(state, context, self.workloads(), resolutions=self.controller.resolutions)
        dialog.resolutionChosen.connect(lambda resolution: self._resolution_chosen(context, resolution))
        dialog.finished.connect(lambda _result: self._conflicts_closed(dialog))
        self.conflicts = dialog
        _raise(dialog)
        return dialog

    def _resolution_chosen(self, context: str, resolution: Resolution) -> None:
        self.controller.connect_cluster(context, resolution)

    def _conflicts_closed(self, dialog: ConflictDialog) -> None:
        if self.conflicts is dialog:
            self.conflicts = None
        dialog.deleteLater()

    # --- add cluster ---

    def open_add_cluster(self) -> AddClusterDialog:
        if self.add_cluster is None:
            from tether.gui.add_cluster_dialog import AddClusterDialog

            dialog = AddClusterDialog(self.settings_store(), self.vault())
            dialog.clusterAdded.connect(self._cluster_added)
            dialog.finished.connect(self._add_cluster_closed)
            self.add_cluster = dialog
        _raise(self.add_cluster)
        return self.add_cluster

    def _cluster_added(self, name: str) -> None:
        self.controller.log(f"added the cluster {name}")
        self.controller.refresh_clusters()

    def _add_cluster_closed(self) -> None:
        if self.add_cluster is not None:
            self.add_cluster.deleteLater()
            self.add_cluster = None

    # --- intercept ---

    def open_intercept(self, name: str) -> InterceptDialog:
        """The Intercept dialog for ``namespace/name``; a newer one replaces an open one."""
        from tether.gui.intercept_dialog import InterceptDialog
        from tether.gui.intercept_menu import split_name

        namespace, workload = split_name(name)
        kind = next(
            (w.kind for w in self.controller.workloads.listing if (w.namespace, w.name) == (namespace, workload)), ""
        )
        if self.intercept is not None:
            self.intercept.close()
        dialog = InterceptDialog(namespace, workload, kind)
        dialog.interceptChosen.connect(
            lambda choice: self.controller.intercept(choice.request, choice.env_file, choice.env_json)
        )
        dialog.finished.connect(lambda _result: self._intercept_closed(dialog))
        self.intercept = dialog
        _raise(dialog)
        return dialog

    def _intercept_closed(self, dialog: InterceptDialog) -> None:
        if self.intercept is dialog:
            self.intercept = None
        dialog.deleteLater()

    def close_all(self) -> None:
        for window in (self.intercept, self.conflicts, self.settings, self.add_cluster, self.status):
            if window is not None:
                window.close()


def _raise(window: QWidget) -> None:
    window.show()
    window.raise_()
    window.activateWindow()
