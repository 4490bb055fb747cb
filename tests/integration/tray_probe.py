"""Run the real tray app with a read-only probe, so an end-to-end test can find its widgets by object name.

The test drives the tray through the X server (xdotool: real pointer and key events to the real tray in
trayer); what it cannot learn from X is *where* a menu entry or a radio button is, or what the tooltip
says. The tray and its dialogs give their parts Qt object names for that (``tether-connect``,
``autoRemapChoice``, ``applyButton``...), and this probe reports them from inside the process:

    python tests/integration/tray_probe.py PROBE_SOCKET -- [tether-tray options...]

runs ``tether.gui.app.main`` unchanged (on a QApplication the probe made first: ``main`` uses an existing
one), plus a thread that answers each connection on the unix socket PROBE_SOCKET with one JSON snapshot
(see ``snapshot()``): the tray icons (visible, tooltip) and every visible top-level window (class, object
name, title, X window id, global geometry, the actions of a menu, the named widgets of a window). The
snapshot is taken on the GUI thread; the probe never changes the app.

``TrayProbe(path)`` is the test's side: ``snapshot()``, ``wait(predicate)``, and finders over a snapshot.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ANSWER_TIMEOUT = 10.0
POLL_MS = 50  # how often the GUI thread looks for a question


# --- inside the tray process -------------------------------------------------------------------------


def _rect(widget: Any, rect: Any = None) -> list[int]:
    """A widget's rectangle (or ``rect`` in its coordinates) on the screen: [x, y, width, height]."""
    rect = widget.rect() if rect is None else rect
    top_left = widget.mapToGlobal(rect.topLeft())
    return [top_left.x(), top_left.y(), rect.width(), rect.height()]


def _text(widget: Any) -> str | None:
    for getter in ("text", "currentText", "toPlainText"):
        method = getattr(widget, getter, None)
        if callable(method):
            with contextlib.suppress(TypeError):
                return str(method())
    return None


def _widget(widget: Any) -> dict[str, Any]:
    checkable = getattr(widget, "isCheckable", None)
    return {
        "name": widget.objectName(),
        "class": type(widget).__name__,
        "text": _text(widget),
        "checked": bool(widget.isChecked()) if callable(checkable) and checkable() else None,
        "enabled": widget.isEnabled(),
        "visible": widget.isVisible(),
        "focus": widget.hasFocus(),
        "geometry": _rect(widget),
    }


# Only calls that return a value, never None: PySide6 6.12.0 on Python 3.11 drops a reference to None each
# time a Qt call returns a null object (QAction.menu() of a plain entry, parent() of a window...), and the
# process aborts once None's count reaches zero; a probe must not bring that on.
def _action(menu: Any, action: Any) -> dict[str, Any]:
    return {
        "name": action.objectName(),
        "text": action.text(),
        "enabled": action.isEnabled(),
        "visible": action.isVisible(),
        "separator": action.isSeparator(),
        "checked": action.isChecked() if action.isCheckable() else None,
        "geometry": _rect(menu, menu.actionGeometry(action)),
    }


def snapshot() -> dict[str, Any]:
    """What the tray shows right now (call on the GUI thread)."""
    from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon, QWidget

    app = QApplication.instance()
    trays = [obj for obj in gc.get_objects() if isinstance(obj, QSystemTrayIcon)]
    windows = []
    for window in QApplication.topLevelWidgets():
        if not window.isVisible():
            continue
        entry: dict[str, Any] = {
            "class": type(window).__name__,
            "name": window.objectName(),
            "title": window.windowTitle(),
            "win_id": int(window.winId()),
            "geometry": _rect(window),
            "active": window.isActiveWindow(),
        }
        if isinstance(window, QMenu):
            entry["actions"] = [_action(window, a) for a in window.actions()]
        named = [w for w in window.findChildren(QWidget) if w.objectName() and not w.objectName().startswith("qt_")]
        entry["widgets"] = [_widget(w) for w in named]
        windows.append(entry)
    return {
        "pid": os.getpid(),
        "app": type(app).__name__ if app is not None else None,
        "trays": [{"visible": t.isVisible(), "tooltip": t.toolTip(), "geometry": _tray_geometry(t)} for t in trays],
        "windows": windows,
    }


def _tray_geometry(tray: Any) -> list[int]:
    rect = tray.geometry()
    return [rect.x(), rect.y(), rect.width(), rect.height()]


class _Answerer:
    """Answers the probe thread's questions on the GUI thread: a timer there takes them from a plain queue.

    No Qt call crosses threads (no signal emitted, no functor posted from the probe thread): in PySide6
    6.12.0 on Python 3.11 each ``emit()`` or posted functor drops a reference to True or None, and the
    process aborts once a count reaches zero.
    """

    def __init__(self, app: Any) -> None:
        from PySide6.QtCore import QTimer

        self._questions: queue.Queue[queue.Queue[dict[str, Any]]] = queue.Queue()
        self._timer = QTimer(app)
        self._timer.timeout.connect(self._answer)
        self._timer.start(POLL_MS)

    def _answer(self) -> None:
        while True:
            try:
                reply = self._questions.get_nowait()
            except queue.Empty:
                return
            try:
                reply.put(snapshot())
            except Exception as exc:  # the test should see why, not wait
                reply.put({"error": f"{type(exc).__name__}: {exc}"})

    def ask(self) -> dict[str, Any]:
        """From the probe thread: a snapshot taken on the GUI thread."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        self._questions.put(reply)
        try:
            return reply.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            return {"error": f"the GUI thread did not answer in {ANSWER_TIMEOUT:.0f}s (is it blocked?)"}


def _serve(server: socket.socket, answerer: _Answerer) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            answer = answerer.ask()
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")


def start_probe(path: Path) -> None:
    """Create the QApplication (the tray's ``main`` uses an existing one) with the answering timer, then
    listen on ``path``. All Qt work happens here, on the main thread."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["tether-tray"])
    answerer = _Answerer(app)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    threading.Thread(target=_serve, args=(server, answerer), name="tray-probe", daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: tray_probe.py PROBE_SOCKET -- [tether-tray options...]", file=sys.stderr)
        return 2
    path, rest = Path(argv[0]), argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    start_probe(path)
    from tether.gui.app import main as tray_main

    return tray_main(rest)


# --- the test's side -----------------------------------------------------------------------------------


class ProbeError(AssertionError):
    pass


class TrayProbe:
    def __init__(self, path: Path) -> None:
        self.path = path

    def snapshot(self) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(ANSWER_TIMEOUT + 5)
            sock.connect(str(self.path))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        if "error" in answer:
            raise ProbeError(f"the tray probe says: {answer['error']}")
        return answer

    def wait(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 20.0) -> Any:
        """Snapshots until ``predicate(snapshot)`` is truthy (returns that); bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "(none yet)"
        while True:
            try:
                last = self.snapshot()
            except (OSError, ProbeError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                value = predicate(last)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise ProbeError(f"{what}: not within {timeout:.0f}s; last snapshot: {json.dumps(last, indent=1)}")
            time.sleep(0.2)


def menus(snap: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in snap["windows"] if "actions" in w]


def action(snap: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The visible action with this object name in any open menu."""
    for menu in menus(snap):
        for item in menu["actions"]:
            if item["name"] == name and item["visible"]:
                return item
    return None


def window(snap: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The visible top-level window with this object name (or, failing that, this class name)."""
    for entry in snap["windows"]:
        if entry["name"] == name:
            return entry
    return next((entry for entry in snap["windows"] if entry["class"] == name), None)


def widget(window_entry: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((w for w in window_entry["widgets"] if w["name"] == name), None)


def centre(geometry: list[int]) -> tuple[int, int]:
    x, y, width, height = geometry
    return x + width // 2, y + height // 2


def tooltip(snap: dict[str, Any]) -> str | None:
    visible = [t for t in snap["trays"] if t["visible"]]
    return visible[0]["tooltip"] if visible else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
