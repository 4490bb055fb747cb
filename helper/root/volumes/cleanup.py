"""Start-up cleanup of pod volume mounts a crashed helper left: the cleanup step for :data:`JOURNAL_KIND`.

For each journal record: unmount the mount point if an sshfs mount is still there (lazily: a process of the
user's may still sit in it), end the recorded sshfs if that very process (PID and start time) still runs,
and take away the directories the helper had created for it. Without a journal (sweeping), Tether's sshfs
mounts are found by their fsname marker in /proc/mounts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tether.helper.root.cleanup import register_cleanup
from tether.helper.root.journal import ExtraRecord, process_start_time
from tether.helper.root.volumes.mount import JOURNAL_KIND, is_sshfs_mount
from tether.helper.root.volumes.sshfs import tether_mounts, unmount_argv


def _mounts() -> str:
    try:
        return Path("/proc/self/mounts").read_text()
    except OSError:
        return ""


def _unmount(path: Path) -> str:
    done = subprocess.run(unmount_argv(path, lazy=True), capture_output=True, text=True, timeout=30)
    if done.returncode != 0 and is_sshfs_mount(path, _mounts()):
        raise OSError(f"cannot unmount {path}: {done.stderr.strip()}")
    return f"unmounted {path}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _end_sshfs(pid: int, start_time: int | None) -> bool:
    if pid <= 0 or start_time is None or process_start_time(pid) != start_time or _zombie(pid):
        return False  # gone (or exited, waiting for its parent), or the PID now belongs to another process
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def cleanup_mounts(records: Sequence[ExtraRecord]) -> list[str]:
    done = []
    for record in records:
        path = Path(str(record.data.get("path") or record.key))
        if is_sshfs_mount(path, _mounts()):
            done.append(_unmount(path))
        if _end_sshfs(int(record.data.get("pid") or 0), record.data.get("start_time")):
            done.append(f"ended sshfs (pid {record.data.get('pid')})")
        for directory in reversed([Path(p) for p in record.data.get("created") or []]):
            try:
                directory.rmdir()
            except OSError:
                break
            done.append(f"removed {directory}")
    if not records:  # sweeping: no journal says what was ours, the marker does
        done.extend(_unmount(path) for path in tether_mounts(_mounts()))
    return done


register_cleanup(JOURNAL_KIND, cleanup_mounts)
