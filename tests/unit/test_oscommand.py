"""The real command runner: output, failures named by their command line, and a missing program."""

from __future__ import annotations

import sys

import pytest

from tether.helper.root.oscommand import CommandFailed, run_command


def test_returns_stdout_and_passes_stdin():
    assert run_command([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], "utun4") == "UTUN4\n"


def test_failure_names_the_command_and_its_message():
    script = "import sys; sys.stderr.write('route: writing to routing socket: File exists'); sys.exit(3)"
    with pytest.raises(CommandFailed, match=r"failed \(3\): route: writing to routing socket: File exists") as info:
        run_command([sys.executable, "-c", script])
    assert info.value.returncode == 3
    assert info.value.stderr.startswith("route:")


def test_missing_program():
    with pytest.raises(CommandFailed, match="no-such-tool-xyz"):
        run_command(["no-such-tool-xyz", "-n"])
