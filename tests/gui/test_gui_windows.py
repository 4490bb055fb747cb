"""The windows wired to the controller: status window fed by it, the conflict dialog reconnecting through it."""

from __future__ import annotations

import pytest
from test_gui_support import (
    VPN_CONFLICT,
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    make_controller,
)

from tests.doubles.fake_autostart import FakeAutostart
from tests.doubles.fake_notifier import FakeNotifier
from tests.doubles.fake_vault import MemoryVault
from tests.doubles.fake_workloads import FakeWorkloadSource
from tether.gui.presenter import TrayPresenter
from tether.gui.settings import SettingsStore
from tether.gui.tray import TrayIcon
from tether.gui.windows import Windows
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution

WAIT = 5000


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def added():
    """The clusters added in the app, as the settings file would list them."""
    return []


@pytest.fixture
def wired(qtbot, helper, work, added):
    controller = make_controller(helper.socket_path, work, added=lambda: [Named(n) for n in added])
    windows = Windows(
        controller,
        settings_store=SettingsStore(work / "tray.json"),
        autostart=FakeAutostart(),
        vault=MemoryVault(),
        workloads=FakeWorkloadSource({"lab": ["default/web", "shop/catalog"]}),
    )
    tray = TrayIcon()
    presenter = TrayPresenter(controller, tray, FakeNotifier(), windows)
    controller.start()
    qtbot.waitUntil(lambda: controller.state is not None and bool(controller.clusters.clusters), timeout=WAIT)
    yield presenter
    windows.close_all()
    controller.shutdown()


def test_status_window_replays_events_and_follows_the_helper(qtbot, wired):
    controller, windows = wired.controller, wired.windows
    controller.log("before the window opened")
    status = windows.open_status()
    qtbot.addWidget(status)
    assert status.isVisible()
    assert any("before the window opened" in e for e in status.events())
    assert windows.open_status() is status, "one status window, raised again"
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: controller.state.phase == pb.State.CONNECTED and controller.activity is None, timeout=WAIT)
    qtbot.waitUntil(lambda: "lab" in status.field_text("statusCluster"), timeout=WAIT)
    assert any("connected to lab" in e for e in status.events())


def test_failed_connect_on_conflict_opens_the_dialog_and_apply_reconnects_and_remembers(qtbot, wired, helper):
    controller, windows = wired.controller, wired.windows
    helper.session.conflict_with([VPN_CONFLICT])
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: windows.conflicts is not None, timeout=WAIT)
    dialog = windows.conflicts
    assert dialog.context == "lab" and dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.loading, timeout=WAIT)
    dialog.set_resolution(Resolution(auto_resolve=True))
    assert dialog.applyButton.isEnabled()
    dialog.applyButton.click()
    qtbot.waitUntil(lambda: controller.state.phase == pb.State.CONNECTED and controller.activity is None, timeout=WAIT)
    assert helper.requests[-1].auto_resolve
    assert controller.resolutions.get("lab") == Resolution(auto_resolve=True)
    assert [r.reason for r in controller.state.remapped] == ["auto-resolve"]
    qtbot.waitUntil(lambda: windows.conflicts is None, timeout=WAIT)


def test_conflicts_entry_opens_the_dialog_only_with_conflicts(qtbot, wired, helper):
    windows = wired.windows
    assert windows.open_conflicts() is None
    helper.publish(pb.State(phase=pb.State.CONNECTED, cluster="lab", conflicts=[VPN_CONFLICT]))
    qtbot.waitUntil(lambda: bool(wired.controller.state.conflicts), timeout=WAIT)
    dialog = windows.open_conflicts()
    assert dialog is not None and dialog.context == "lab"
    dialog.reject()


def test_settings_and_add_cluster_dialogs_open_once_each(qtbot, wired, added):
    windows = wired.windows
    settings = windows.open_settings()
    assert windows.open_settings() is settings and settings.isVisible()
    add = windows.open_add_cluster()
    assert windows.open_add_cluster() is add and add.isVisible()
    added.append("edge")
    add.clusterAdded.emit("edge")  # as the dialog does once it saved the cluster
    qtbot.waitUntil(lambda: wired.controller.clusters.find("edge") is not None, timeout=WAIT)
    assert wired.tray.action("tether-cluster:edge") is not None, "the new cluster is in the menu"
    assert any("added the cluster edge" in e for e in wired.controller.events)
    settings.reject()
    add.reject()
    qtbot.waitUntil(lambda: windows.settings is None and windows.add_cluster is None, timeout=WAIT)
