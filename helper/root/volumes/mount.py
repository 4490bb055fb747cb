"""Mount a workload's pod volumes here: :func:`mount_pod_volumes`, and :meth:`VolumeMount.unmount`.

The way there: a tunnel stream to 127.0.0.1:SFTP_PORT dialed by the workload's agent from inside its pod (the
--proxy-via path: :meth:`TunnelOpener.open_via`), where the agent serves the volumes with SFTP
(:mod:`tether.manager.agent.sftp`); at this end an sshfs in passive mode whose stdin and stdout are one end of
a socket pair, the other end pumped to and from the stream. Independent of how an intercept works: whoever
holds the helper's tunnel opener and knows the workload can mount (see :func:`agent_stream`).

Every mount is written in the helper's journal (kind :data:`JOURNAL_KIND`) before sshfs starts and taken out
after it is unmounted, so that the start-up cleanup of a helper that crashed unmounts it
(:mod:`tether.helper.root.volumes.cleanup`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.helper.root.journal import Journal, process_start_time
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.vif.flowstream import FlowProtocol, Refused
from tether.helper.root.volumes import mountdir
from tether.helper.root.volumes.sshfs import FSTYPE, Owner, fsname, parse_mounts, sshfs_argv, unmount_argv
from tether.manager.api.volumes import SFTP_PORT

log = logging.getLogger("tether.helper.root.volumes")

JOURNAL_KIND = "volume-mount"
CLEANUP_MODULE = "tether.helper.root.volumes.cleanup"
LOOPBACK = ipaddress.ip_address("127.0.0.1")
MOUNT_TIMEOUT = 20.0
_READ = 256 * 1024

#: (namespace, name, kind) of a workload
WorkloadRef = tuple[str, str, str]
#: A new stream to the agent's SFTP service (started: its open is on the way).
OpenStream = Callable[[], Any]


class VolumeMountError(Exception):
    """The volumes could not be mounted; the text names the workload or the mount point, and why."""


def agent_stream(opener: TunnelOpener, workload: WorkloadRef, port: int = SFTP_PORT) -> OpenStream:
    """Streams to the agent's SFTP port on its pod's loopback, dialed by that workload's agent."""
    return lambda: opener.open_via(FlowProtocol.TCP, (LOOPBACK, 0), (LOOPBACK, port), workload)


def journal_data(path: Path, pid: int, created: tuple[Path, ...], workload: WorkloadRef) -> dict[str, Any]:
    """What the journal keeps of a mount: enough to unmount it, end its sshfs and take away its directory."""
    return {
        "path": str(path),
        "pid": pid,
        "start_time": process_start_time(pid),
        "created": [str(p) for p in created],
        "workload": "/".join(workload),
    }


def is_sshfs_mount(path: Path, mounts: str | None = None) -> bool:
    if mounts is None:
        mounts = Path("/proc/self/mounts").read_text()
    return any(Path(point) == path and kind == FSTYPE for _, point, kind in parse_mounts(mounts))


@dataclass
class VolumeMount:
    """A pod's volumes mounted at ``path`` (for as long as :meth:`unmount` has not run)."""

    workload: WorkloadRef
    path: Path
    process: asyncio.subprocess.Process
    mount_dir: mountdir.MountDir
    journal: Journal | None = None
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _socket: socket.socket | None = None
    _stream: Any = None
    _done: bool = False

    @property
    def source(self) -> str:
        return fsname(self.workload[0], self.workload[1])

    @property
    def alive(self) -> bool:
        """Whether sshfs still runs (it exits, unmounting, when the stream to the agent ends)."""
        return not self._done and self.process.returncode is None

    async def unmount(self) -> None:
        """Unmount (lazily when something still uses it), end sshfs, close the stream, take away the
        directories made for the mount and the journal record. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            if is_sshfs_mount(self.path) and await _run(unmount_argv(self.path)) != 0:
                log.info("%s is busy: unmounting it lazily", self.path)
                await _run(unmount_argv(self.path, lazy=True))
            await _end(self.process)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            if self._socket is not None:
                self._socket.close()
            if self._stream is not None:
                self._stream.close()
            if not is_sshfs_mount(self.path):
                mountdir.remove_created(self.mount_dir)
                if self.journal is not None:
                    self.journal.remove_record(JOURNAL_KIND, str(self.path))
        log.info("unmounted the volumes of %s from %s", "/".join(self.workload), self.path)


async def mount_pod_volumes(
    open_stream: OpenStream,
    workload: WorkloadRef,
    target: str,
    owner: Owner,
    journal: Journal | None = None,
    timeout: float = MOUNT_TIMEOUT,
    sshfs: str = "sshfs",
) -> VolumeMount:
    """Mount the volumes of ``workload``'s pod at ``target`` (a new temporary directory when empty) for
    ``owner``; ``open_stream`` gives streams to its agent's SFTP service (:func:`agent_stream`).
    Raises VolumeMountError (nothing left behind) when the mount point is unusable, the agent cannot be
    reached, or sshfs fails."""
    name = "/".join(workload[:2])
    try:
        mount_dir = mountdir.prepare(target, owner)
    except (mountdir.MountDirError, OSError) as exc:
        raise VolumeMountError(str(exc)) from None
    stream = None
    mount: VolumeMount | None = None
    try:
        stream = open_stream()
        opened = await asyncio.wait_for(stream.opened(), timeout)
        if isinstance(opened, Refused):
            raise VolumeMountError(
                f"the agent of {name} cannot reach its SFTP service (127.0.0.1:{SFTP_PORT} in the pod): "
                f"{opened.detail or opened.reason.value}"
            )
        ours, theirs = socket.socketpair()
        with theirs:
            process = await asyncio.create_subprocess_exec(
                *sshfs_argv(mount_dir.path, owner, fsname(*workload[:2]), sshfs),
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=asyncio.subprocess.PIPE,
            )
        mount = VolumeMount(workload, mount_dir.path, process, mount_dir, journal, _socket=ours, _stream=stream)
        stream = None  # the mount closes it now
        if journal is not None:
            data = journal_data(mount_dir.path, process.pid, mount_dir.created, workload)
            journal.add_record(JOURNAL_KIND, str(mount_dir.path), data, module=CLEANUP_MODULE)
        ours.setblocking(False)
        mount._tasks += [
            asyncio.ensure_future(_pump_out(ours, mount._stream)),
            asyncio.ensure_future(_pump_in(mount._stream, ours)),
            asyncio.ensure_future(_collect(process, mount.stderr)),
        ]
        await _wait_mounted(mount, timeout)
    except BaseException as exc:
        if mount is not None:
            await mount.unmount()
        else:
            if stream is not None:
                stream.close()
            mountdir.remove_created(mount_dir)
        if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
            raise VolumeMountError(f"mounting the volumes of {name} at {mount_dir.path}: {exc}") from None
        raise
    log.info("mounted the volumes of %s at %s", name, mount.path)
    return mount


async def _wait_mounted(mount: VolumeMount, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not is_sshfs_mount(mount.path):
        if mount.process.returncode is not None:
            await asyncio.sleep(0.05)  # the last lines of its stderr
            said = "; ".join(mount.stderr) or "no message"
            raise VolumeMountError(
                f"sshfs could not mount the volumes of {'/'.join(mount.workload[:2])} at {mount.path} "
                f"(exit {mount.process.returncode}): {said}"
            )
        if loop.time() > deadline:
            raise VolumeMountError(f"sshfs did not mount {mount.path} within {timeout:g}s")
        await asyncio.sleep(0.05)


async def _pump_out(sock: socket.socket, stream: Any) -> None:
    """sshfs -> the agent."""
    loop = asyncio.get_running_loop()
    while data := await loop.sock_recv(sock, _READ):
        await stream.write(data)
    await stream.write_eof()


async def _pump_in(stream: Any, sock: socket.socket) -> None:
    """The agent -> sshfs; when the agent's side ends, sshfs hears end of file (and exits, unmounting)."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            item = await stream.read()
            if not isinstance(item, bytes):
                log.info("the SFTP stream ended: %s", item)
                break
            await loop.sock_sendall(sock, item)
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


async def _collect(process: asyncio.subprocess.Process, lines: collections.deque[str]) -> None:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        text = line.decode(errors="replace").rstrip()
        lines.append(text)
        log.info("sshfs: %s", text)


async def _run(argv: list[str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode:
        log.info("%s: %s", " ".join(argv), err.decode(errors="replace").strip())
    return process.returncode or 0


async def _end(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """sshfs exits once unmounted; if it does not, it is ended (by this PID, our own child)."""
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
