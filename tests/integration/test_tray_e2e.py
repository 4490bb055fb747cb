"""The tray end to end, as root, in the lab: the real ``tether-tray`` in a real system tray (Xvfb + trayer,
see ``desktop.py``), talking to a real ``tether helper start`` in the workstation namespace.

The tray runs in the workstation namespace too (``ip netns exec``): the helper's socket and the X server's
socket are files, reachable from any namespace, but the lab's API server is reachable only from there, and
the conflict dialog's workload picker asks it from the tray process. Every step is a real X event (a click
on the icon in trayer, on a menu entry, on a radio button); ``tray_probe.py`` only says where those are.

What is checked is data: the helper's State through the client library, a curl through the connection,
the tray's tooltip; waits are bounded and poll, nothing sleeps a fixed time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tray_probe as probe
from desktop import desktop
from helper_fixture import running_helper
from test_intercept import HELLO, curl_web, local_server
from test_vpn import VIRTUAL_SUBNET, VPN, cluster_subnets, get, set_vpn
from tray_driver import TrayApp
from web_restore import web_restored

from tether.gui import intercept_menu
from tether.gui.view import tooltip as expected_tooltip
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperClient

pytestmark = pytest.mark.lab

CONNECT_TIMEOUT = 60.0
DIALOG_TIMEOUT = 60.0  # the connect runs until the conflict check fails, then the dialog opens


def wait_for_state(socket: Path, predicate: Callable[[pb.State], bool], what: str, timeout: float) -> pb.State:
    deadline = time.monotonic() + timeout
    with HelperClient(socket) as client:
        while True:
            state = client.status()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f}s; the helper's state:\n{state}")
            time.sleep(0.2)


def phase_is(phase: pb.State.Phase.ValueType) -> Callable[[pb.State], bool]:
    return lambda state: state.phase == phase


@pytest.fixture
def helper(lab, tmp_path):
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "tray") as running:
        running.start()
        yield running
        assert running.alive(), f"the helper died during the test\n{running.tail()}"
        assert running.quit() == 0, running.tail()
        assert running.leftovers() == [], running.tail()


@pytest.fixture
def screen(tmp_path):
    with desktop(tmp_path / "desktop") as running:
        yield running


@pytest.mark.timeout(240)
def test_the_tray_connects_and_resolves_a_vpn_conflict(lab, lab_control, lab_run, helper, screen, tmp_path):
    tray = TrayApp(screen, helper.socket, lab.kubeconfig, netns=lab.ws_netns)
    try:
        # The icon is in the tray: embedded in trayer, drawn (not one flat colour), with a tooltip.
        icon = tray.start()
        assert icon.width > 0 and icon.height > 0, icon
        assert screen.colours(screen.screenshot(tmp_path / "icon.png", window=icon)) > 1
        disconnected = wait_for_state(helper.socket, phase_is(pb.State.DISCONNECTED), "the helper", 10)
        tray.wait(lambda snap: probe.tooltip(snap) == expected_tooltip(disconnected, None, None), "tooltip")

        # A right click opens the menu: a new override-redirect window, with Connect enabled.
        popup, menu = tray.open_menu()
        assert popup.mapped and popup.override_redirect and popup.width > 0 and popup.height > 0, popup
        entries = {action["name"]: action for action in menu["actions"]}
        assert entries["tether-connect"]["enabled"] and entries["tether-connect"]["text"].startswith("Connect")
        screen.key("Escape")
        tray.wait(lambda snap: probe.window(snap, "tether-menu") is None, "the menu to close on Escape")

        # Connect from the menu: the helper connects, the cluster answers by name, the tooltip says so.
        tray.choose("tether-connect")
        state = wait_for_state(helper.socket, phase_is(pb.State.CONNECTED), "connected", CONNECT_TIMEOUT)
        assert [s.cidr for s in state.routed_subnets] == cluster_subnets(), state
        assert list(state.remapped) == [] and list(state.conflicts) == [], state
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        tray.wait(lambda snap: probe.tooltip(snap) == expected_tooltip(state, None, None), "the connected tooltip")

        tray.choose("tether-disconnect")
        wait_for_state(helper.socket, phase_is(pb.State.DISCONNECTED), "disconnected", CONNECT_TIMEOUT)

        # A VPN claims the cluster's ranges: Connect fails on the conflict and the dialog opens.
        set_vpn(lab_control, [VPN])
        tray.choose("tether-connect")
        dialog = tray.wait_window("conflictDialog", DIALOG_TIMEOUT)
        refused = wait_for_state(helper.socket, lambda s: bool(s.conflicts), "the conflicts", 10)
        assert refused.phase == pb.State.DISCONNECTED, refused
        assert [c.subnet for c in refused.conflicts] == cluster_subnets(), refused
        assert [w.id for w in screen.windows_named("VPN conflict")] == [dialog["win_id"]]
        screen.screenshot(tmp_path / "conflict-dialog.png", window=tray.x_window(dialog))

        # Choose the automatic remap and apply: connected, with the conflicting subnets remapped.
        tray.click_widget("conflictDialog", "autoRemapChoice", at_left=True)
        tray.wait(lambda snap: checked(snap, "autoRemapChoice"), "Remap automatically to be selected")
        apply = tray.wait(lambda snap: enabled(snap, "applyButton"), "Apply to be enabled")
        assert apply["visible"], apply
        tray.click_widget("conflictDialog", "applyButton")
        state = wait_for_state(helper.socket, phase_is(pb.State.CONNECTED), "connected (remapped)", CONNECT_TIMEOUT)
        assert [(r.subnet, r.workload, r.reason) for r in state.remapped] == [
            (subnet, "", "auto-resolve") for subnet in cluster_subnets()
        ], state
        assert state.virtual_subnet == str(VIRTUAL_SUBNET) and list(state.conflicts) == [], state
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        tray.wait(lambda snap: probe.window(snap, "conflictDialog") is None, "the dialog to close")

        tray.choose("tether-disconnect")
        wait_for_state(helper.socket, phase_is(pb.State.DISCONNECTED), "disconnected", CONNECT_TIMEOUT)
        tray.choose("tether-quit", quits=True)
    except BaseException:
        report_failure(tray, screen, tmp_path)
        raise
    finally:
        tray.stop()
        lab_control.up()  # without the VPN, as the other tests expect it
    assert not tray.alive()


def report_failure(tray, screen, tmp_path) -> None:
    """What a failed tray test leaves to look at: the tray's log tail and a screenshot."""
    print(tray.tail(), file=sys.stderr)
    screen.screenshot(tmp_path / "failure.png")
    print(f"the screen at the failure: {tmp_path / 'failure.png'}", file=sys.stderr)


INTERCEPT_TIMEOUT = 240.0  # the first intercept re-creates the web pods with the agent
WEB = intercept_menu.KEY_WORKLOAD_PREFIX + "default/web"


@pytest.fixture
def web_back(lab, helper):
    """The test uninstalls the agent itself while connected; this is for a test that failed before."""
    with web_restored(lab, helper):
        yield


def our_web(state: pb.State) -> pb.InterceptState | None:
    return next((i for i in state.intercepts if (i.namespace, i.workload) == ("default", "web")), None)


@pytest.mark.timeout(600)
@pytest.mark.rewrites_workloads
def test_the_tray_intercepts_web_to_a_local_server_and_leaves(lab, lab_run, helper, web_back, screen, tmp_path):
    tray = TrayApp(screen, helper.socket, lab.kubeconfig, netns=lab.ws_netns)
    env_file = tmp_path / "web.env"
    try:
        tray.start()
        tray.choose("tether-connect")
        wait_for_state(helper.socket, phase_is(pb.State.CONNECTED), "connected", CONNECT_TIMEOUT)
        with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
            # The Intercepts submenu lists the namespace's workloads; web offers the dialog.
            tray.choose_in(intercept_menu.KEY_SECTION, WEB)
            tray.wait_window("interceptDialog")
            tray.type_into("interceptDialog", "interceptLocalPort", "8080")
            tray.type_into("interceptDialog", "interceptEnvFile", str(env_file))
            tray.click_widget("interceptDialog", "interceptButton")
            state = wait_for_state(
                helper.socket,
                lambda s: (i := our_web(s)) is not None and i.phase == "active",
                "the intercept of web",
                INTERCEPT_TIMEOUT,
            )
            assert our_web(state).local_port == 8080, state
            # Another pod curls the web Service and gets the workstation's server.
            assert curl_web(lab_run) == HELLO + "\n"
            tray.wait(lambda snap: env_file.exists() and "KUBERNETES_SERVICE_HOST=" in env_file.read_text(), "env")
            # The menu says so, and Leave gives web back to its pods.
            leave = tray.open_submenu(intercept_menu.KEY_SECTION, WEB)
            assert leave["text"] == "Leave web (port 8080 → localhost:8080, active)", leave
            screen.click_at(*probe.centre(leave["geometry"]))
            wait_for_state(helper.socket, lambda s: our_web(s) is None, "the intercept to end", CONNECT_TIMEOUT)
        assert "hello from web" in curl_web(lab_run)
        done = helper.cli("uninstall", "--agent", "web", timeout=180)
        assert done.returncode == 0, done.stderr
        tray.choose("tether-disconnect")
        wait_for_state(helper.socket, phase_is(pb.State.DISCONNECTED), "disconnected", CONNECT_TIMEOUT)
        tray.choose("tether-quit", quits=True)
    except BaseException:
        report_failure(tray, screen, tmp_path)
        raise
    finally:
        tray.stop()
    assert not tray.alive()


def checked(snap: dict, name: str) -> bool:
    window = probe.window(snap, "conflictDialog")
    widget = probe.widget(window, name) if window else None
    return bool(widget and widget["checked"])


def enabled(snap: dict, name: str) -> dict | None:
    window = probe.window(snap, "conflictDialog")
    widget = probe.widget(window, name) if window else None
    return widget if widget and widget["enabled"] else None
