"""TrayController against a fake helper server on a temporary socket that speaks the real helper API."""

from __future__ import annotations

import errno
import socket
import threading

import pytest
from test_gui_support import (
    VPN_CONFLICT,
    FakeHelper,
    Options,
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    make_controller,
    write_kubeconfig,
)

from tests.doubles.fake_session import FakeSession
from tether.gui import view
from tether.gui.contexts import Source
from tether.gui.retry import Backoff
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperNotInstalledError, HelperPermissionError
from tether.helper.user.resolutions import Resolution

WAIT = 5000


@pytest.fixture
def controller(qtbot, helper, work):
    tray = make_controller(helper.socket_path, work)
    tray.start()
    qtbot.waitUntil(lambda: tray.state is not None and bool(tray.clusters.clusters), timeout=WAIT)
    yield tray
    tray.shutdown()


def current_view(tray) -> view.TrayView:
    return view.compute_view(tray.state, tray.unreachable, tray.clusters, tray.activity)


def phase(tray):
    return tray.state.phase if tray.state is not None else None


def settled(tray, wanted) -> bool:
    """The helper reports ``wanted`` and the tray's own call (if any) has finished."""
    return phase(tray) == wanted and tray.activity is None


def test_connect_streams_progress_and_the_connected_state_drives_icon_and_menu(qtbot, controller, helper):
    steps: list[str] = []
    controller.progress.connect(steps.append)
    assert current_view(controller).icon == "disconnected"
    assert current_view(controller).find(view.KEY_CONNECT).label == "Connect to lab"

    controller.connect_cluster("lab")
    assert current_view(controller).icon == "connecting", "the icon says connecting at once, before the helper"
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)

    assert steps == [*FakeSession().steps, "connected"]
    request = helper.requests[-1]
    assert (request.context, request.client_name) == ("lab", "tether-tray")
    assert "http://127.0.0.1:6443" in request.kubeconfig and "staging" not in request.kubeconfig
    shown = current_view(controller)
    assert shown.icon == "connected"
    assert shown.tooltip.startswith("Tether: Connected to lab")
    labels = [e.label for e in shown.entries()]
    assert "Cluster: lab" in labels and "Namespace: default" in labels
    assert "Manager version: 0.0.0-fake" in labels and "DNS: fake" in labels
    assert "Routed subnets: 10.96.0.0/12, 10.244.0.0/16" in labels
    assert shown.find(view.KEY_DISCONNECT).label == "Disconnect from lab"
    assert shown.find(view.KEY_CONNECT) is None
    assert shown.find(view.KEY_CLUSTER_PREFIX + "lab").checked
    assert any("connected to lab" in e for e in controller.events)


def test_disconnect(qtbot, controller, helper):
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)
    controller.disconnect()
    assert controller.activity == view.Activity("disconnect", "lab")
    qtbot.waitUntil(lambda: settled(controller, pb.State.DISCONNECTED), timeout=WAIT)
    assert len(helper.session.disconnects) == 1
    shown = current_view(controller)
    assert shown.icon == "disconnected" and shown.find(view.KEY_CONNECT).enabled


def test_a_connect_failing_on_conflicts_reports_them_and_a_chosen_resolution_is_applied_and_remembered(
    qtbot, controller, helper
):
    helper.session.conflict_with([VPN_CONFLICT])
    failures: list[str] = []
    controller.connectFailed.connect(failures.append)
    with qtbot.waitSignal(controller.conflictsFound, timeout=WAIT) as found:
        controller.connect_cluster("lab")
    state = found.args[0]
    assert [c.subnet for c in state.conflicts] == ["10.96.0.0/12"]
    assert failures and "overlaps the route to 10.0.0.0/8" in failures[0]
    qtbot.waitUntil(lambda: controller.state is not None and bool(controller.state.conflicts), timeout=WAIT)
    shown = current_view(controller)
    assert shown.icon == "conflict"
    assert shown.find(view.KEY_CONFLICTS).label == "VPN conflicts (1)…"
    assert controller.resolutions.get("lab") is None, "nothing is remembered for a failed connect"

    chosen = Resolution(allow_conflicting_subnets=("10.0.0.0/8",))
    controller.connect_cluster("lab", chosen)
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)
    assert list(helper.requests[-1].allow_conflicting_subnets) == ["10.0.0.0/8"]
    assert controller.resolutions.get("lab") == chosen
    assert controller.resolution == chosen
    assert current_view(controller).find(view.KEY_CONFLICTS) is None

    controller.disconnect()
    qtbot.waitUntil(lambda: settled(controller, pb.State.DISCONNECTED), timeout=WAIT)
    controller.connect_cluster("lab")  # no choice given: the remembered one applies
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)
    assert list(helper.requests[-1].allow_conflicting_subnets) == ["10.0.0.0/8"]
    assert any("using the resolution remembered for lab" in e for e in controller.events)


def test_a_conflict_reported_in_phase_error_is_shown_as_a_conflict(qtbot, controller, helper):
    helper.session.conflict_with([VPN_CONFLICT], phase=pb.State.ERROR)
    with qtbot.waitSignal(controller.conflictsFound, timeout=WAIT):
        controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: settled(controller, pb.State.ERROR), timeout=WAIT)
    shown = current_view(controller)
    assert shown.icon == "conflict"
    assert shown.find(view.KEY_CONFLICTS) is not None
    assert shown.find(view.KEY_DISCONNECT) is not None, "ERROR holds something: offer the disconnect"


def test_a_failed_connect_without_conflicts_does_not_open_the_conflict_dialog(qtbot, controller, helper):
    helper.session.fail("the traffic-manager did not answer")
    found: list[object] = []
    controller.conflictsFound.connect(found.append)
    with qtbot.waitSignal(controller.connectFailed, timeout=WAIT) as failed:
        controller.connect_cluster("lab")
    assert "the traffic-manager did not answer" in failed.args[0]
    qtbot.waitUntil(
        lambda: settled(controller, pb.State.DISCONNECTED) and bool(controller.state.last_error), timeout=WAIT
    )
    assert found == []
    assert current_view(controller).icon == "error"


def test_cancelling_a_running_connect_is_not_reported_as_a_failure(qtbot, work):
    helper = FakeHelper(work / "run" / "helper.sock", FakeSession(step_delay=0.3)).start()
    tray = make_controller(helper.socket_path, work)
    try:
        tray.start()
        qtbot.waitUntil(lambda: tray.state is not None and bool(tray.clusters.clusters), timeout=WAIT)
        failures: list[str] = []
        tray.connectFailed.connect(failures.append)
        tray.connect_cluster("lab")
        qtbot.waitUntil(lambda: phase(tray) == pb.State.CONNECTING, timeout=WAIT)
        assert current_view(tray).find(view.KEY_CANCEL).enabled
        tray.disconnect()
        qtbot.waitUntil(lambda: tray.activity is None and phase(tray) == pb.State.DISCONNECTED, timeout=WAIT)
        assert failures == []
        assert any("was cancelled" in e for e in tray.events)
    finally:
        tray.shutdown()
        helper.stop()


def test_connecting_to_another_cluster_disconnects_the_first(qtbot, controller, helper):
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)
    controller.connect_cluster("staging")
    qtbot.waitUntil(
        lambda: settled(controller, pb.State.CONNECTED) and controller.state.cluster == "staging", timeout=WAIT
    )
    assert len(helper.session.disconnects) == 1
    assert [r.context for r in helper.requests] == ["lab", "staging"]


def test_settings_go_into_the_request(qtbot, helper, work):
    options = Options(also_proxy=("192.168.50.0/24",), never_proxy=("10.96.0.10/32",), virtual_subnet="250.0.0.0/16")
    tray = make_controller(helper.socket_path, work, settings=lambda: options)
    try:
        tray.start()
        qtbot.waitUntil(lambda: bool(tray.clusters.clusters), timeout=WAIT)
        tray.connect_cluster("lab")
        qtbot.waitUntil(lambda: settled(tray, pb.State.CONNECTED), timeout=WAIT)
        request = helper.requests[-1]
        assert list(request.also_proxy) == ["192.168.50.0/24"]
        assert list(request.never_proxy) == ["10.96.0.10/32"]
        assert request.virtual_subnet == "250.0.0.0/16"
    finally:
        tray.shutdown()


def test_a_bad_setting_fails_the_connect_with_the_value_named(qtbot, helper, work):
    tray = make_controller(helper.socket_path, work, settings=lambda: Options(never_proxy=("10.1.2.3/8",)))
    try:
        tray.start()
        qtbot.waitUntil(lambda: bool(tray.clusters.clusters), timeout=WAIT)
        with qtbot.waitSignal(tray.connectFailed, timeout=WAIT) as failed:
            tray.connect_cluster("lab")
        assert "10.1.2.3/8" in failed.args[0]
        assert helper.requests == [], "nothing reached the helper"
    finally:
        tray.shutdown()


def test_an_added_cluster_connects_with_its_in_memory_kubeconfig(qtbot, helper, work):
    class Added:
        name = "edge"

    text = KUBE_EDGE = (
        "apiVersion: v1\nkind: Config\ncurrent-context: edge\n"
        "clusters: [{name: edge, cluster: {server: 'https://edge.example:6443'}}]\n"
        "users: [{name: edge, user: {token: secret-token}}]\n"
        "contexts: [{name: edge, context: {cluster: edge, user: edge}}]\n"
    )
    asked: list[str] = []
    tray = make_controller(
        helper.socket_path, work, added=lambda: [Added()], kubeconfig_text_for=lambda n: asked.append(n) or text
    )
    try:
        tray.start()
        qtbot.waitUntil(lambda: tray.clusters.find("edge") is not None, timeout=WAIT)
        assert tray.clusters.find("edge").source is Source.ADDED
        tray.connect_cluster("edge")
        qtbot.waitUntil(lambda: settled(tray, pb.State.CONNECTED), timeout=WAIT)
        assert asked == ["edge"]
        assert helper.requests[-1].context == "edge"
        assert "edge.example" in helper.requests[-1].kubeconfig and KUBE_EDGE
    finally:
        tray.shutdown()


def test_a_broken_kubeconfig_is_a_menu_line_not_a_crash(qtbot, helper, work):
    broken = write_kubeconfig(work, "clusters: [ {name: lab\n")
    tray = make_controller(helper.socket_path, work, kubeconfig=broken)
    try:
        tray.start()
        qtbot.waitUntil(lambda: bool(tray.clusters.problems), timeout=WAIT)
        problem = tray.clusters.problems[0]
        assert str(broken) in problem and "not valid YAML" in problem
        shown = current_view(tray)
        lines = " ".join(e.label for e in view._find(shown.menu, view.KEY_CLUSTERS).items if hasattr(e, "label"))
        assert str(broken)[:20] in lines
        assert not shown.find(view.KEY_CONNECT).enabled, "nothing to connect to"
        with qtbot.waitSignal(tray.connectFailed, timeout=WAIT) as failed:
            tray.connect_cluster("lab")
        assert str(broken) in failed.args[0]
    finally:
        tray.shutdown()


def test_unreachable_helper_gives_the_reason_and_fix_then_recovers_when_it_starts(qtbot, work):
    socket_path = work / "run" / "helper.sock"
    tray = make_controller(socket_path, work)
    helper = FakeHelper(socket_path)
    try:
        with qtbot.waitSignal(tray.helperUnreachable, timeout=WAIT) as unreachable:
            tray.start()
        error = unreachable.args[0]
        assert isinstance(error, HelperNotInstalledError)
        shown = current_view(tray)
        assert shown.icon == "error"
        assert shown.find(view.KEY_HEADER).label == "Tether helper not installed or not started"
        reason = " ".join(e.label for e in shown.entries() if e.key.startswith(view.KEY_UNREACHABLE_REASON))
        assert str(socket_path.parent) in reason and "not installed or not running" in reason
        fix = " ".join(e.label for e in shown.entries() if e.key.startswith(view.KEY_UNREACHABLE_FIX))
        fix = fix.replace("\u00a0", " ")  # commands are kept on one line with no-break spaces
        assert "sudo tether helper start" in fix
        assert not shown.find(view.KEY_CONNECT).enabled

        with qtbot.waitSignal(tray.helperReachable, timeout=WAIT):
            helper.start()
        qtbot.waitUntil(lambda: tray.state is not None and tray.unreachable is None, timeout=WAIT)
        assert current_view(tray).icon == "disconnected"
        tray.connect_cluster("lab")
        qtbot.waitUntil(lambda: settled(tray, pb.State.CONNECTED), timeout=WAIT)

        with qtbot.waitSignal(tray.helperUnreachable, timeout=WAIT):  # the helper goes away while connected
            helper.stop()
        assert current_view(tray).icon == "error"
        helper.start()
        qtbot.waitUntil(lambda: tray.unreachable is None and phase(tray) == pb.State.DISCONNECTED, timeout=WAIT)
    finally:
        tray.shutdown()
        helper.stop()


def test_permission_denied_says_to_join_the_group(qtbot, helper, work, monkeypatch):
    # Tests may run as root, whom file modes do not stop: make the kernel's EACCES answer happen here.
    connect = socket.socket.connect
    auth_socket = str(helper.socket_path.with_name("helper-auth.sock"))

    def refusing(self, address):
        if address == auth_socket:
            raise PermissionError(errno.EACCES, "Permission denied")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", refusing)
    tray = make_controller(helper.socket_path, work)
    try:
        with qtbot.waitSignal(tray.helperUnreachable, timeout=WAIT) as unreachable:
            tray.start()
        assert isinstance(unreachable.args[0], HelperPermissionError)
        shown = current_view(tray)
        assert shown.find(view.KEY_HEADER).label == "Not allowed to use the Tether helper"
        fix = " ".join(e.label for e in shown.entries() if e.key.startswith(view.KEY_UNREACHABLE_FIX))
        fix = fix.replace("\u00a0", " ")  # commands are kept on one line with no-break spaces
        assert "usermod -aG" in fix
        monkeypatch.setattr(socket.socket, "connect", connect)
        tray.retry_now()
        qtbot.waitUntil(lambda: tray.unreachable is None and tray.state is not None, timeout=WAIT)
    finally:
        tray.shutdown()


def test_helper_calls_never_run_on_the_gui_thread(qtbot, helper, work):
    threads: list[bool] = []

    def settings():
        threads.append(threading.current_thread() is threading.main_thread())
        return Options()

    tray = make_controller(helper.socket_path, work, settings=settings)
    try:
        tray.start()
        qtbot.waitUntil(lambda: bool(tray.clusters.clusters), timeout=WAIT)
        tray.connect_cluster("lab")
        qtbot.waitUntil(lambda: settled(tray, pb.State.CONNECTED), timeout=WAIT)
        assert threads == [False]
    finally:
        tray.shutdown()


def test_shutdown_ends_the_watch_thread_and_leaves_the_connection(qtbot, controller, helper):
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: settled(controller, pb.State.CONNECTED), timeout=WAIT)
    watcher = controller._watcher
    controller.shutdown()
    assert watcher is not None and not watcher.is_alive()
    assert helper.session.state().phase == pb.State.CONNECTED, "quitting the tray does not disconnect"
    assert helper.session.disconnects == []


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    backoff = Backoff(initial=0.5, cap=4.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5
