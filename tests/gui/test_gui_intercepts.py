"""The tray's intercepts end to end against the real helper API (HelperServer with a FakeSession): the menu's
Intercepts section, the Intercept dialog, Leave, other users' intercepts, errors and notifications."""

from __future__ import annotations

import time

import pytest
from test_gui_support import (
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    make_controller,
)

from tests.doubles.fake_autostart import FakeAutostart
from tests.doubles.fake_notifier import FakeNotifier
from tests.doubles.fake_vault import MemoryVault
from tether.gui import intercept_menu as im
from tether.gui.presenter import TrayPresenter
from tether.gui.settings import SettingsStore
from tether.gui.tray import TrayIcon
from tether.gui.windows import Windows
from tether.helper.api import helper_pb2 as pb

WAIT = 5000
WEB = "tether-workload:default/web"


@pytest.fixture
def wired(qtbot, helper, work):
    controller = make_controller(helper.socket_path, work)
    windows = Windows(
        controller, settings_store=SettingsStore(work / "tray.json"), autostart=FakeAutostart(), vault=MemoryVault()
    )
    tray = TrayIcon()
    presenter = TrayPresenter(controller, tray, FakeNotifier(), windows)
    controller.start()
    qtbot.waitUntil(lambda: controller.state is not None and bool(controller.clusters.clusters), timeout=WAIT)
    controller.connect_cluster("lab")
    qtbot.waitUntil(lambda: controller.workloads.loaded and controller.activity is None, timeout=WAIT)
    qtbot.waitUntil(lambda: presenter.notifier.messages() == ["Connected to lab"], timeout=WAIT)
    presenter.notifier.shown.clear()
    yield presenter
    windows.close_all()
    controller.shutdown()


def label(presenter: TrayPresenter, key: str) -> str:
    """The label of the rendered action (what the user sees), "" when there is none."""
    action = presenter.tray.action(key)
    return action.text() if action is not None else ""


def click(presenter: TrayPresenter, key: str) -> None:
    action = presenter.tray.action(key)
    assert action is not None and action.isEnabled(), f"{key} is not a clickable menu entry"
    action.trigger()


def intercept_from_dialog(qtbot, presenter: TrayPresenter, **fields: str) -> None:
    click(presenter, WEB)
    dialog = presenter.windows.intercept
    assert dialog is not None and dialog.isVisible() and dialog.windowTitle() == "Intercept web"
    for name, value in fields.items():
        getattr(dialog, name).setText(value)
    assert dialog.interceptButton.isEnabled(), dialog.error.text()
    dialog.interceptButton.click()


def test_the_section_lists_the_namespaces_workloads_only_while_connected(qtbot, wired):
    assert label(wired, im.KEY_SECTION) == "Intercepts"
    assert label(wired, WEB) == "Intercept web (Deployment)…"
    assert label(wired, "tether-workload:default/api") == "Intercept api (Deployment)…"
    wired.controller.disconnect()
    qtbot.waitUntil(lambda: wired.tray.action(im.KEY_SECTION) is None, timeout=WAIT)
    assert not wired.controller.workloads.loaded


def test_intercept_from_the_dialog_then_leave(qtbot, wired, helper, work):
    env_file = work / "web.env"
    intercept_from_dialog(qtbot, wired, localPort="9000", servicePort="http", envFile=str(env_file))
    qtbot.waitUntil(lambda: label(wired, WEB).startswith("Leave web"), timeout=WAIT)
    (request,) = helper.session.intercepts_made
    assert (request.name, request.namespace, request.local_port, request.port) == ("web", "default", 9000, "http")
    assert label(wired, WEB) == "Leave web (port 8080 → localhost:9000, active)"
    assert label(wired, im.KEY_SECTION) == "Intercepts (1 active)"
    assert env_file.read_text() == "APP_MODE=fake\nGREETING='hello world'\n"
    qtbot.waitUntil(lambda: "Intercepting default/web port 8080" in wired.notifier.messages(), timeout=WAIT)
    assert any(f"to {env_file}" in e for e in wired.controller.events)

    status = wired.windows.open_status()
    qtbot.addWidget(status)
    lines = [status.intercepts.item(i).text() for i in range(status.intercepts.count())]
    assert lines == [
        "default/web port 8080 (service web port 80) -> localhost:9000: active; volumes at /tmp/tether-fake-mount"
    ]

    click(wired, WEB)
    qtbot.waitUntil(lambda: label(wired, WEB) == "Intercept web (Deployment)…", timeout=WAIT)
    qtbot.waitUntil(lambda: "The intercept of default/web port 8080 ended" in wired.notifier.messages(), timeout=WAIT)
    qtbot.waitUntil(lambda: status.intercepts.item(0).text() == "(none)", timeout=WAIT)


def test_the_dialog_names_a_bad_port_and_will_not_intercept(qtbot, wired, helper):
    click(wired, WEB)
    dialog = wired.windows.intercept
    dialog.localPort.setText("70000")
    assert not dialog.interceptButton.isEnabled()
    assert dialog.error.text() == 'port "70000": the local port "70000" is not a TCP port number (1-65535)'
    dialog.localPort.setText("9000")
    assert dialog.interceptButton.isEnabled() and dialog.error.isHidden()
    dialog.reject()
    assert helper.session.intercepts_made == []


def test_a_refused_intercept_is_a_notification_a_menu_line_and_a_status_line(qtbot, wired, helper):
    helper.on_loop(lambda: helper.session.closed_ports.add(9001))
    intercept_from_dialog(qtbot, wired, localPort="9001")
    qtbot.waitUntil(lambda: bool(wired.notifier.shown), timeout=WAIT)
    (shown,) = wired.notifier.shown
    assert shown.title == "Could not intercept default/web"
    assert "nothing listens on localhost:9001" in shown.message
    assert "nothing listens on localhost:9001" in label(wired, im.KEY_INTERCEPT_ERROR)
    assert label(wired, WEB) == "Intercept web (Deployment)…", "nothing half-applied"
    status = wired.windows.open_status()
    qtbot.addWidget(status)
    assert "nothing listens on localhost:9001" in status.intercepts.item(0).text()


def test_another_users_intercept_shows_who_and_since_and_refuses_ours(qtbot, wired, helper):
    since = int(time.time() * 1000)
    other = pb.InterceptState(
        namespace="default", workload="web", kind="Deployment", service="web", service_port=80, port=8080,
        client="alice@laptop", since_unix_ms=since, phase="active",
    )  # fmt: skip
    helper.on_loop(lambda: helper.session.foreign.append(other))
    click(wired, im.KEY_REFRESH)
    qtbot.waitUntil(lambda: "someone else" in label(wired, WEB), timeout=WAIT)
    assert "alice@laptop since" in label(wired, "tether-intercept-other:default/web/8080")
    assert not wired.tray.action(WEB).isEnabled()
    # The CLI's refusal names who: the tray says the same when its call is refused.
    wired.controller.intercept(pb.InterceptRequest(name="web"))
    qtbot.waitUntil(lambda: bool(wired.notifier.shown), timeout=WAIT)
    assert "intercepted by alice@laptop since" in wired.notifier.shown[-1].message


def test_an_intercept_that_fails_later_is_announced_and_shown(qtbot, wired, helper):
    intercept_from_dialog(qtbot, wired, localPort="9000")
    qtbot.waitUntil(lambda: label(wired, WEB).startswith("Leave web"), timeout=WAIT)
    helper.on_loop(lambda: helper.session.fail_intercept("default", "web", "the agent of web-7f9 went away"))
    qtbot.waitUntil(lambda: "failed" in label(wired, WEB), timeout=WAIT)
    assert wired.notifier.shown[-1].message == (
        "The intercept of default/web port 8080 failed: the agent of web-7f9 went away"
    )
    assert label(wired, "tether-workload:default/web-error").strip() == "the agent of web-7f9 went away"
    assert label(wired, im.KEY_INTERCEPT_ERROR) == "Intercept error: the agent of web-7f9 went away"
