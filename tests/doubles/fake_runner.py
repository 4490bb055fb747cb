"""A stand-in for the lab's command runner (``tether.lab.runner.Runner``): nothing runs on the host."""

from __future__ import annotations

from collections.abc import Sequence


class RecordingRunner:
    """Records commands and answers from a table keyed by the command prefix (empty output otherwise)."""

    def __init__(self, answers: dict[tuple[str, ...], str] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.stdins: list[str | None] = []
        self.answers = answers or {}

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        self.commands.append(list(argv))
        self.stdins.append(stdin)
        for prefix, answer in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return answer
        return ""
