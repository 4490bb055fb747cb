"""The app shell: single instance, waiting for a tray, the entry point, and the state icons."""

from __future__ import annotations

import os
import socket
import uuid
import xml.etree.ElementTree as ET

import pytest
from PySide6.QtNetwork import QLocalServer
from test_gui_support import (
    FakeHelper,
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
)

from tether.gui import app as tray_app
from tether.gui.icons import IconSet, icon_file, render
from tether.gui.single_instance import SHOW_STATUS, SingleInstance, default_name
from tether.gui.view import ICON_KEYS

WAIT = 5000


@pytest.fixture
def instance_name():
    name = f"tether-tray-test-{uuid.uuid4().hex[:12]}"
    yield name
    QLocalServer.removeServer(name)


# --- single instance ---


def test_a_second_instance_hands_over_to_the_first(qtbot, instance_name):
    first = SingleInstance(instance_name)
    assert first.claim()
    second = SingleInstance(instance_name)
    with qtbot.waitSignal(first.messageReceived, timeout=WAIT) as received:
        assert not second.claim(SHOW_STATUS)
    assert received.args == [SHOW_STATUS]
    assert second.server is None
    first.close()
    third = SingleInstance(instance_name)
    assert third.claim(), "once the first is gone, the next one becomes the first"
    third.close()


def test_a_stale_socket_left_by_a_crash_is_taken_over(qtbot, work):
    path = work / "tray.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed tray leaves
    assert path.exists()
    instance = SingleInstance(str(path))
    assert instance.claim()
    assert not SingleInstance(str(path)).claim()
    instance.close()


def test_the_instance_name_is_per_user(monkeypatch, work):
    uid = str(os.getuid())
    assert default_name({}) == f"tether-tray-{uid}"
    assert default_name({"XDG_RUNTIME_DIR": str(work)}) == str(work / f"tether-tray-{uid}.sock")


# --- waiting for a tray ---


def test_waiting_for_a_tray_that_appears(qtbot):
    answers = iter([False, False, True])
    waiter = tray_app.TrayWaiter(10, is_available=lambda: next(answers), interval_ms=10)
    gave_up = []
    waiter.gaveUp.connect(lambda: gave_up.append(True))
    with qtbot.waitSignal(waiter.available, timeout=WAIT):
        assert not waiter.start()
    assert gave_up == []


def test_giving_up_when_no_tray_appears(qtbot):
    waiter = tray_app.TrayWaiter(0.05, is_available=lambda: False, interval_ms=10)
    with qtbot.waitSignal(waiter.gaveUp, timeout=WAIT):
        assert not waiter.start()
    assert tray_app.TrayWaiter(0, is_available=lambda: True).start()


# --- the entry point ---


def test_main_without_a_tray_says_so_and_exits_1(qtbot, capsys, instance_name, work):
    helper = FakeHelper(work / "run" / "helper.sock").start()
    try:
        code = tray_app.main(
            ["--socket", str(helper.socket_path), "--tray-wait", "0", "--instance-name", instance_name]
        )
    finally:
        helper.stop()
    assert code == 1
    err = capsys.readouterr().err
    assert "no system tray is available yet" in err and "after waiting 0 s" in err


def test_main_hands_over_to_a_running_tray_and_exits_0(qtbot, capsys, instance_name):
    first = SingleInstance(instance_name)
    assert first.claim()
    try:
        with qtbot.waitSignal(first.messageReceived, timeout=WAIT) as received:
            assert tray_app.main(["--instance-name", instance_name]) == 0
        assert received.args == [SHOW_STATUS]
        assert "already running" in capsys.readouterr().err
    finally:
        first.close()


def test_options():
    args = tray_app.parse_args(
        ["--socket", "/tmp/h.sock", "--kubeconfig", "/k", "--show-status", "--log-level", "debug"]
    )
    assert (str(args.socket), args.kubeconfig, args.show_status, args.log_level) == ("/tmp/h.sock", "/k", True, "debug")
    assert tray_app.parse_args([]).socket is None, "the client library picks the default socket"


def test_python_dash_m_entry_point_exists():
    import importlib.util

    assert importlib.util.find_spec("tether.gui.__main__") is not None


# --- icons ---


def test_every_state_has_an_svg_icon_that_renders(qapp):
    icons = IconSet()
    for key in ICON_KEYS:
        document = ET.fromstring(icon_file(key).read_bytes())
        assert document.get("viewBox") == "0 0 64 64"
        assert document.find("{http://www.w3.org/2000/svg}title").text.startswith("Tether: ")
        for size in (16, 64):
            image = render(key, size).toImage()
            assert (image.width(), image.height()) == (size, size)
            opaque = sum(image.pixelColor(x, y).alpha() > 0 for x in range(size) for y in range(size))
            assert opaque > size * size // 10, f"{key} at {size}px is nearly empty"
        assert not icons.icon(key).isNull()
    with pytest.raises(KeyError):
        icon_file("sleeping")


def test_state_icons_differ(qapp):
    images = {key: render(key, 32).toImage() for key in ICON_KEYS}
    assert len({bytes(image.constBits()) for image in images.values()}) == len(ICON_KEYS)
