"""Start the tray at login: an XDG autostart entry (Linux), a LaunchAgent (macOS), the Run key (Windows).

``autostart_for()`` picks the implementation from ``AUTOSTART_BY_PLATFORM``; each writes only the current
user's own startup item, so none needs privileges. Changes take effect at the next login: nothing here
starts or stops a running tray.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from tether.runtime.atomicfile import write_atomic

APP_ID = "tether-tray"
DISPLAY_NAME = "Tether"
LAUNCH_AGENT_LABEL = "dev.tether.tray"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "Tether"


class AutostartError(Exception):
    """The startup item could not be read or written; the message names it and says why."""


class Autostart(Protocol):
    def is_enabled(self) -> bool: ...

    def enable(self) -> None: ...

    def disable(self) -> None: ...


def tray_command() -> list[str]:
    """How to start the tray again: the installed ``tether-tray`` script, else this Python with ``-m``."""
    script = shutil.which(APP_ID)
    return [script] if script else [sys.executable, "-m", "tether.gui"]


# --- Linux and other XDG desktops ----------------------------------------------------------------------

# Characters that make the desktop-entry spec require quoting an Exec argument.
_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def desktop_exec(command: Sequence[str]) -> str:
    """``command`` as an Exec value: arguments quoted per the desktop-entry spec, % doubled."""
    quoted = []
    for argument in command:
        argument = argument.replace("%", "%%")
        if not argument or any(c in _EXEC_RESERVED for c in argument):
            escaped = "".join("\\" + c if c in '"`$\\' else c for c in argument)
            argument = f'"{escaped}"'
        # The file format itself treats backslashes as escapes too, so each one is written twice.
        quoted.append(argument.replace("\\", "\\\\"))
    return " ".join(quoted)


def desktop_entry(command: Sequence[str], icon: str = "", extra: Sequence[str] = ()) -> str:
    """The tray's desktop entry: the user's autostart one here, and the menu's that the Linux package installs
    (packaging/linux/build.py), so that both name and describe the tray alike. ``extra`` lines end it."""
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        f"Name={DISPLAY_NAME}",
        "Comment=Put this workstation inside a Kubernetes cluster's network",
        f"Exec={desktop_exec(command)}",
        *([f"Icon={icon}"] if icon else []),
        "Terminal=false",
        "Categories=Network;Development;",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def _config_home(environ: Mapping[str, str]) -> Path:
    value = environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and Path(value).is_absolute() else Path.home() / ".config"


def _config_dirs(environ: Mapping[str, str]) -> list[Path]:
    value = environ.get("XDG_CONFIG_DIRS", "") or "/etc/xdg"
    return [Path(p) for p in value.split(":") if p and Path(p).is_absolute()]


def _read_entry(path: Path) -> dict[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise AutostartError(f"cannot read the autostart entry {path}: {exc}") from None
    return dict(parser["Desktop Entry"]) if parser.has_section("Desktop Entry") else {}


def _entry_enabled(entry: Mapping[str, str]) -> bool:
    return entry.get("Hidden", "false") != "true" and entry.get("X-GNOME-Autostart-enabled", "true") != "false"


class XdgAutostart:
    """``$XDG_CONFIG_HOME/autostart/tether-tray.desktop``.

    A package may install a system-wide entry in ``$XDG_CONFIG_DIRS/autostart``; the user's own file
    overrides it, so turning autostart off then writes an entry with ``Hidden=true`` (the spec's way),
    rather than deleting a file that would leave the system one in force.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        icon: str = "",
    ) -> None:
        self.command = list(command) if command is not None else tray_command()
        self.environ = os.environ if environ is None else environ
        self.icon = icon

    @property
    def path(self) -> Path:
        return _config_home(self.environ) / "autostart" / f"{APP_ID}.desktop"

    def _system_entries(self) -> list[Path]:
        return [d / "autostart" / f"{APP_ID}.desktop" for d in _config_dirs(self.environ)]

    def is_enabled(self) -> bool:
        for path in [self.path, *self._system_entries()]:
            entry = _read_entry(path)
            if entry is not None:  # the first file found wins, the user's own before the system's
                return _entry_enabled(entry)
        return False

    def enable(self) -> None:
        self._write(desktop_entry(self.command, self.icon, ["X-GNOME-Autostart-enabled=true"]))

    def disable(self) -> None:
        if any(_read_entry(p) is not None for p in self._system_entries()):
            self._write(f"[Desktop Entry]\nType=Application\nName={DISPLAY_NAME}\nHidden=true\n")
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise AutostartError(f"cannot remove the autostart entry {self.path}: {exc.strerror or exc}") from None

    def _write(self, text: str) -> None:
        _write_atomically(self.path, text.encode())


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data, make_parents=True)
    except OSError as exc:
        raise AutostartError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- macOS ---------------------------------------------------------------------------------------------


class LaunchAgentAutostart:
    """``~/Library/LaunchAgents/dev.tether.tray.plist``, loaded by launchd at the next login (RunAtLoad)."""

    def __init__(self, command: Sequence[str] | None = None, home: Path | None = None) -> None:
        self.command = list(command) if command is not None else tray_command()
        self.home = home or Path.home()

    @property
    def path(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"

    def agent(self) -> dict[str, object]:
        return {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": self.command,
            "RunAtLoad": True,
            # Only in a graphical login: a tray has nothing to do in an ssh session.
            "LimitLoadToSessionType": "Aqua",
            "ProcessType": "Interactive",
        }

    def is_enabled(self) -> bool:
        try:
            with self.path.open("rb") as stream:
                agent = plistlib.load(stream)
        except FileNotFoundError:
            return False
        except (OSError, plistlib.InvalidFileException, ValueError) as exc:
            raise AutostartError(f"cannot read the launch agent {self.path}: {exc}") from None
        return isinstance(agent, dict) and agent.get("RunAtLoad") is True and agent.get("Disabled") is not True

    def enable(self) -> None:
        _write_atomically(self.path, plistlib.dumps(self.agent()))

    def disable(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise AutostartError(f"cannot remove the launch agent {self.path}: {exc.strerror or exc}") from None


# --- Windows -------------------------------------------------------------------------------------------


class Registry(Protocol):
    """String values under one key of HKEY_CURRENT_USER."""

    def get(self, key: str, name: str) -> str | None: ...

    def set(self, key: str, name: str, value: str) -> None: ...

    def delete(self, key: str, name: str) -> None: ...


class WinregRegistry:
    """The real registry (HKCU) through ``winreg``, imported only when used: it exists only on Windows."""

    def get(self, key: str, name: str) -> str | None:
        import winreg  # type: ignore[import-not-found]

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key) as handle:
                value, kind = winreg.QueryValueEx(handle, name)
        except FileNotFoundError:
            return None
        return value if kind in (winreg.REG_SZ, winreg.REG_EXPAND_SZ) else None

    def set(self, key: str, name: str, value: str) -> None:
        import winreg  # type: ignore[import-not-found]

        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, key) as handle:
            winreg.SetValueEx(handle, name, 0, winreg.REG_SZ, value)

    def delete(self, key: str, name: str) -> None:
        import winreg  # type: ignore[import-not-found]

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
                winreg.DeleteValue(handle, name)
        except FileNotFoundError:
            pass


class RunKeyAutostart:
    """The "Tether" value under HKCU\\...\\CurrentVersion\\Run: Windows runs that command line at login."""

    def __init__(self, command: Sequence[str] | None = None, registry: Registry | None = None) -> None:
        self.command = list(command) if command is not None else tray_command()
        self.registry = registry if registry is not None else WinregRegistry()

    def command_line(self) -> str:
        return subprocess.list2cmdline(self.command)

    def is_enabled(self) -> bool:
        return bool(self._call("read", self.registry.get, RUN_KEY, RUN_VALUE))

    def enable(self) -> None:
        self._call("write", self.registry.set, RUN_KEY, RUN_VALUE, self.command_line())

    def disable(self) -> None:
        self._call("delete", self.registry.delete, RUN_KEY, RUN_VALUE)

    @staticmethod
    def _call(what: str, method: Callable[..., str | None], *args: str) -> str | None:
        try:
            return method(*args)
        except OSError as exc:
            raise AutostartError(f"cannot {what} HKCU\\{RUN_KEY}\\{RUN_VALUE}: {exc.strerror or exc}") from None


AUTOSTART_BY_PLATFORM: dict[str, type[XdgAutostart] | type[LaunchAgentAutostart] | type[RunKeyAutostart]] = {
    "linux": XdgAutostart,
    "darwin": LaunchAgentAutostart,
    "win32": RunKeyAutostart,
}


def autostart_for(platform: str = sys.platform) -> Autostart:
    """The startup mechanism of ``platform``; other Unix desktops (the BSDs) follow XDG as Linux does."""
    return AUTOSTART_BY_PLATFORM.get(platform, XdgAutostart)()
