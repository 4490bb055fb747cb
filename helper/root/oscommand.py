"""Running the OS's documented command-line tools (macOS ``ifconfig``, ``route``, ``netstat``, ``scutil``).

The platform modules that configure the machine through commands take a ``CommandRunner`` rather than
calling ``subprocess`` themselves, so their unit tests can check the exact argv they run and feed them
recorded outputs (tests/doubles/fake_commands.py). ``run_command`` is the real one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

__all__ = ["CommandFailed", "CommandRunner", "run_command"]

TIMEOUT = 30.0


class CommandFailed(OSError):
    """A command could not be started, timed out or exited non-zero; the text names the command line."""

    def __init__(self, argv: Sequence[str], message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(f"{' '.join(argv)}: {message}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run ``argv`` (no shell) and return its standard output; raise CommandFailed otherwise."""
        ...


def run_command(argv: Sequence[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, f"no answer within {TIMEOUT:g} s") from None
    except OSError as exc:
        raise CommandFailed(argv, exc.strerror or str(exc)) from None
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip() or "no message"
        message = f"failed ({done.returncode}): {detail}"
        raise CommandFailed(argv, message, returncode=done.returncode, stderr=done.stderr)
    return done.stdout
