"""One tray per user: the first one listens on a local socket, a later one passes it a message and exits.

The socket's name carries the uid, so users on one machine each get their own tray, and it sits in
``$XDG_RUNTIME_DIR`` when there is one (private to the user) rather than in /tmp. A socket file left by
a crashed tray is taken over: it is stale when nothing answers on it.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

SHOW_STATUS = "show-status"
CONNECT_TIMEOUT_MS = 1000
READ_TIMEOUT_MS = 500
MAX_MESSAGE = 1024


def default_name(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    user = str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()
    name = f"tether-tray-{user}"
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        return str(Path(runtime) / f"{name}.sock")
    return name  # Qt puts it in its temp directory (a named pipe on Windows)


class SingleInstance(QObject):
    messageReceived = Signal(str)

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or default_name()
        self.server: QLocalServer | None = None

    def _send(self, message: str) -> bool:
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
            return False
        socket.write((message + "\n").encode())
        socket.waitForBytesWritten(CONNECT_TIMEOUT_MS)
        socket.disconnectFromServer()
        return True

    def claim(self, message: str = SHOW_STATUS) -> bool:
        """True when this is the first instance (it now listens); else ``message`` went to the first one."""
        if self._send(message):
            return False
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # Either a stale socket file, or another tray started at the same moment and won.
            if self._send(message):
                return False
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                raise OSError(f"cannot listen on {self.name}: {server.errorString()}")
        server.newConnection.connect(self._accept)
        self.server = server
        return True

    def _accept(self) -> None:
        assert self.server is not None
        while (socket := self.server.nextPendingConnection()) is not None:
            # The other instance writes one line as soon as it connects, then hangs up: read it right here
            # rather than keeping the socket (and signal connections to it) alive for later.
            if socket.canReadLine() or socket.waitForReadyRead(READ_TIMEOUT_MS):
                line = bytes(socket.readLine(MAX_MESSAGE).data()).decode(errors="replace").strip()
                if line:
                    self.messageReceived.emit(line)
            socket.abort()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
