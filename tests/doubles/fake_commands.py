"""A stand-in ``CommandRunner`` (``tether.helper.root.oscommand``): records every command, runs none.

Answers come from a table keyed by the argv's leading words (the longest matching key wins); ``fail``
keys make the command fail with the given stderr, as the real tool would.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.helper.root.oscommand import CommandFailed


class FakeCommands:
    def __init__(
        self,
        answers: dict[tuple[str, ...], str] | None = None,
        fail: dict[tuple[str, ...], str] | None = None,
    ) -> None:
        self.answers = dict(answers or {})
        self.fail = dict(fail or {})
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> str:
        argv = list(argv)
        self.commands.append(argv)
        failure = self._lookup(self.fail, argv)
        if failure is not None:
            raise CommandFailed(argv, f"failed (1): {failure}", returncode=1, stderr=failure)
        answer = self._lookup(self.answers, argv)
        return "" if answer is None else answer

    def matching(self, *prefix: str) -> list[list[str]]:
        """The recorded commands starting with ``prefix``."""
        return [argv for argv in self.commands if tuple(argv[: len(prefix)]) == prefix]

    @staticmethod
    def _lookup(table: dict[tuple[str, ...], str], argv: list[str]) -> str | None:
        keys = [key for key in table if tuple(argv[: len(key)]) == key]
        return table[max(keys, key=len)] if keys else None
