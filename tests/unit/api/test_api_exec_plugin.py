"""Exec credential plugins as real processes: the launcher as another uid, the plugin's process group, its stderr."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.helper.root.kube import credentials
from tether.helper.root.kube.credentials import CredentialsError, run_as_caller
from tether.helper.root.server.caller import Caller

NOBODY = Caller(uid=65534, gid=65534, pid=1, groups=(65534,), username="nobody")
ME = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid(), groups=tuple(os.getgroups()), username="me")
TOKEN = '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}'
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run the plugin as another uid)")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every uid can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tether-plugin-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# --- the launcher imports nothing once it is the caller ------------------------------------------------

# Reports every import the interpreter starts once it no longer runs as root: after the switch the
# standard library may be unreadable (this machine's interpreter lives under /root), and such an import fails.
AUDIT = """
import os, sys
def _imports_after_switch(event, args):
    if event == "import" and os.getuid() != 0:
        os.write(2, b"IMPORT-AFTER-SWITCH " + str(args[0]).encode() + b"\\n")
sys.addaudithook(_imports_after_switch)
"""


def launch_with_audit(argv: list[str], path: str) -> subprocess.CompletedProcess[bytes]:
    spec = {"switch": True, "uid": 65534, "gid": 65534, "groups": [65534], "cwd": "/", "argv": argv}
    spec["env"] = {"PATH": path}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", AUDIT + credentials.LAUNCHER],
        input=json.dumps(spec).encode(),
        capture_output=True,
        env={},
        timeout=30,
    )


@needs_root
@pytest.mark.parametrize("found", [True, False])
def test_the_launcher_imports_nothing_after_taking_the_callers_uid(shared_dir, found):
    script(shared_dir, "get-token", f"echo '{TOKEN}'\n")
    done = launch_with_audit(["get-token" if found else "no-such-plugin"], f"/nonexistent:{shared_dir}")
    assert b"IMPORT-AFTER-SWITCH" not in done.stderr, done.stderr.decode()
    if found:
        assert (done.returncode, done.stdout.decode().strip()) == (0, TOKEN)
    else:
        assert (done.returncode, done.stderr) == (127, b"tether-exec: not found\n")


@needs_root
def test_a_plugin_found_on_path_runs_as_a_user_who_cannot_read_the_interpreters_library(shared_dir):
    """The usual kubeconfig names the plugin without a directory (aws, kubelogin): searching PATH imported
    warnings after the switch, which failed with ModuleNotFoundError where the stdlib is private."""
    script(
        shared_dir,
        "get-token",
        'echo "{\\"apiVersion\\":\\"client.authentication.k8s.io/v1\\",'
        '\\"kind\\":\\"ExecCredential\\",\\"status\\":{\\"token\\":\\"uid-$(id -u)\\"}}"\n',
    )
    result = run_as_caller(["get-token"], NOBODY, {"PATH": f"/usr/bin:/bin:{shared_dir}"}, "/", 30)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["status"]["token"] == "uid-65534"


# --- nothing the plugin started outlives the call -------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a killed orphan may wait a moment for its reaper


def gone_soon(pid: int) -> bool:
    for _ in range(500):
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def children() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:  # a failed test must not leave its sleepers behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)


def spawning_plugin(directory: Path, then: str) -> Path:
    """Starts a sleeping child that lets go of the pipes (so the call could end without it), notes its pid."""
    return script(
        directory, "spawner", f'sleep 300 >/dev/null 2>&1 </dev/null &\necho $! > "{directory}/child"\n{then}'
    )


@pytest.mark.parametrize("caller", [pytest.param(NOBODY, marks=needs_root), ME], ids=["nobody", "me"])
def test_a_child_the_plugin_left_running_is_killed_when_the_call_ends(shared_dir, children, caller):
    os.chmod(shared_dir, 0o777)  # the plugin writes its child's pid here
    plugin = spawning_plugin(shared_dir, f"echo '{TOKEN}'\n")
    result = run_as_caller([str(plugin)], caller, {"PATH": "/usr/bin:/bin"}, "/", 30)
    assert result.returncode == 0
    children.append(int((shared_dir / "child").read_text()))
    assert gone_soon(children[0]), "the plugin's child outlived the call"


def test_a_plugin_and_its_child_are_killed_at_the_timeout(shared_dir, children):
    plugin = spawning_plugin(shared_dir, "sleep 300\n")
    with pytest.raises(CredentialsError, match=r"did not finish within 0\.5 s"):
        run_as_caller([str(plugin)], ME, {"PATH": "/usr/bin:/bin"}, "/", 0.5)
    children.append(int((shared_dir / "child").read_text()))
    assert gone_soon(children[0])


# --- stderr in the log -----------------------------------------------------------------------------------


def test_plugin_stderr_is_logged_labelled_escaped_and_bounded(shared_dir, caplog):
    lines = "".join(f"echo 'line {n}' >&2\n" for n in range(credentials.MAX_LOGGED_LINES + 5))
    forged = "printf 'evil\\033[2J\\rFAKE: root logged in\\n' >&2\n"
    plugin = script(shared_dir, "chatty", forged + lines + f"echo '{TOKEN}'\n")
    with caplog.at_level(logging.INFO, logger="tether.helper.kube"):
        run_as_caller([str(plugin)], ME, {"PATH": "/usr/bin:/bin"}, "/", 30)
    records = [r for r in caplog.records if "stderr" in r.getMessage()]
    assert all(f"'{plugin}' (uid {ME.uid}) stderr" in r.getMessage() for r in records)
    assert all((r.uid, r.command) == (ME.uid, str(plugin)) for r in records)
    # an escape sequence is shown, not played; a carriage return starts a line of its own, labelled too
    assert records[0].getMessage().endswith(f"'{plugin}' (uid {ME.uid}) stderr: evil\\x1b[2J")
    assert records[1].getMessage().endswith(f"'{plugin}' (uid {ME.uid}) stderr: FAKE: root logged in")
    assert len(records) == credentials.MAX_LOGGED_LINES + 1  # the lines, and how much was left out
    assert "the rest not logged" in records[-1].getMessage()


def test_a_huge_stderr_line_is_cut(caplog):
    with caplog.at_level(logging.INFO, logger="tether.helper.kube"):
        credentials.log_plugin_stderr("p", 1000, b"x" * 100_000)
    shown = [r.getMessage() for r in caplog.records]
    assert len(shown) == 2
    assert len(shown[0]) < credentials.MAX_LOGGED_STDERR + 100
    assert "100000 bytes in all" in shown[1]
