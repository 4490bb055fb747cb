"""Start at login: XDG autostart for real in a temporary XDG_CONFIG_HOME; LaunchAgent and Run key with a
temporary home and a fake registry."""

from __future__ import annotations

import configparser
import plistlib

import pytest

from tests.doubles.fake_autostart import FakeRegistry
from tether.gui import autostart
from tether.gui.autostart import (
    AUTOSTART_BY_PLATFORM,
    RUN_KEY,
    AutostartError,
    LaunchAgentAutostart,
    RunKeyAutostart,
    XdgAutostart,
    desktop_exec,
)

COMMAND = ["/opt/Tether Apps/bin/tether-tray", "--kubeconfig", "/home/dev/100%/config"]


def read_desktop(path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return dict(parser["Desktop Entry"])


def unquote_exec(value: str) -> list[str]:
    """Exec as the desktop-entry spec reads it: the string's escapes, then quoted arguments, then %%."""
    text = value.replace("\\\\", "\\")  # the string escape \\ comes first
    args: list[str] = []
    current, quoted, started, i = "", False, False, 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
            current, i = current + text[i + 1], i + 2
            continue
        if char == '"':
            quoted, started = not quoted, True
        elif char == " " and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + char, True
        i += 1
    if started:
        args.append(current)
    return [arg.replace("%%", "%") for arg in args]


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    config_home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    return tmp_path


def test_xdg_enable_writes_a_valid_desktop_entry_and_disable_removes_it(xdg):
    entry = XdgAutostart(COMMAND)
    assert entry.path == xdg / "config" / "autostart" / "tether-tray.desktop"
    assert not entry.is_enabled()
    entry.enable()
    assert entry.is_enabled()
    fields = read_desktop(entry.path)
    assert fields["Type"] == "Application"
    assert fields["Name"] == "Tether"
    assert fields["Terminal"] == "false"
    assert unquote_exec(fields["Exec"]) == COMMAND
    assert [p.name for p in entry.path.parent.iterdir()] == ["tether-tray.desktop"]  # no temporary left
    entry.disable()
    assert not entry.path.exists() and not entry.is_enabled()
    entry.disable()  # twice is fine


def test_xdg_disable_hides_a_system_wide_entry_instead_of_deleting_it(xdg):
    system = xdg / "etc-xdg" / "autostart" / "tether-tray.desktop"
    system.parent.mkdir(parents=True)
    system.write_text("[Desktop Entry]\nType=Application\nName=Tether\nExec=tether-tray\n")
    entry = XdgAutostart(COMMAND)
    assert entry.is_enabled(), "the package's entry starts the tray"
    entry.disable()
    assert read_desktop(entry.path)["Hidden"] == "true"
    assert system.exists()
    assert not entry.is_enabled()
    entry.enable()
    assert entry.is_enabled()


def test_xdg_honours_a_disabled_flag_and_reports_a_broken_file(xdg):
    entry = XdgAutostart(COMMAND)
    entry.path.parent.mkdir(parents=True)
    entry.path.write_text("[Desktop Entry]\nType=Application\nExec=x\nX-GNOME-Autostart-enabled=false\n")
    assert not entry.is_enabled()
    entry.path.write_text("this is not a desktop entry\n[")
    with pytest.raises(AutostartError, match=str(entry.path)):
        entry.is_enabled()


def test_xdg_uses_the_home_config_without_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    entry = XdgAutostart(["tether-tray"], environ={"HOME": str(tmp_path)})
    assert entry.path == tmp_path / ".config" / "autostart" / "tether-tray.desktop"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["tether-tray"], "tether-tray"),
        (["/a b/tray", "--x"], '"/a b/tray" --x'),
        (["tray", "50%"], "tray 50%%"),
        (["tray", 'say "hi" $HOME'], 'tray "say \\\\"hi\\\\" \\\\$HOME"'),
        (["C:\\tray"], '"C:\\\\\\\\tray"'),
        (["tray", ""], 'tray ""'),
    ],
)
def test_desktop_exec_quoting(command, expected):
    assert desktop_exec(command) == expected
    assert unquote_exec(desktop_exec(command)) == command


def test_launch_agent_in_a_temporary_home(tmp_path):
    agent = LaunchAgentAutostart(COMMAND, home=tmp_path)
    assert agent.path == tmp_path / "Library" / "LaunchAgents" / "dev.tether.tray.plist"
    assert not agent.is_enabled()
    agent.enable()
    assert agent.is_enabled()
    with agent.path.open("rb") as stream:
        written = plistlib.load(stream)
    assert written["Label"] == "dev.tether.tray"
    assert written["ProgramArguments"] == COMMAND
    assert written["RunAtLoad"] is True
    agent.disable()
    assert not agent.path.exists() and not agent.is_enabled()
    agent.path.parent.mkdir(parents=True, exist_ok=True)
    agent.path.write_bytes(b"not a plist")
    with pytest.raises(AutostartError, match="launch agent"):
        agent.is_enabled()


def test_run_key_with_a_fake_registry():
    registry = FakeRegistry()
    run = RunKeyAutostart([r"C:\Program Files\Tether\tether-tray.exe", "--log-level", "info"], registry)
    assert not run.is_enabled()
    run.enable()
    assert run.is_enabled()
    assert registry.values == {
        (RUN_KEY, "Tether"): r'"C:\Program Files\Tether\tether-tray.exe" --log-level info',
    }
    assert RUN_KEY == r"Software\Microsoft\Windows\CurrentVersion\Run"
    run.disable()
    assert registry.values == {} and not run.is_enabled()


def test_run_key_errors_name_the_key():
    class Broken(FakeRegistry):
        def set(self, key, name, value):
            raise PermissionError(5, "Access is denied")

    with pytest.raises(AutostartError, match=r"HKCU\\Software\\Microsoft.*Access is denied"):
        RunKeyAutostart(["t"], Broken()).enable()


def test_the_platform_table(monkeypatch):
    table = dict(AUTOSTART_BY_PLATFORM)
    assert table == {"linux": XdgAutostart, "darwin": LaunchAgentAutostart, "win32": RunKeyAutostart}
    assert isinstance(autostart.autostart_for("linux"), XdgAutostart)
    assert isinstance(autostart.autostart_for("darwin"), LaunchAgentAutostart)
    assert isinstance(autostart.autostart_for("freebsd14"), XdgAutostart)


def test_the_command_is_the_installed_script_or_this_python(monkeypatch):
    monkeypatch.setattr(autostart.shutil, "which", lambda name: "/usr/bin/tether-tray")
    assert autostart.tray_command() == ["/usr/bin/tether-tray"]
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)
    assert autostart.tray_command()[1:] == ["-m", "tether.gui"]
