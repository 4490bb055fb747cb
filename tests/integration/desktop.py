"""A real X desktop for end-to-end tests of the tray: Xvfb, a private D-Bus session bus and `trayer` as the tray host.

``desktop()`` (a context manager) starts, in order:

* ``Xvfb`` on a free display (``-displayfd``: the server picks the number and writes it to a pipe, so two
  runs never race for one); no TCP, but the unix socket in /tmp/.X11-unix, which any network namespace
  reaches (the abstract one does not: abstract sockets belong to a network namespace);
* a private ``dbus-daemon --session`` on a socket *path* (for the same reason). Qt's tray uses a
  StatusNotifierItem when an ``org.kde.StatusNotifierWatcher`` is on the session bus and XEmbed when none
  is; on this bus there is none, so the icon goes to trayer, whatever session the caller runs in, and no
  ``dbus-launch`` autolaunches a bus nobody would stop;
* ``trayer`` (a GTK2 XEmbed system tray) at the top right, and waits until its panel is mapped.

``Desktop.env`` is the environment for programs on that desktop: DISPLAY, the bus, ``QT_QPA_PLATFORM=xcb``
(a broken xcb plugin must fail, not fall back), and XDG_RUNTIME_DIR, XDG_CONFIG_HOME, XDG_CACHE_HOME,
XDG_DATA_HOME and XDG_STATE_HOME in the desktop's own temporary directory, so an app run there neither
reads the user's settings (e.g. a remembered VPN-conflict resolution) nor leaves files in root's home.

Helpers drive it the way a user would, through the X server: ``tray_icons()`` (the windows embedded in
trayer: they carry ``_XEMBED_INFO``), ``click()`` (xdotool: real pointer events), ``key()`` (XTEST key events
to the focused window), ``popups()`` (mapped override-redirect windows: menus, tooltips), ``windows_named()``
(top-level windows by title), ``screenshot()`` (ImageMagick ``import``) and ``colours()``.
``launch()`` starts a program on the desktop and stops it by PID when the desktop ends.

Everything started is stopped by PID (SIGTERM, then SIGKILL) on the way out, in reverse order, and the
temporary directory is removed (a ``workdir`` given by the caller, e.g. pytest's tmp_path, is left to it, with
the logs and screenshots in it). A missing tool raises ``DesktopError`` naming it and the Debian package:
CI installs them (the Makefile's APT_PACKAGES), so their absence is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# tool -> the Debian package that has it
TOOLS = {
    "Xvfb": "xvfb",
    "trayer": "trayer",
    "xdotool": "xdotool",
    "xwininfo": "x11-utils",
    "xprop": "x11-utils",
    "import": "imagemagick",
    "convert": "imagemagick",
    "dbus-daemon": "dbus-daemon",
}
# Per-desktop directories for the programs it runs (see the module's docstring).
PRIVATE_DIRS = ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
SCREEN = "1280x800x24"
TRAY_HEIGHT = 32
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 20.0
LOG_TAIL = 40

_WINDOW_LINE = re.compile(r"^\s+(0x[0-9a-f]+) (?:\"(.*)\"|\(has no name\)): \((.*?)\)\s+(\d+)x(\d+)")


class DesktopError(AssertionError):
    """The desktop could not be set up or driven; the message says what and how to fix it."""


@dataclass(frozen=True)
class Window:
    id: int
    name: str
    x: int  # absolute, on the root window
    y: int
    width: int
    height: int
    mapped: bool
    override_redirect: bool

    @property
    def hex(self) -> str:
        return hex(self.id)

    @property
    def centre(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x + self.width and self.y <= y < self.y + self.height


def missing_tools() -> list[str]:
    return [f"{tool} (apt package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float, interval: float = 0.1) -> T:
    """Poll ``predicate()`` until it returns something truthy (and return that), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DesktopError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


class Process:
    """A program started on the desktop, with its output in a log file; stopped by its PID."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DesktopError(f"{self.name} (pid {self.pid}) still runs after {timeout:.0f}s\n{self.tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL; the exit code, or None when it had already ended and was reaped."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log for {self.name})"
        return f"--- {self.name} log {self.log} (last {len(text)} lines) ---\n" + "\n".join(text)


class Desktop:
    def __init__(self, workdir: Path, screen: str = SCREEN) -> None:
        self.workdir = workdir
        self.screen = screen
        self.display = ""
        self.env: dict[str, str] = {}
        self._processes: list[Process] = []
        self._xvfb: subprocess.Popen[bytes] | None = None
        self.trayer: Process | None = None

    # --- start and stop ----------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise DesktopError(
                "the desktop tests need " + ", ".join(missing) + "; install them with `make deps` (APT_PACKAGES)"
            )
        self.display = self._start_xvfb()
        home = {name: self.workdir / name.lower() for name in PRIVATE_DIRS}
        for path in home.values():
            path.mkdir(mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WAYLAND_", "DBUS_", "QT_"))}
        env.update({name: str(path) for name, path in home.items()})
        env.update(DISPLAY=self.display, QT_QPA_PLATFORM="xcb", XDG_SESSION_TYPE="x11", NO_AT_BRIDGE="1")
        env["DBUS_SESSION_BUS_ADDRESS"] = self._start_bus(env)
        self.env = env
        self.trayer = self.launch(
            "trayer",
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", str(TRAY_HEIGHT),
             "--transparent", "false", "--SetDockType", "true", "--SetPartialStrut", "false"],
        )  # fmt: skip
        wait_until(self._tray_panel_mapped, f"trayer's panel on {self.display}", START_TIMEOUT)

    def _start_xvfb(self) -> str:
        read_end, write_end = os.pipe()
        try:
            with open(self.workdir / "xvfb.log", "ab") as log:
                self._xvfb = subprocess.Popen(
                    ["Xvfb", "-displayfd", str(write_end), "-screen", "0", self.screen, "-nolisten", "tcp", "-noreset"],
                    pass_fds=[write_end],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        finally:
            os.close(write_end)
        # Xvfb writes the number and the newline separately, and dies (EPIPE) if the pipe is closed between
        # the two: read up to the newline.
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not data.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(read_end, 32) if ready else b""
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_end)
        number = data.decode(errors="replace").strip()
        if not number.isdigit():
            log_text = (self.workdir / "xvfb.log").read_text(errors="replace")
            raise DesktopError(f"Xvfb did not report a display in {START_TIMEOUT:.0f}s:\n{log_text}")
        return f":{number}"

    def _start_bus(self, env: Mapping[str, str]) -> str:
        address = f"unix:path={self.workdir / 'bus'}"
        argv = ["dbus-daemon", "--session", "--nofork", "--nopidfile", "--address", address]
        bus = self.launch("dbus-daemon", argv, env=env)
        wait_until(lambda: (self.workdir / "bus").exists() or not bus.alive(), "the session bus", START_TIMEOUT)
        if not bus.alive():
            raise DesktopError(f"dbus-daemon exited at start\n{bus.tail()}")
        return address

    def stop(self) -> list[str]:
        """Stop everything this desktop started, by PID, newest first; returns what would not stop."""
        problems = []
        for process in reversed(self._processes):
            with contextlib.suppress(ProcessLookupError):
                process.stop()
            if process.alive():
                problems.append(f"{process.name} (pid {process.pid}) did not stop")
        self._processes.clear()
        if self._xvfb is not None:
            if self._xvfb.poll() is None:
                self._xvfb.terminate()
                try:
                    self._xvfb.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._xvfb.kill()
                    self._xvfb.wait(STOP_TIMEOUT)
            self._xvfb = None
        return problems

    def launch(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Process:
        """Start ``argv`` on this desktop (log in the desktop's directory); it is stopped when the desktop ends."""
        log = self.workdir / f"{name.replace('/', '-')}.log"
        process = Process(name, argv, self.env if env is None else env, log)
        self._processes.append(process)
        return process

    # --- X tools ---------------------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL
        )
        if check and out.returncode != 0:
            raise DesktopError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out

    def window(self, wid: int) -> Window | None:
        """The window's geometry and state, or None when it no longer exists."""
        out = self.run("xwininfo", "-id", hex(wid), check=False)
        if out.returncode != 0:
            return None
        fields = dict(line.strip().split(":", 1) for line in out.stdout.splitlines() if ":" in line)
        first = out.stdout.strip().splitlines()[0]
        name = first.split(hex(wid), 1)[1].strip()
        return Window(
            id=wid,
            name=name[1:-1] if name.startswith('"') else "",
            x=int(fields["Absolute upper-left X"]),
            y=int(fields["Absolute upper-left Y"]),
            width=int(fields["Width"]),
            height=int(fields["Height"]),
            mapped=fields["Map State"].strip() == "IsViewable",
            override_redirect=fields["Override Redirect State"].strip() == "yes",
        )

    def _tree(self, root: str = "-root") -> list[tuple[int, str, str]]:
        """(id, name, class) of every window below ``root`` (``-root`` or a window id)."""
        args = ["-root"] if root == "-root" else ["-id", root]
        found = []
        for line in self.run("xwininfo", *args, "-tree").stdout.splitlines():
            match = _WINDOW_LINE.match(line)
            if match:
                found.append((int(match[1], 16), match[2] or "", match[3]))
        return found

    def top_levels(self) -> list[Window]:
        """The root window's children (menus, dialogs, the tray panel...), bottom to top."""
        ids = []
        for line in self.run("xwininfo", "-root", "-children").stdout.splitlines():
            match = _WINDOW_LINE.match(line)
            if match:
                ids.append(int(match[1], 16))
        return [w for w in map(self.window, ids) if w is not None]

    def tray_panel(self) -> Window | None:
        for wid, _name, wm_class in self._tree():
            if wm_class == '"panel" "trayer"':
                return self.window(wid)
        return None

    def xvfb_log(self) -> str:
        try:
            return (self.workdir / "xvfb.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no Xvfb log)"

    def _tray_panel_mapped(self) -> Window | None:
        if self._xvfb is not None and self._xvfb.poll() is not None:
            raise DesktopError(f"Xvfb exited with {self._xvfb.returncode}:\n{self.xvfb_log()}")
        if self.trayer is not None and not self.trayer.alive():
            raise DesktopError(f"trayer exited at start\n{self.trayer.tail()}")
        panel = self.tray_panel()
        return panel if panel is not None and panel.mapped else None

    def tray_icons(self) -> list[Window]:
        """The icons embedded in trayer: its descendants that carry the XEmbed client property."""
        panel = self.tray_panel()
        if panel is None:
            raise DesktopError("trayer's panel is gone\n" + (self.trayer.tail() if self.trayer else ""))
        icons = []
        for wid, _name, _class in self._tree(panel.hex):
            if "_XEMBED_INFO(" in self.run("xprop", "-id", hex(wid), "_XEMBED_INFO", check=False).stdout:
                window = self.window(wid)
                if window is not None and window.mapped:
                    icons.append(window)
        return icons

    def wait_tray_icon(self, timeout: float = START_TIMEOUT) -> Window:
        return wait_until(lambda: next(iter(self.tray_icons()), None), "an icon in the tray (trayer)", timeout)

    def popups(self) -> list[Window]:
        """Mapped override-redirect top-level windows (menus, tooltips), bottom to top."""
        return [w for w in self.top_levels() if w.mapped and w.override_redirect and w.width > 1]

    def wait_popup(self, before: Sequence[Window] = (), timeout: float = 10.0) -> Window:
        """A mapped override-redirect window that was not among ``before`` (e.g. the menu a click opened)."""
        old = {w.id for w in before}

        def new_popup() -> Window | None:
            return next((w for w in reversed(self.popups()) if w.id not in old), None)

        return wait_until(new_popup, "a new popup window (menu)", timeout)

    def windows_named(self, pattern: str) -> list[Window]:
        """Mapped windows whose title matches the regular expression ``pattern`` (xdotool search --name)."""
        out = self.run("xdotool", "search", "--onlyvisible", "--name", pattern, check=False)
        windows = (self.window(int(line)) for line in out.stdout.split())
        return [w for w in windows if w is not None and w.mapped and w.width > 1]

    def wait_window_named(self, pattern: str, timeout: float = 10.0) -> Window:
        return wait_until(
            lambda: next(iter(self.windows_named(pattern)), None), f"a window titled /{pattern}/", timeout
        )

    # --- input -----------------------------------------------------------------------------------------

    def click(self, window: Window, button: int = 1, at: tuple[int, int] | None = None) -> None:
        """A real pointer click (XTEST) at ``at`` inside the window (default: its centre)."""
        x, y = at if at is not None else (window.width // 2, window.height // 2)
        self.click_at(window.x + x, window.y + y, button)

    def click_at(self, x: int, y: int, button: int = 1) -> None:
        """A real pointer click (XTEST) at (x, y) on the screen."""
        self.run("xdotool", "mousemove", "--sync", str(x), str(y), "click", str(button))

    def focus(self, window: Window) -> None:
        """Give the window the keyboard focus (there is no window manager to do it)."""
        self.run("xdotool", "windowfocus", "--sync", str(window.id))

    def key(self, *keys: str, window: Window | None = None, delay_ms: int = 60) -> None:
        """Key presses (XTEST) to the focused window, or to ``window`` after focusing it."""
        if window is not None:
            self.focus(window)
        self.run("xdotool", "key", "--clearmodifiers", "--delay", str(delay_ms), *keys)

    # --- pictures --------------------------------------------------------------------------------------

    def screenshot(
        self, path: Path, window: Window | None = None, area: tuple[int, int, int, int] | None = None
    ) -> Path:
        """Save a PNG of the screen, of one window, or of ``area`` = (x, y, width, height) of the screen."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if window is not None:
            self.run("import", "-window", str(window.id), str(path))
        elif area is not None:
            x, y, width, height = area
            self.run("import", "-window", "root", "-crop", f"{width}x{height}+{x}+{y}", "+repage", str(path))
        else:
            self.run("import", "-window", "root", str(path))
        return path

    def colours(self, path: Path) -> int:
        """How many distinct colours the image has (1: a blank area)."""
        return int(self.run("convert", str(path), "-format", "%k", "info:").stdout.strip())


@contextlib.contextmanager
def desktop(workdir: Path | None = None, screen: str = SCREEN) -> Iterator[Desktop]:
    """A running desktop (see the module's docstring); stopped, and its files removed, on the way out."""
    own = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="tether-desktop-")) if own else workdir
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    running = Desktop(directory, screen)
    try:
        running.start()
        yield running
    except BaseException:
        running.stop()
        raise
    else:
        problems = running.stop()
        if problems:
            raise DesktopError("; ".join(problems))
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)
