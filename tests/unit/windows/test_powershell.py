"""The PowerShell command builder: values are single-quoted literals, names are checked, JSON answers read."""

from __future__ import annotations

import base64

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tether.helper.root.powershell import Command, PowerShellError, encoded_argv, json_rows, quote, render


def test_render_quotes_every_value_and_adds_switches():
    command = Command(
        "New-NetRoute",
        (
            ("DestinationPrefix", "10.96.0.0/12"),
            ("InterfaceIndex", 17),
            ("PolicyStore", "ActiveStore"),
            ("Force", True),
        ),
    )
    assert render(command) == (
        "New-NetRoute -DestinationPrefix '10.96.0.0/12' -InterfaceIndex 17 -PolicyStore 'ActiveStore' -Force"
    )


def test_false_switches_are_explicit_and_lists_become_arrays():
    command = Command("Add-DnsClientNrptRule", (("NameServers", ("10.0.0.1", "10.0.0.2")), ("Confirm", False)))
    assert render(command) == "Add-DnsClientNrptRule -NameServers '10.0.0.1','10.0.0.2' -Confirm:$false"


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("$(Remove-Item C:\\ -Recurse)", "'$(Remove-Item C:\\ -Recurse)'"),
        ("a\u2019b", "'a\u2019\u2019b'"),  # PowerShell reads typographic quotes as quotes
        ("`n", "'`n'"),
    ],
)
def test_quote_makes_a_literal_that_cannot_end_early(value, literal):
    assert quote(value) == literal


@pytest.mark.parametrize("value", ["a\nb", "a\x00", "\r"])
def test_quote_refuses_control_characters(value):
    with pytest.raises(ValueError, match="control character"):
        quote(value)


@pytest.mark.parametrize(
    ("cmdlet", "params"),
    [("Remove-Item; calc", ()), ("Get-NetRoute", (("Destination Prefix", "x"),)), ("x", ())],
)
def test_command_refuses_bad_names(cmdlet, params):
    with pytest.raises(ValueError, match="invalid"):
        Command(cmdlet, params)


def test_json_commands_select_and_wrap_in_an_array():
    command = Command("Get-NetRoute", (), json=True, select=("DestinationPrefix", "NextHop"))
    assert render(command) == (
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-NetRoute | Select-Object DestinationPrefix,NextHop)"
    )


def test_encoded_argv_carries_exactly_the_rendered_script():
    command = Command("Get-NetRoute", (("InterfaceIndex", 3),))
    argv = encoded_argv(command)
    assert argv[:-1] == [
        "powershell.exe",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
    ]
    script = base64.b64decode(argv[-1]).decode("utf-16-le")
    assert script.startswith("$ErrorActionPreference = 'Stop';")
    assert script.endswith("; Get-NetRoute -InterfaceIndex 3")


@pytest.mark.parametrize(
    ("text", "rows"),
    [("", []), ("  \r\n", []), ('{"a":1}', [{"a": 1}]), ('\ufeff[{"a":1},{"a":2}]', [{"a": 1}, {"a": 2}])],
)
def test_json_rows(text, rows):
    assert json_rows(text) == rows


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"x"'])
def test_json_rows_refuses_what_is_not_rows(text):
    with pytest.raises(PowerShellError):
        json_rows(text)


def test_the_fake_records_answers_and_fails():
    shell = FakePowerShell({"Get-NetRoute": "[]"}, fail={"Remove-NetRoute": "No matching MSFT_NetRoute objects found"})
    assert shell.run(Command("Get-NetRoute")) == "[]"
    with pytest.raises(PowerShellError) as info:
        shell.run(Command("Remove-NetRoute", (("DestinationPrefix", "10.0.0.0/8"),)))
    assert info.value.not_found
    assert shell.scripts == ["Get-NetRoute", "Remove-NetRoute -DestinationPrefix '10.0.0.0/8'"]
