"""Drive the real ``tether-tray`` on a ``desktop.Desktop`` the way a user does, for the end-to-end test and
``make screenshots``.

``TrayApp.start()`` launches the tray (through ``tray_probe.py``, so its widgets can be found by object
name) with ``--socket`` and ``--kubeconfig``, optionally inside a network namespace (``ip netns exec NS``:
the lab's API server is reachable only from the workstation namespace, and the conflict dialog's workload
picker asks it from the tray process), and waits until its icon is embedded in trayer.

Every action goes through the X server: ``open_menu()`` right-clicks the icon in trayer, ``choose(key)``
clicks a menu entry where the probe says it is drawn, ``click_widget()`` clicks a widget of a window
(a dialog's radio button, its Apply button). The probe only tells where things are and what they say.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tray_probe as probe
from desktop import Desktop, DesktopError, Process, Window

MENU = "tether-menu"  # the tray menu's object name (tether.gui.tray)
PROBE = Path(__file__).with_name("tray_probe.py")
START_TIMEOUT = 30.0
UI_TIMEOUT = 15.0


class TrayApp:
    def __init__(
        self,
        desktop: Desktop,
        socket: Path,
        kubeconfig: Path,
        netns: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.desktop = desktop
        self.socket = socket
        self.kubeconfig = kubeconfig
        self.netns = netns
        self.extra_args = list(extra_args)
        self.probe = probe.TrayProbe(desktop.workdir / "tray-probe.sock")
        self.process: Process | None = None
        self.icon: Window | None = None

    # --- the process ---

    def start(self) -> Window:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        argv = [
            *prefix, sys.executable, str(PROBE), str(self.probe.path), "--",
            "--socket", str(self.socket), "--kubeconfig", str(self.kubeconfig), "--tray-wait", "10",
            "--log-level", "info", *self.extra_args,
        ]  # fmt: skip
        self.process = self.desktop.launch("tether-tray", argv)
        try:
            self.icon = self.desktop.wait_tray_icon(START_TIMEOUT)
            self.probe.wait(lambda snap: probe.tooltip(snap), "the tray icon's tooltip", START_TIMEOUT)
        except (DesktopError, probe.ProbeError) as exc:
            raise DesktopError(f"{exc}\n{self.tail()}") from None
        return self.icon

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def tail(self) -> str:
        return self.process.tail() if self.process is not None else "(the tray was not started)"

    def wait_exit(self, timeout: float = UI_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    # --- what it shows ---

    def snapshot(self) -> dict[str, Any]:
        return self.probe.snapshot()

    def tooltip(self) -> str | None:
        return probe.tooltip(self.snapshot())

    def wait(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = UI_TIMEOUT) -> Any:
        try:
            return self.probe.wait(predicate, what, timeout)
        except probe.ProbeError as exc:
            raise probe.ProbeError(f"{exc}\n{self.tail()}") from None

    def wait_window(self, name: str, timeout: float = UI_TIMEOUT) -> dict[str, Any]:
        """The visible top-level window with this object name (e.g. ``conflictDialog``, ``statusWindow``)."""
        return self.wait(lambda snap: probe.window(snap, name), f"the window {name}", timeout)

    def x_window(self, entry: dict[str, Any]) -> Window:
        """The X window behind a probe window entry (same id: Qt's winId is the X window)."""
        window = self.desktop.window(entry["win_id"])
        if window is None or not window.mapped:
            raise DesktopError(f"the X window {hex(entry['win_id'])} of {entry['name']} is not mapped")
        return window

    # --- what a user does ---

    def open_menu(self, at: tuple[int, int] | None = None) -> tuple[Window, dict[str, Any]]:
        """Right-click the icon in trayer (at its centre, or ``at`` inside it: the menu opens at the pointer);
        the menu's X window (a new override-redirect popup) and its probe entry."""
        assert self.icon is not None
        before = self.desktop.popups()
        self.desktop.click(self.icon, button=3, at=at)
        popup = self.desktop.wait_popup(before, UI_TIMEOUT)
        menu = self.wait(lambda snap: probe.window(snap, MENU), "the tray menu")
        if menu["win_id"] != popup.id:
            raise DesktopError(f"the new popup {popup.hex} is not the tray menu ({hex(menu['win_id'])})")
        return popup, menu

    def choose(self, key: str, quits: bool = False) -> None:
        """Open the menu and click the entry whose object name is ``key``; wait until the menu has closed
        (``quits``: until the app has exited, and check it exited with 0)."""
        _, menu = self.open_menu()
        entry = next((a for a in menu["actions"] if a["name"] == key and a["visible"]), None)
        names = [a["name"] for a in menu["actions"]]
        if entry is None:
            raise DesktopError(f"the tray menu has no entry {key}; it has {names}")
        if not entry["enabled"]:
            raise DesktopError(f"the menu entry {key} ({entry['text']!r}) is disabled")
        self.desktop.click_at(*probe.centre(entry["geometry"]))
        if quits:
            code = self.wait_exit()
            if code != 0:
                raise DesktopError(f"the tray exited with {code} after {key}\n{self.tail()}")
            return
        self.wait(lambda snap: probe.window(snap, MENU) is None, "the tray menu to close")

    def choose_in(self, submenu: str, key: str, timeout: float = UI_TIMEOUT) -> None:
        """Click ``key`` in the submenu ``submenu`` (see ``open_submenu``); wait until the menu has closed."""
        entry = self.open_submenu(submenu, key, timeout)
        self.desktop.click_at(*probe.centre(entry["geometry"]))
        self.wait(lambda snap: probe.window(snap, MENU) is None, "the tray menu to close")

    def open_submenu(
        self, submenu: str, key: str, timeout: float = UI_TIMEOUT, at: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Open the menu (right-click at ``at``), click the submenu entry ``submenu`` (Qt opens it), and return
        the probe entry of ``key`` in it, enabled. The entry may come with an answer the tray is still waiting
        for (a workload list): until ``timeout``, close the menus and look again."""
        deadline = time.monotonic() + timeout
        while True:
            _, menu = self.open_menu(at)
            opener = next((a for a in menu["actions"] if a["name"] == submenu and a["visible"]), None)
            inner = None
            if opener is not None:
                self.desktop.click_at(*probe.centre(opener["geometry"]))
                inner = self.wait(lambda snap: probe.window(snap, submenu), f"the submenu {submenu}")
            entry = next((a for a in (inner or {}).get("actions", []) if a["name"] == key and a["visible"]), None)
            if entry is not None and entry["enabled"]:
                return entry
            self.desktop.key("Escape", "Escape")
            self.wait(lambda snap: probe.window(snap, MENU) is None, "the tray menu to close")
            if time.monotonic() > deadline:
                shown = [(a["name"], a["text"], a["enabled"]) for a in (inner or menu)["actions"]]
                raise DesktopError(f"no enabled entry {key} in the submenu {submenu} within {timeout:.0f}s: {shown}")
            time.sleep(0.5)

    def type_into(self, window_name: str, widget_name: str, text: str) -> None:
        """Click a text field of a window and type ``text`` into it (real key events)."""
        self.desktop.focus(self.x_window(self.wait_window(window_name)))  # no window manager gives it focus
        self.click_widget(window_name, widget_name)
        self.desktop.run("xdotool", "type", "--delay", "30", text)
        self.wait(lambda snap: (w := self.widget_in(snap, window_name, widget_name)) and w["text"] == text, widget_name)

    @staticmethod
    def widget_in(snap: dict[str, Any], window_name: str, widget_name: str) -> dict[str, Any] | None:
        window = probe.window(snap, window_name)
        return probe.widget(window, widget_name) if window is not None else None

    def click_widget(self, window_name: str, widget_name: str, at_left: bool = False) -> dict[str, Any]:
        """Click a named widget of a window: its centre, or (``at_left``) its left end, where a radio
        button's or check box's indicator is (a stretched button reacts only on its indicator and label)."""
        window = self.wait_window(window_name)
        widget = probe.widget(window, widget_name)
        if widget is None or not widget["visible"]:
            raise DesktopError(f"{window_name} has no visible widget {widget_name}: {window['widgets']}")
        x, y, width, height = widget["geometry"]
        self.desktop.click_at(x + min(8, width // 2) if at_left else x + width // 2, y + height // 2)
        return widget

    def widget(self, window_name: str, widget_name: str) -> dict[str, Any] | None:
        window = probe.window(self.snapshot(), window_name)
        return probe.widget(window, widget_name) if window is not None else None
