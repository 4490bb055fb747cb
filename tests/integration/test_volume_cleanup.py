"""A helper that dies with pod volumes mounted (SIGKILL, no unmount): the next start's cleanup unmounts what
is left, ends nothing it should not, and takes away the mount point it made. No cluster: the SFTP service is
the agent's own, on this machine's loopback; the helper is a stand-in process (volume_mounter.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tether.helper.root import cleanup
from tether.helper.root.journal import read_journal
from tether.helper.root.volumes.mount import is_sshfs_mount
from tether.manager.agent.sftp import SftpService, find_sftp_server

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("sshfs") or not find_sftp_server() or not Path("/dev/fuse").exists(),
    reason="needs root, sshfs, sftp-server and /dev/fuse",
)


@pytest.fixture
def sftp(tmp_path):
    """The agent's SFTP service on 127.0.0.1 (an ephemeral port) serving tmp_path/src, on a loop thread."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("from the pod\n")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    service = SftpService(src, 0, find_sftp_server() or "")
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(10)
    yield service
    asyncio.run_coroutine_threadsafe(service.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _start_mounter(port: int, journal: Path) -> tuple[subprocess.Popen[str], Path, int]:
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/integration/volume_mounter.py"), str(port), "", str(journal)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line, f"the mounter exited with {child.wait(10)}"
    path, sshfs_pid = Path(line[0]), int(line[1])
    assert (path / "hello.txt").read_text() == "from the pod\n"
    return child, path, sshfs_pid


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return True
        time.sleep(0.05)
    return False


def test_cleanup_unmounts_what_a_killed_helper_and_its_sshfs_left(sftp, tmp_path):
    journal = tmp_path / "journal.json"
    child, path, sshfs_pid = _start_mounter(sftp.port, journal)
    os.killpg(child.pid, signal.SIGKILL)  # the helper's whole group, as a service manager kills it
    child.wait(10)
    assert _gone(sshfs_pid)
    assert is_sshfs_mount(path)  # nobody unmounted it: a dead FUSE mount stays

    report = cleanup.run(journal, sweep=False)

    assert report.ok, report.errors
    assert f"volume-mount: unmounted {path}" in report.removed
    assert not is_sshfs_mount(path) and not path.exists()
    assert read_journal(journal) is None  # undone, so the journal went too


def test_cleanup_after_a_killed_helper_whose_sshfs_went_by_itself(sftp, tmp_path):
    journal = tmp_path / "journal.json"
    child, path, sshfs_pid = _start_mounter(sftp.port, journal)
    os.kill(child.pid, signal.SIGKILL)  # the helper only: sshfs hears end of file, unmounts and exits
    child.wait(10)
    assert _gone(sshfs_pid)
    assert not is_sshfs_mount(path)
    [record] = read_journal(journal).records

    report = cleanup.run(journal, sweep=False)

    assert report.ok, report.errors
    assert report.removed == [f"volume-mount: removed {path}"], report.removed
    assert not path.exists() and record.data["path"] == str(path)
