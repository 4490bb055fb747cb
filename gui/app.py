"""``tether-tray`` (also ``python -m tether.gui``): the tray app's entry point.

No system tray yet (the panel starts after us at login, or there is none): the app says so on stderr and
waits up to ``--tray-wait`` seconds, checking every second; Qt shows the icon by itself once a tray
appears. If none appears by then, it exits 1, since a tray app without a tray cannot even be quit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from tether.helper.api.paths import SOCKET_ENV

DEFAULT_TRAY_WAIT = 120.0
GC_INTERVAL_MS = 5000
NO_TRAY = (
    "tether-tray: no system tray is available{when}. Tether lives in the tray: use a desktop whose panel "
    "has one (on GNOME, the AppIndicator/KStatusNotifierItem extension)."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tether-tray", description="Tether in the system tray: connect this workstation to a cluster."
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"the helper's socket (default: ${SOCKET_ENV} or /run/tether/helper.sock)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--show-status", action="store_true", help="open the status window at start")
    parser.add_argument(
        "--tray-wait",
        type=float,
        default=DEFAULT_TRAY_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for a system tray to appear before giving up (default {DEFAULT_TRAY_WAIT:g})",
    )
    parser.add_argument("--instance-name", default=None, help=argparse.SUPPRESS)  # tests run several apps
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )
    return parser.parse_args(argv)


class TrayWaiter(QObject):
    """Checks every ``interval_ms`` whether a system tray exists; ``gaveUp`` after ``timeout`` seconds."""

    available = Signal()
    gaveUp = Signal()

    def __init__(
        self,
        timeout: float,
        is_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
        interval_ms: int = 1000,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._is_available = is_available
        self._left = max(0, round(timeout * 1000 / interval_ms))
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._check)

    def start(self) -> bool:
        """True when a tray is there already; else starts waiting."""
        if self._is_available():
            return True
        if self._left == 0:
            QTimer.singleShot(0, self.gaveUp.emit)
        else:
            self._timer.start()
        return False

    def _check(self) -> None:
        if self._is_available():
            self._timer.stop()
            self.available.emit()
            return
        self._left -= 1
        if self._left <= 0:
            self._timer.stop()
            self.gaveUp.emit()


@contextlib.contextmanager
def _quit_on_signals(app: QApplication) -> Iterator[None]:
    """SIGINT/SIGTERM quit cleanly; a timer gives Python's handlers a chance to run inside Qt's loop."""
    previous = {sig: signal.signal(sig, lambda *_: app.quit()) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = QTimer()
    timer.timeout.connect(lambda: None)
    timer.start(250)
    try:
        yield
    finally:
        timer.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _collect_garbage_on_the_gui_thread(interval_ms: int = GC_INTERVAL_MS) -> Iterator[None]:
    """Python's cycle collector runs in whichever thread happens to allocate when it triggers, and a Qt
    object collected from a worker thread can crash the app. So the GUI thread collects, on a timer."""
    was_enabled = gc.isenabled()
    gc.disable()
    timer = QTimer()
    timer.timeout.connect(gc.collect)
    timer.start(interval_ms)
    try:
        yield
    finally:
        timer.stop()
        gc.collect()
        if was_enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from tether.gui.autostart import autostart_for
    from tether.gui.controller import TrayController
    from tether.gui.notify import TrayNotifier
    from tether.gui.presenter import TrayPresenter
    from tether.gui.single_instance import SHOW_STATUS, SingleInstance
    from tether.gui.tray import TrayIcon
    from tether.gui.windows import Windows

    app = QApplication.instance() or QApplication(["tether-tray"])
    assert isinstance(app, QApplication)
    app.setApplicationName("tether-tray")
    app.setApplicationDisplayName("Tether")
    app.setQuitOnLastWindowClosed(False)  # closing the status window leaves the tray running

    instance = SingleInstance(args.instance_name)
    try:
        first = instance.claim(SHOW_STATUS)
    except OSError as exc:
        print(f"tether-tray: cannot make sure only one tray runs: {exc}", file=sys.stderr)
        return 1
    if not first:
        print("tether-tray is already running; asked it to open its status window", file=sys.stderr)
        return 0

    controller = TrayController(args.socket, kubeconfig=args.kubeconfig)
    tray = TrayIcon()
    windows = Windows(controller, autostart=autostart_for())
    presenter = TrayPresenter(controller, tray, TrayNotifier(tray.tray), windows)
    presenter.quitRequested.connect(app.quit)
    instance.messageReceived.connect(lambda message: windows.open_status() if message == SHOW_STATUS else None)

    exit_code = 0

    def give_up() -> None:
        nonlocal exit_code
        print(NO_TRAY.format(when=f" after waiting {args.tray_wait:g} s"), file=sys.stderr)
        exit_code = 1
        app.quit()

    waiter = TrayWaiter(args.tray_wait)
    waiter.available.connect(lambda: print("tether-tray: a system tray appeared", file=sys.stderr))
    waiter.gaveUp.connect(give_up)
    if not waiter.start():
        print(
            NO_TRAY.format(when=" yet") + f" Waiting up to {args.tray_wait:g} s for one (--tray-wait).",
            file=sys.stderr,
        )
    tray.show()  # Qt embeds the icon by itself when a tray appears later
    controller.start()
    if args.show_status:
        windows.open_status()

    try:
        with _quit_on_signals(app), _collect_garbage_on_the_gui_thread():
            code = app.exec()
    finally:
        windows.close_all()
        tray.hide()
        controller.shutdown()
        instance.close()
    return exit_code or code


if __name__ == "__main__":
    sys.exit(main())
