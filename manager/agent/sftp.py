"""The agent's SFTP service: the pod's volumes (the tree the injector mounted under /tether/volumes), served
to Tether clients on the pod's loopback only.

Each connection gets an OpenSSH ``sftp-server`` (Debian's openssh-sftp-server) with the socket as its stdin
and stdout: plain SFTP, no SSH around it, which is what sshfs speaks with ``-o passive``. No SSH layer is
needed because the connection never crosses a network in the clear: the only way in from outside the pod is
a flow that a client asks the manager for, through this workload (the --proxy-via path), which the agent
dials to its own loopback; the manager checked the client's session before that. Listening on 127.0.0.1,
never the pod IP, keeps the volumes away from the rest of the cluster.

``sftp-server -d ROOT`` starts each session in ROOT, so a client that mounts the relative path ``""`` sees
the volumes; ``-e`` logs to stderr (the agent's log). Without the binary, or without the tree (a pod whose
app mounts nothing), there is nothing to serve and the service stays off, saying so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("tether.agent.sftp")

#: Where distributions put OpenSSH's sftp-server (it is not on PATH).
SFTP_SERVER_PATHS = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/libexec/sftp-server",  # macOS, Alpine
    "/usr/lib/ssh/sftp-server",  # Arch
)


def find_sftp_server(candidates: Sequence[str] = SFTP_SERVER_PATHS) -> str | None:
    """The first executable sftp-server among ``candidates``, else one on PATH, else None."""
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sftp-server")


def server_argv(binary: str, root: Path) -> list[str]:
    """One session's sftp-server: started in ``root``, logging to stderr."""
    return [binary, "-e", "-d", str(root)]


class SftpService:
    """Accepts on 127.0.0.1:``port`` and runs one sftp-server per connection until :meth:`close`."""

    def __init__(self, root: Path, port: int, binary: str, host: str = "127.0.0.1") -> None:
        self.root = root
        self.port = port
        self.binary = binary
        self.host = host
        self.sessions = 0  # connections served, for logs and tests
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._children: set[asyncio.subprocess.Process] = set()

    async def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(16)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = asyncio.ensure_future(self._accept(listener))
        log.info("serving the pod's volumes with SFTP", extra={"root": str(self.root), "port": self.port})

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            with conn:
                conn.setblocking(True)
                try:
                    child = await asyncio.create_subprocess_exec(
                        *server_argv(self.binary, self.root), stdin=conn.fileno(), stdout=conn.fileno()
                    )
                except OSError as exc:
                    log.warning("cannot start %s: %s", self.binary, exc)
                    continue
            # our copy of the socket is closed: the session ends when sftp-server or the client does
            self.sessions += 1
            self._children.add(child)
            asyncio.ensure_future(child.wait()).add_done_callback(lambda _, c=child: self._children.discard(c))

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        for child in list(self._children):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), 2)


async def start_sftp(root: Path, port: int) -> SftpService | None:
    """The SFTP service for ``root``, started; None (logged) when there is nothing to serve or no server."""
    if port <= 0:
        return None
    if not root.is_dir():
        log.info("no volumes to serve (%s is not a directory)", root)
        return None
    binary = find_sftp_server()
    if binary is None:
        log.warning("cannot serve the pod's volumes: no sftp-server (install openssh-sftp-server)")
        return None
    service = SftpService(root, port, binary)
    try:
        await service.start()
    except OSError as exc:
        log.warning("cannot serve the pod's volumes on 127.0.0.1:%d: %s", port, exc)
        return None
    return service
