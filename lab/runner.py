"""A small command runner: every external command of the lab goes through here.

Errors carry the command and its stderr so a failed step names what failed.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from typing import Protocol


class LabError(RuntimeError):
    """Something in the lab failed; the message says what."""


class CommandError(LabError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {shlex.join(self.argv)}: {self.stderr}")


class Runner(Protocol):
    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        """Run argv to completion and return its stdout; raise CommandError on failure if check."""
        ...


class SubprocessRunner:
    """The real runner."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise CommandError(argv, 127, f"{argv[0]}: not found ({exc})") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, -1, f"timed out after {self.timeout}s") from exc
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc.stdout
