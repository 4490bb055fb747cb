"""The Windows service host (helper.root.winservice) over a recording SCM, and the daemon's stop hook it uses."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path, PureWindowsPath

import pytest

from tests.doubles.fake_session import FakeSession
from tether.helper.root import daemon
from tether.helper.root import winservice as ws


class RecordingScm:
    """Records every status report; hands back the control handler so a test can play the SCM."""

    def __init__(self) -> None:
        self.statuses: list[ws.Status] = []
        self.handler = None

    def dispatch(self, name, main) -> None:
        main()

    def register(self, name, handler):
        self.handler = handler
        return "handle"

    def set_status(self, handle, status) -> None:
        assert handle == "handle"
        self.statuses.append(status)


def states(scm: RecordingScm) -> list[int]:
    return [status.state for status in scm.statuses]


def test_a_service_reports_pending_running_then_stopped_and_stops_the_helper_on_stop():
    scm = RecordingScm()
    stopped = threading.Event()

    def helper(started) -> int:
        started(stopped.set)
        assert scm.handler(ws.SERVICE_CONTROL_INTERROGATE) == ws.NO_ERROR
        assert scm.handler(ws.SERVICE_CONTROL_STOP) == ws.NO_ERROR
        assert stopped.is_set()
        return 0

    ws.Service(scm, helper).main()
    assert states(scm) == [ws.SERVICE_START_PENDING, ws.SERVICE_RUNNING, ws.SERVICE_STOP_PENDING, ws.SERVICE_STOPPED]
    running = scm.statuses[1]
    assert running.accepted == ws.SERVICE_ACCEPT_STOP | ws.SERVICE_ACCEPT_SHUTDOWN
    assert [s.checkpoint for s in scm.statuses] == [1, 0, 1, 0]  # pending states count, settled ones are 0
    assert scm.statuses[0].wait_hint_ms == ws.PENDING_WAIT_MS and running.wait_hint_ms == 0
    assert (scm.statuses[-1].win32_exit, scm.statuses[-1].specific_exit) == (ws.NO_ERROR, 0)


def test_shutdown_stops_too_and_other_controls_are_not_implemented():
    scm = RecordingScm()
    calls = []

    def helper(started) -> int:
        assert scm.handler(ws.SERVICE_CONTROL_STOP) == ws.ERROR_CALL_NOT_IMPLEMENTED  # not running yet
        started(lambda: calls.append("stop"))
        assert scm.handler(0x3) == ws.ERROR_CALL_NOT_IMPLEMENTED  # SERVICE_CONTROL_CONTINUE
        assert scm.handler(ws.SERVICE_CONTROL_SHUTDOWN) == ws.NO_ERROR
        return 0

    ws.Service(scm, helper).main()
    assert calls == ["stop"]


def test_a_failing_helper_stops_the_service_with_a_service_specific_error():
    scm = RecordingScm()
    ws.Service(scm, lambda started: 4).main()
    assert states(scm) == [ws.SERVICE_START_PENDING, ws.SERVICE_STOPPED]
    assert (scm.statuses[-1].win32_exit, scm.statuses[-1].specific_exit) == (ws.ERROR_SERVICE_SPECIFIC_ERROR, 4)


def test_a_helper_that_raises_still_reports_stopped():
    scm = RecordingScm()

    def helper(started) -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ws.Service(scm, helper).main()
    assert scm.statuses[-1].state == ws.SERVICE_STOPPED and scm.statuses[-1].specific_exit == 1


def test_the_helper_runs_with_the_installers_group_and_state_under_programdata():
    base = Path(PureWindowsPath(r"C:\ProgramData\Tether"))
    args = daemon.build_parser().parse_args(ws.helper_argv(base))
    assert args.group == "tether" and args.log_format == "json"
    assert args.state_dir == base / "state"
    assert ws.log_file(base) == base / "logs" / "helper.log"


def test_outside_windows_the_scm_is_refused_clearly():
    with pytest.raises(OSError, match="only on Windows"):
        ws.Win32Scm()


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon's preflight needs root")
def test_the_daemon_hands_out_a_stop_that_works_from_another_thread(monkeypatch):
    """What the service's Stop calls: the daemon, really serving, stops from the SCM's handler thread."""
    directory = Path(tempfile.mkdtemp(prefix="tether-svc-"))
    monkeypatch.setattr(daemon, "create_session", lambda config: FakeSession())
    args = daemon.build_parser().parse_args(
        ["--socket", str(directory / "run" / "helper.sock"), "--group", "root", "--no-cleanup", "--log-format", "text"]
    )
    served = []

    def stop_ready(stop) -> None:
        served.append((directory / "run" / "helper.sock").exists())
        threading.Thread(target=stop).start()

    assert daemon.run(args, stop_ready=stop_ready) == daemon.EXIT_OK
    assert served == [True]
    assert not (directory / "run").exists()  # a clean stop: sockets and the directory it made are gone
    directory.rmdir()
