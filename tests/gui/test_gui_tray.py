"""The tray icon and its menu (rendered Qt actions), the presenter's wiring, and notifications on transitions."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon
from test_gui_support import (
    VPN_CONFLICT,
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    make_controller,
)

from tests.doubles.fake_notifier import FakeNotifier
from tether.gui import notify, view
from tether.gui.contexts import Cluster, ClusterList
from tether.gui.notify import Level, Notification, Seen
from tether.gui.presenter import TrayPresenter
from tether.gui.tray import TrayIcon
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperNotRunningError

WAIT = 5000
CLUSTERS = ClusterList((Cluster("lab", current=True), Cluster("staging")))


class RecordingWindows:
    def __init__(self) -> None:
        self.opened: list[tuple[object, ...]] = []

    def open_status(self):
        self.opened.append(("status",))

    def open_settings(self):
        self.opened.append(("settings",))

    def open_conflicts(self, state=None, context=""):
        self.opened.append(("conflicts", context, tuple(c.subnet for c in state.conflicts) if state else ()))

    def open_add_cluster(self):
        self.opened.append(("add-cluster",))


@pytest.fixture
def app(qtbot, helper, work):
    """The tray as the app builds it, with a fake notifier and recorded windows."""
    controller = make_controller(helper.socket_path, work)
    tray = TrayIcon()
    notifier = FakeNotifier()
    windows = RecordingWindows()
    presenter = TrayPresenter(controller, tray, notifier, windows)
    controller.start()
    qtbot.waitUntil(lambda: controller.state is not None and bool(controller.clusters.clusters), timeout=WAIT)
    yield presenter
    controller.shutdown()
    tray.hide()


def connected(presenter) -> bool:
    state = presenter.controller.state
    return state is not None and state.phase == pb.State.CONNECTED and presenter.controller.activity is None


# --- rendering ---


def test_menu_actions_carry_the_entry_keys_as_object_names(qapp):
    tray = TrayIcon()
    tray.render(view.compute_view(pb.State(), None, CLUSTERS))
    connect = tray.menu.findChild(QAction, view.KEY_CONNECT)
    assert connect is not None and connect.text() == "Connect to lab" and connect.isEnabled()
    header = tray.menu.findChild(QAction, view.KEY_HEADER)
    assert header is not None and not header.isEnabled(), "information lines cannot be clicked"
    clusters = tray.menu.findChild(QMenu, view.KEY_CLUSTERS)
    assert clusters is not None
    lab = clusters.findChild(QAction, view.KEY_CLUSTER_PREFIX + "lab")
    assert lab.text() == "lab  (current context)" and lab.isCheckable() and not lab.isChecked()
    assert tray.tray.toolTip() == "Tether: Not connected"
    assert not tray.tray.icon().isNull()
    texts = [a.text() for a in tray.menu.actions()]
    assert texts[-1] == "Quit" and "Open status window" in texts and "Settings…" in texts


def test_state_updates_change_actions_in_place_and_rebuild_only_when_the_shape_changes(qapp):
    tray = TrayIcon()
    state = pb.State(phase=pb.State.CONNECTED, cluster="lab", namespace="a", dns_mode="x")
    tray.render(view.compute_view(state, None, CLUSTERS))
    assert tray.rebuilds == 1
    namespace_action = tray.action(f"{view.KEY_STATUS_PREFIX}namespace")
    state.namespace = "b"
    tray.render(view.compute_view(state, None, CLUSTERS))
    assert tray.rebuilds == 1, "a changed line is updated, not rebuilt"
    assert tray.action(f"{view.KEY_STATUS_PREFIX}namespace") is namespace_action
    assert namespace_action.text() == "Namespace: b"
    tray.render(view.compute_view(state, None, CLUSTERS))
    assert tray.rebuilds == 1
    tray.render(view.compute_view(pb.State(), None, CLUSTERS))
    assert tray.rebuilds == 2
    assert tray.action(f"{view.KEY_STATUS_PREFIX}namespace") is None
    assert tray.action(view.KEY_CONNECT) is not None


def test_a_new_shape_waits_for_the_open_menu_to_close(qtbot):
    tray = TrayIcon()
    state = pb.State(phase=pb.State.CONNECTED, cluster="lab", namespace="a")
    tray.render(view.compute_view(state, None, CLUSTERS))
    tray.menu.popup(tray.menu.pos())
    qtbot.waitUntil(tray.menu.isVisible)
    tray.render(view.compute_view(pb.State(), None, CLUSTERS))
    assert tray.rebuilds == 1 and tray.deferred, "not rebuilt under the pointer"
    assert tray.action(view.KEY_DISCONNECT) is not None
    tray.menu.hide()
    qtbot.waitUntil(lambda: tray.rebuilds == 2)
    assert tray.action(view.KEY_DISCONNECT) is None and tray.action(view.KEY_CONNECT) is not None
    state.namespace = "b"
    tray.render(view.compute_view(state, None, CLUSTERS))
    assert tray.rebuilds == 3, "closed, it rebuilds at once"


def test_clicks_emit_the_entry_action_and_the_mark_follows_the_helper_not_the_click(qtbot):
    tray = TrayIcon()
    tray.render(view.compute_view(pb.State(), None, CLUSTERS))
    with qtbot.waitSignal(tray.actionTriggered) as clicked:
        tray.action(view.KEY_CLUSTER_PREFIX + "staging").trigger()
    assert clicked.args == [view.CONNECT, "staging"]
    assert not tray.action(view.KEY_CLUSTER_PREFIX + "staging").isChecked()
    with qtbot.waitSignal(tray.actionTriggered) as clicked:
        tray.tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
    assert clicked.args == [view.STATUS_WINDOW, ""]


# --- the presenter: menu and icon follow the helper, clicks reach the controller ---


def test_clicking_connect_connects_and_the_menu_follows(qtbot, app, helper):
    app.tray.action(view.KEY_CONNECT).trigger()
    assert app.tray.view.icon == "connecting"
    qtbot.waitUntil(lambda: connected(app), timeout=WAIT)
    assert [r.context for r in helper.requests] == ["lab"]
    assert app.tray.view.icon == "connected"
    assert app.tray.tray.toolTip().startswith("Tether: Connected to lab")
    assert app.tray.action(view.KEY_CLUSTER_PREFIX + "lab").isChecked()
    assert app.tray.action(f"{view.KEY_STATUS_PREFIX}manager").text() == "Manager version: 0.0.0-fake"
    app.tray.action(view.KEY_DISCONNECT).trigger()
    qtbot.waitUntil(lambda: app.controller.state.phase == pb.State.DISCONNECTED, timeout=WAIT)
    assert app.tray.view.icon == "disconnected"
    assert app.notifier.messages() == ["Connected to lab", "Disconnected from lab"]


def test_a_conflict_opens_the_conflict_window_and_shows_the_conflicts_entry(qtbot, app, helper):
    helper.session.conflict_with([VPN_CONFLICT])
    app.trigger(view.CONNECT, "lab")
    qtbot.waitUntil(lambda: any(w[0] == "conflicts" for w in app.windows.opened), timeout=WAIT)
    assert app.windows.opened == [("conflicts", "lab", ("10.96.0.0/12",))]
    qtbot.waitUntil(lambda: app.tray.action(view.KEY_CONFLICTS) is not None, timeout=WAIT)
    assert app.tray.view.icon == "conflict"
    failure = app.notifier.shown[-1]
    assert failure.title == "Could not connect to lab" and failure.level is Level.ERROR
    assert "overlaps" in failure.message
    assert len(app.notifier.shown) == 1, "one failure, one notification"
    app.tray.action(view.KEY_CONFLICTS).trigger()
    assert app.windows.opened[-1] == ("conflicts", "", ("10.96.0.0/12",))


def test_menu_entries_open_the_windows_and_retry(qtbot, app):
    for key in (view.KEY_STATUS_WINDOW, view.KEY_SETTINGS):
        app.tray.action(key).trigger()
    app.tray.action(view.KEY_ADD_CLUSTER).trigger()
    assert app.windows.opened == [("status",), ("settings",), ("add-cluster",)]
    with qtbot.waitSignal(app.quitRequested):
        app.tray.action(view.KEY_QUIT).trigger()


def test_the_menu_rereads_the_clusters_when_it_opens(qtbot, app, work):
    (work / "kubeconfig").write_text((work / "kubeconfig").read_text().replace("name: staging", "name: prod"))
    app.tray.menu.aboutToShow.emit()
    qtbot.waitUntil(lambda: app.tray.action(view.KEY_CLUSTER_PREFIX + "prod") is not None, timeout=WAIT)
    assert app.tray.action(view.KEY_CLUSTER_PREFIX + "staging") is None


def test_unreachable_helper_is_announced_once_and_its_return_too(qtbot, app, helper):
    helper.stop()
    qtbot.waitUntil(lambda: app.controller.unreachable is not None, timeout=WAIT)
    qtbot.wait(300)  # several retries happen meanwhile (backoff 0.05..0.2 s)
    unreachable = [n for n in app.notifier.shown if n.title == "Tether helper unreachable"]
    assert len(unreachable) == 1 and unreachable[0].level is Level.ERROR
    assert app.tray.view.icon == "error"
    assert app.tray.action(view.KEY_RETRY) is not None
    helper.start()
    qtbot.waitUntil(lambda: app.controller.unreachable is None, timeout=WAIT)
    assert app.notifier.messages()[-1] == "The Tether helper is reachable again"
    assert app.tray.view.icon == "disconnected"


# --- which transitions notify (pure) ---


def state(phase, cluster="lab", last_error=""):
    return pb.State(phase=phase, cluster=cluster, last_error=last_error)


def test_the_first_state_is_the_baseline_not_news():
    assert notify.on_state(Seen(), state(pb.State.CONNECTED)) is None


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (pb.State.DISCONNECTED, state(pb.State.CONNECTED), Notification("Tether", "Connected to lab")),
        (pb.State.CONNECTING, state(pb.State.CONNECTED), Notification("Tether", "Connected to lab")),
        (pb.State.CONNECTED, state(pb.State.DISCONNECTED, ""), Notification("Tether", "Disconnected from lab")),
        (
            pb.State.CONNECTED,
            state(pb.State.RECONNECTING),
            Notification("Tether", "Lost the connection to lab; reconnecting", Level.WARNING),
        ),
        (pb.State.RECONNECTING, state(pb.State.CONNECTED), Notification("Tether", "Reconnected to lab")),
        (
            pb.State.CONNECTED,
            state(pb.State.ERROR, last_error="routes vanished"),
            Notification("Tether", "Error on lab: routes vanished", Level.ERROR),
        ),
        (pb.State.CONNECTING, state(pb.State.ERROR, last_error="x"), None),  # connectFailed tells that one
        (pb.State.CONNECTING, state(pb.State.DISCONNECTED, last_error="x"), None),
        (pb.State.CONNECTED, state(pb.State.CONNECTED), None),  # a repeated state is no news
        (pb.State.DISCONNECTED, state(pb.State.CONNECTING), None),
    ],
)
def test_transitions_that_notify(before, after, expected):
    assert notify.on_state(Seen(phase=before, cluster="lab"), after) == expected


def test_unreachable_notifies_once_until_reachable_again():
    error = HelperNotRunningError("nothing answers on /run/tether/helper.sock", "Restart it")
    first = notify.on_unreachable(Seen(), error)
    assert first == Notification(
        "Tether helper unreachable", "nothing answers on /run/tether/helper.sock. Restart it", Level.ERROR
    )
    now = notify.seen(None, error, Seen())
    assert notify.on_unreachable(now, error) is None
    assert notify.on_reachable(now) == Notification("Tether", "The Tether helper is reachable again")
    assert notify.on_reachable(Seen()) is None


def test_tray_notifier_shows_the_message_on_the_tray_icon(qapp, monkeypatch):
    tray = QSystemTrayIcon()
    shown = []
    monkeypatch.setattr(tray, "showMessage", lambda *args: shown.append(args))
    notify.TrayNotifier(tray).notify(Notification("Tether", "Connected to lab"))
    assert shown == [("Tether", "Connected to lab", QSystemTrayIcon.MessageIcon.Information, 6000)]
