"""`tether version|status|quit` start fast: they import no lab, manager internals, Qt or Kubernetes client.

Each command runs in a fresh interpreter against a socket nobody serves (exit 3), and the test reads which
modules it loaded. A heavy import creeping into the light commands' path fails here, not in a benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from tether.helper.user.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

FORBIDDEN = ("tether.lab", "tether.helper.root", "PySide6", "kubernetes", "kmock", "yaml", "aiohttp", "tether.gui")


def loaded_by(tmp_path, *argv: str) -> tuple[int, list[str]]:
    socket = str(tmp_path / "nobody" / "helper.sock")
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *argv, "--socket", socket], capture_output=True, text=True, timeout=60
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result["code"], result["modules"]


@pytest.mark.parametrize("argv", [["version"], ["status", "--json"], ["status"], ["quit"]])
def test_light_commands_import_nothing_heavy(tmp_path, argv):
    code, modules = loaded_by(tmp_path, *argv)
    assert code == 3  # no helper there: the command still ran its whole path
    heavy = [m for m in modules if m.startswith(FORBIDDEN)]
    assert not heavy, heavy
    manager = [m for m in modules if m.startswith("tether.manager.") and not m.startswith("tether.manager.api")]
    assert not manager, manager


def test_connect_loads_the_kubeconfig_reader_but_not_the_lab(tmp_path):
    code, modules = loaded_by(tmp_path, "connect", "--kubeconfig", str(tmp_path / "missing"))
    assert code == 2  # the missing kubeconfig is named; nothing reached the helper
    assert "tether.helper.user.kubeconfig" in modules
    assert not [m for m in modules if m.startswith(("tether.lab", "PySide6", "tether.helper.root"))]


def test_help_lists_every_command(capsys):
    from tether.helper.user.cli.main import COMMANDS, main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_lab_without_its_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    from tether.lab.lab import Lab

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kmock" else real(name, *a))
    assert "pip install 'tether[lab]'" in Lab()._check_tools()


@pytest.mark.parametrize("argv", [["status", "--json"], ["version"]])
def test_one_shot_commands_end_with_their_output_complete(tmp_path, argv):
    """They end the process without the interpreter's teardown: what they printed must still all be out."""
    socket = str(tmp_path / "nobody" / "helper.sock")
    run = subprocess.run(
        [sys.executable, "-m", "tether.helper.user.cli.main", *argv, "--socket", socket],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3
    assert "not installed or not running" in run.stderr
    if argv[0] == "status":
        assert json.loads(run.stdout)["phase"] == "unavailable"
    else:
        assert run.stdout.startswith("tether ")


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`tether status | head -1`: no traceback when the pipe closes under a long output."""
    from tether.helper.user.cli.main import SIGPIPE_EXIT

    script = (
        "import sys\n"
        "from tether.helper.user.cli import control\n"
        "def noisy(args):\n"
        "    for _ in range(100000):\n"
        "        print('line ' * 20)\n"
        "control.cmd_status = noisy\n"
        "from tether.helper.user.cli.main import main\n"
        "sys.exit(main(['status']))\n"
    )
    run = subprocess.run(
        f'{sys.executable} -c "$SCRIPT" | head -1; exit ${{PIPESTATUS[0]}}',
        shell=True,
        executable="/bin/bash",
        env={**os.environ, "SCRIPT": script},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == SIGPIPE_EXIT
