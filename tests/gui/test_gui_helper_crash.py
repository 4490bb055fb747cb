"""The tray notices a helper that died during a session and offers to reconnect once it is back (issue 16).

The helper is a real process (the real API server with a FakeSession, tests/doubles/fake_helper_process.py)
killed with SIGKILL, so the tray sees what it sees when the OOM killer takes the real one: the watch
stream breaks, then nothing answers on the socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QAction
from test_gui_support import (
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    make_controller,
)

from tests.doubles.fake_notifier import FakeNotifier
from tether.gui import view
from tether.gui.notify import Level
from tether.gui.presenter import TrayPresenter
from tether.gui.tray import TrayIcon
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperNotRunningError

WAIT = 10000
ROOT = Path(__file__).resolve().parents[2]


class HelperProcess:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tests.doubles.fake_helper_process", str(self.socket_path)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def helper_process(work):
    process = HelperProcess(work / "run" / "helper.sock")
    process.start()
    yield process
    process.stop()


class NoWindows:
    def open_status(self): ...

    def open_settings(self): ...

    def open_conflicts(self, state=None, context=""): ...

    def open_add_cluster(self): ...


@pytest.fixture
def app(qtbot, helper_process, work):
    """The tray as the app wires it (real icon and menu), with a recording notifier."""
    controller = make_controller(helper_process.socket_path, work)
    tray = TrayIcon()
    presenter = TrayPresenter(controller, tray, FakeNotifier(), NoWindows())
    controller.start()
    qtbot.waitUntil(lambda: controller.state is not None and bool(controller.clusters.clusters), timeout=WAIT)
    yield presenter
    controller.shutdown()
    tray.hide()


def action(presenter, key: str) -> QAction | None:
    return presenter.tray.menu.findChild(QAction, key)


def connected(tray) -> bool:
    return tray.state.phase == pb.State.CONNECTED and tray.activity is None


def test_a_killed_helper_is_noticed_and_reconnect_is_offered_once_it_is_back(qtbot, app, helper_process):
    tray, notifier = app.controller, app.notifier
    tray.connect_cluster("lab")
    qtbot.waitUntil(lambda: connected(tray), timeout=WAIT)
    assert action(app, view.KEY_RECONNECT) is None

    with qtbot.waitSignal(tray.sessionLost, timeout=WAIT) as lost:
        helper_process.kill()
    assert lost.args == ["lab"] and tray.lost_session == "lab"
    assert tray.state.phase == pb.State.DISCONNECTED and "killed or crashed" in tray.state.last_error
    qtbot.waitUntil(lambda: isinstance(tray.unreachable, HelperNotRunningError), timeout=WAIT)
    said = notifier.shown[-2:]
    assert said[0].level == Level.ERROR and said[0].message.startswith(
        "Disconnected from lab: the Tether helper stopped"
    )
    assert said[1].title == "Tether helper unreachable" and "not running" in said[1].message
    assert action(app, view.KEY_LOST).text() == "Session with lab lost: the helper stopped"
    reconnect = action(app, view.KEY_RECONNECT)
    assert reconnect.text() == "Reconnect to lab" and not reconnect.isEnabled()  # nobody answers yet
    assert action(app, view.KEY_CONNECT) is None

    with qtbot.waitSignal(tray.helperReachable, timeout=WAIT):
        helper_process.start()
    assert notifier.shown[-1].message == "The Tether helper is back: choose Reconnect to lab in the menu"
    reconnect = action(app, view.KEY_RECONNECT)
    assert reconnect.isEnabled()
    reconnect.trigger()
    qtbot.waitUntil(lambda: connected(tray), timeout=WAIT)
    assert tray.state.cluster == "lab" and tray.lost_session == ""
    assert action(app, view.KEY_RECONNECT) is None and action(app, view.KEY_LOST) is None


def test_a_helper_that_stops_cleanly_is_not_a_lost_session(qtbot, app, helper_process):
    tray = app.controller
    tray.connect_cluster("lab")
    qtbot.waitUntil(lambda: connected(tray), timeout=WAIT)
    tray.disconnect()
    qtbot.waitUntil(lambda: tray.state.phase == pb.State.DISCONNECTED and tray.activity is None, timeout=WAIT)
    helper_process.kill()
    qtbot.waitUntil(lambda: tray.unreachable is not None, timeout=WAIT)
    assert tray.lost_session == "" and action(app, view.KEY_RECONNECT) is None
