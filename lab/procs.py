"""Starting the lab's processes inside namespaces, and ending them by PID.

A PID alone is not an identity (PIDs are reused), so records keep the process start time too.
Processes are started in a new session, detached from the caller, so they outlive `tether lab up`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tether.lab.journal import ProcessRecord
from tether.lab.netns import exec_argv

# Children started by this process, so they can be reaped (no zombies) and their exit codes read.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int | None = None) -> bool:
    """True if pid exists, is not a zombie, and (when given) started at `started`."""
    _reap(pid)
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def exit_code(pid: int) -> int | None:
    child = _children.get(pid)
    return child.poll() if child is not None else None


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def protected_pids() -> set[int]:
    """This process and its ancestors: never signalled, even if they sit in a lab namespace."""
    pids = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        fields = _stat(pid)
        pid = int(fields[1]) if fields else 0
    return pids


def start(
    name: str,
    netns: str,
    argv: Iterable[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_file: str = "",
    host_mounts: bool = False,
) -> ProcessRecord:
    """Start argv inside netns (through `ip netns exec`, so /etc/netns/NS/resolv.conf applies; see
    netns.exec_argv for host_mounts)."""
    full_env = dict(os.environ)
    full_env.pop("KUBECONFIG", None)
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    argv = list(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            exec_argv(netns, argv, host_mounts),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    started = start_time(proc.pid) or 0
    return ProcessRecord(name, netns, proc.pid, started, argv, str(log), ready_file)


def terminate(pids: Iterable[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the PIDs that would not go away."""
    keep = protected_pids()
    targets = {p: start_time(p) for p in set(pids) - keep}
    targets = {p: s for p, s in targets.items() if s is not None}
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    remaining = _wait_gone(targets, grace)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return _wait_gone({p: targets[p] for p in remaining}, 3.0)


def _wait_gone(targets: Mapping[int, int | None], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p, s in targets.items() if is_running(p, s)]
        if not alive or time.monotonic() >= deadline:
            for pid in targets:
                _reap(pid)
            return alive
        time.sleep(0.02)
