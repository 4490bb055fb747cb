"""Running PowerShell cmdlets on Windows with every value passed as data, never as code.

A ``Command`` is a cmdlet name plus named parameters. ``render`` turns it into one line of script in
which each value is a single-quoted PowerShell literal: inside such a literal nothing is expanded
(no ``$var``, no ``$(...)``, no backtick escapes) and the only special character is the quote itself,
which is doubled. PowerShell also treats the typographic quotes U+2018..U+201B as single quotes, so
those are doubled too. Values with control characters (newlines, NUL) are refused outright: nothing
we pass needs them. Callers still validate what a value means (a CIDR, a domain) before building a
command; quoting only guarantees that a bad value cannot become code.

``PowerShellRunner`` runs the script with ``powershell.exe -NoProfile -NonInteractive
-EncodedCommand <base64 of UTF-16LE>``: the encoded form bypasses the Windows command-line quoting
rules altogether, so what PowerShell parses is exactly what ``render`` produced. The script sets
``$ErrorActionPreference = 'Stop'``, so a failing cmdlet ends the run with a non-zero exit status
and the error text, which becomes ``PowerShellError``.

Commands that return data end in ``ConvertTo-Json`` over an array (``json_rows`` reads the answer:
PowerShell prints nothing for an empty pipeline and a bare object for a single row).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Command",
    "PowerShell",
    "PowerShellError",
    "PowerShellRunner",
    "json_rows",
    "quote",
    "render",
]

# A switch parameter is given as True (-Force) or False (-Confirm:$false); a list becomes a PowerShell array ('a','b').
Value = str | int | bool | tuple[str, ...]

_CMDLET_RE = re.compile(r"^[A-Z][A-Za-z]+-[A-Za-z0-9]+$")
_PARAM_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_QUOTES = "'\u2018\u2019\u201a\u201b"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
TIMEOUT = 60


class PowerShellError(RuntimeError):
    """A cmdlet failed; the message names the command and carries PowerShell's error text."""

    def __init__(self, message: str, *, command: Command | None = None) -> None:
        super().__init__(message)
        self.command = command

    @property
    def not_found(self) -> bool:
        """The error says the object does not exist (removing something already gone)."""
        text = str(self).lower()
        return "no matching" in text or "not found" in text or "objectnotfound" in text


def quote(value: str) -> str:
    """``value`` as a single-quoted PowerShell literal; refuses control characters."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    if _CONTROL_RE.search(value):
        raise ValueError(f"refusing to pass {value!r} to PowerShell: it contains a control character")
    return "'" + "".join(c + c if c in _QUOTES else c for c in value) + "'"


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        raise TypeError("a switch is not a value")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, tuple):
        if not value:
            raise ValueError("an empty list cannot be passed to a cmdlet")
        return ",".join(quote(v) for v in value)
    return quote(value)


@dataclass(frozen=True)
class Command:
    """``cmdlet -Name value ... [| ConvertTo-Json]``; ``json`` wraps the output as a JSON array."""

    cmdlet: str
    params: tuple[tuple[str, Value], ...] = ()
    json: bool = False
    # Properties to keep (Select-Object) before converting to JSON: the CIM objects carry dozens more.
    select: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _CMDLET_RE.match(self.cmdlet):
            raise ValueError(f"invalid cmdlet name {self.cmdlet!r}")
        for name, _value in self.params:
            if not _PARAM_RE.match(name):
                raise ValueError(f"invalid parameter name {name!r} for {self.cmdlet}")
        for name in self.select:
            if not _PARAM_RE.match(name):
                raise ValueError(f"invalid property name {name!r} for {self.cmdlet}")

    def param(self, name: str) -> Value | None:
        """The value given for ``name`` (None when absent): for tests and error messages."""
        return next((value for key, value in self.params if key == name), None)


def render(command: Command) -> str:
    """The script line for ``command`` (values quoted, see the module docstring)."""
    words = [command.cmdlet]
    for name, value in command.params:
        if value is True:
            words.append(f"-{name}")
        elif value is False:
            words.append(f"-{name}:$false")  # e.g. -Confirm:$false: removals would otherwise prompt
        else:
            words.append(f"-{name} {_literal(value)}")
    line = " ".join(words)
    if command.select:
        line += " | Select-Object " + ",".join(command.select)
    if command.json:
        # -InputObject @(...) keeps a one-row answer a list; -Compress keeps it one line.
        line = f"ConvertTo-Json -Compress -Depth 4 -InputObject @({line})"
    return line


def json_rows(text: str) -> list[dict[str, Any]]:
    """The rows of a ``ConvertTo-Json`` answer: a list of objects (empty output is no rows)."""
    text = text.strip().lstrip("\ufeff")
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PowerShellError(f"PowerShell returned text that is not JSON ({exc}): {text[:200]!r}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise PowerShellError(f"PowerShell returned JSON that is not a list of objects: {text[:200]!r}")
    return data


class PowerShell(Protocol):
    """Runs one command and returns its standard output; raises ``PowerShellError``."""

    def run(self, command: Command) -> str: ...


def encoded_argv(command: Command, executable: str = "powershell.exe") -> list[str]:
    """The process arguments that run ``command`` (the script travels base64-encoded)."""
    script = (
        "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'; "
        # Interface names are not always ASCII; the console code page would mangle them.
        "[Console]::OutputEncoding = [Text.Encoding]::UTF8; " + render(command)
    )
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [executable, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encoded]


class PowerShellRunner:
    """Runs commands in a fresh ``powershell.exe`` each (Windows PowerShell 5.1 ships with Windows 10+)."""

    def __init__(self, executable: str = "powershell.exe", timeout: float = TIMEOUT) -> None:
        self.executable = executable
        self.timeout = timeout

    def run(self, command: Command) -> str:
        argv = encoded_argv(command, self.executable)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PowerShellError(f"cannot run {render(command)}: {exc}", command=command) from None
        out = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip() or out.strip()
            raise PowerShellError(f"{render(command)} failed: {err}", command=command)
        return out
