"""A stand-in for ``tether.helper.root.powershell.PowerShellRunner``: nothing runs; commands are recorded.

Answers come from a table keyed by cmdlet name (a string, or a callable given the command); ``fail``
makes a cmdlet raise ``PowerShellError`` with the given text. ``scripts`` holds what the real runner
would have executed, so tests can check the exact command lines.
"""

from __future__ import annotations

from collections.abc import Callable

from tether.helper.root.powershell import Command, PowerShellError, render

Answer = str | Callable[[Command], str]


class FakePowerShell:
    def __init__(self, answers: dict[str, Answer] | None = None, fail: dict[str, str] | None = None) -> None:
        self.answers: dict[str, Answer] = dict(answers or {})
        self.fail: dict[str, str] = dict(fail or {})
        self.commands: list[Command] = []

    @property
    def scripts(self) -> list[str]:
        return [render(c) for c in self.commands]

    def ran(self, cmdlet: str) -> list[Command]:
        return [c for c in self.commands if c.cmdlet == cmdlet]

    def run(self, command: Command) -> str:
        self.commands.append(command)
        if command.cmdlet in self.fail:
            raise PowerShellError(f"{render(command)} failed: {self.fail[command.cmdlet]}", command=command)
        answer = self.answers.get(command.cmdlet, "")
        return answer(command) if callable(answer) else answer
