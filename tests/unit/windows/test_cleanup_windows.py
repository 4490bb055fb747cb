"""Crash cleanup on Windows: a journaled Wintun adapter is confirmed gone, or removed as a device."""

from __future__ import annotations

import json

import pytest

from tests.doubles.fake_commands import FakeCommands
from tests.doubles.fake_powershell import FakePowerShell
from tether.helper.root import cleanup, cleanup_windows
from tether.helper.root.journal import Journal, read_journal
from tether.helper.root.powershell import render

INSTANCE = r"SWD\WINTUN\{7A3C9D1E-2B4F-4E6A-9C8D-1F2E3A4B5C6D}"


def adapter(name: str, description: str = "Tether Tunnel", instance: str = INSTANCE) -> str:
    return json.dumps([{"Name": name, "InterfaceDescription": description, "PnPDeviceID": instance}])


@pytest.fixture
def platform_doubles(monkeypatch):
    shell, commands = FakePowerShell({"Get-NetAdapter": "[]"}), FakeCommands()
    monkeypatch.setattr(cleanup_windows, "SHELL", lambda: shell)
    monkeypatch.setattr(cleanup_windows, "RUN", commands)
    return shell, commands


def journal_with_link(tmp_path, name: str = "tether0"):
    path = tmp_path / "Tether" / "journal.json"
    Journal(path).add_link(name)
    return path


def test_an_adapter_wintun_already_removed_is_only_confirmed(tmp_path, platform_doubles):
    shell, commands = platform_doubles
    path = journal_with_link(tmp_path)
    report = cleanup.run(path, sweep=False, platform="win32")
    assert report.ok and report.removed == []
    assert "adapter tether0 is gone (Wintun removed it with its process)" in report.notes
    assert shell.scripts == [
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-NetAdapter -Name 'tether0' "
        "-ErrorAction 'SilentlyContinue' | Select-Object Name,InterfaceDescription,PnPDeviceID)"
    ]
    assert commands.commands == []
    assert not path.exists()  # everything is gone: the journal goes too


def test_a_leftover_tether_adapter_is_removed_with_pnputil(tmp_path, platform_doubles):
    shell, commands = platform_doubles
    shell.answers["Get-NetAdapter"] = adapter("tether1")
    path = journal_with_link(tmp_path, "tether1")
    report = cleanup.run(path, sweep=False, platform="win32")
    assert report.removed == ["adapter tether1"]
    assert commands.commands == [["pnputil.exe", "/remove-device", INSTANCE]]


def test_an_adapter_that_is_not_tethers_is_left_alone(tmp_path, platform_doubles):
    shell, commands = platform_doubles
    shell.answers["Get-NetAdapter"] = adapter("tether0", description="Intel(R) Ethernet Connection")
    report = cleanup.run(journal_with_link(tmp_path), sweep=False, platform="win32")
    assert report.skipped == ["adapter tether0 (Intel(R) Ethernet Connection: not a Tether Wintun adapter)"]
    assert commands.commands == []


def test_a_failed_removal_keeps_the_journal_for_the_next_run(tmp_path, platform_doubles):
    shell, commands = platform_doubles
    shell.answers["Get-NetAdapter"] = adapter("tether0")
    commands.fail[("pnputil.exe",)] = "Failed to remove the device"
    path = journal_with_link(tmp_path)
    report = cleanup.run(path, sweep=False, platform="win32")
    assert not report.ok and "cannot remove adapter tether0" in report.errors[0]
    assert read_journal(path).links == ("tether0",)


def test_the_query_names_the_adapter_exactly():
    assert "-Name 'it''s'" in render(cleanup_windows.adapter_query("it's"))
