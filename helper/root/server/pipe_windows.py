"""The helper's local endpoint on Windows: a named pipe hands out tokens, gRPC listens on loopback TCP.

Why this split: gRPC for Python serves ``unix:`` addresses only on POSIX (AF_UNIX on Windows is not
supported by grpcio's Windows build), and not on named pipes at all; loopback TCP is what it serves
everywhere. Loopback TCP has no peer identity, so, exactly as on Linux, every call must carry a token,
and the token is handed out where the caller's identity is known: the named pipe
``\\\\.\\pipe\\tether-helper-auth`` (``AUTH_PIPE``). Its DACL (``pipe_sddl``) admits SYSTEM,
Administrators and the "tether" local group; the client is identified from its own token
(``peercred_windows``). The reply is the Linux one plus ``grpc_target``, the loopback address and the
port gRPC was given (port 0: the OS picks a free one, so no other program can hold it in advance).

The first pipe instance is created with FILE_FLAG_FIRST_PIPE_INSTANCE, so the helper refuses to start
when another process already owns the name, and PIPE_REJECT_REMOTE_CLIENTS keeps it local. One thread
serves the pipe, one client at a time (each exchange is one short line).
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.helper.api.paths import AUTH_PIPE
from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError
from tether.helper.root.server.peercred_windows import pipe_sddl, validate_sid, windows_peer_credentials

log = logging.getLogger("tether.helper.api")

GRPC_LISTEN = "127.0.0.1:0"
PIPE_ACCESS_DUPLEX = 0x3
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
PIPE_TYPE_BYTE = 0x0
PIPE_WAIT = 0x0
PIPE_REJECT_REMOTE_CLIENTS = 0x8
BUFFER = 4096
INVALID_HANDLE = ctypes.c_void_p(-1).value
ERROR_PIPE_CONNECTED = 535

Issue = Callable[[PeerCredentials], dict[str, object]]


def grpc_target(bound_port: int) -> str:
    """The address clients dial, given the port ``add_insecure_port(GRPC_LISTEN)`` returned."""
    if not 0 < bound_port < 65536:
        raise ValueError(f"gRPC did not bind a port (got {bound_port})")
    return f"127.0.0.1:{bound_port}"


def reply_line(issue: Issue, identify: Callable[[], PeerCredentials], target: str) -> bytes:
    """The one JSON line a pipe client gets: a token and the gRPC target, or why it got none."""
    try:
        creds = identify()
    except PeerCredentialsError as exc:
        log.warning("cannot identify a client", extra={"error": str(exc)})
        return json.dumps({"error": f"the helper could not identify you: {exc}"}).encode() + b"\n"
    return json.dumps({**issue(creds), "grpc_target": target}).encode() + b"\n"


@dataclass
class _Connection:
    pipe_handle: int
    group_sid: str


class AuthPipeServer:
    """Serves ``AUTH_PIPE`` on a thread (Windows only; see the module docstring)."""

    def __init__(self, issue: Issue, group_sid: str, target: str, name: str = AUTH_PIPE) -> None:
        self.issue = issue
        self.group_sid = validate_sid(group_sid)
        self.target = target
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first = True
        win_dll = getattr(ctypes, "WinDLL", None)
        if win_dll is None:
            raise OSError("named pipes exist only on Windows")
        self._k32: Any = win_dll("kernel32", use_last_error=True)
        self._adv: Any = win_dll("advapi32", use_last_error=True)
        self._sd = ctypes.c_void_p()
        if not self._adv.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            pipe_sddl(self.group_sid), 1, ctypes.byref(self._sd), None
        ):
            raise OSError(ctypes.get_last_error(), "ConvertStringSecurityDescriptorToSecurityDescriptorW failed")  # type: ignore[attr-defined]

    def _create(self) -> int:
        class SecurityAttributes(ctypes.Structure):
            _fields_ = (
                ("nLength", ctypes.c_uint32),
                ("lpSecurityDescriptor", ctypes.c_void_p),
                ("bInherit", ctypes.c_int),
            )

        attrs = SecurityAttributes(ctypes.sizeof(SecurityAttributes), self._sd, 0)
        mode = PIPE_ACCESS_DUPLEX | (FILE_FLAG_FIRST_PIPE_INSTANCE if self._first else 0)
        self._k32.CreateNamedPipeW.restype = ctypes.c_void_p
        handle = self._k32.CreateNamedPipeW(
            self.name,
            mode,
            PIPE_TYPE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            255,
            BUFFER,
            BUFFER,
            0,
            ctypes.byref(attrs),
        )
        if handle in (None, INVALID_HANDLE):
            raise OSError(ctypes.get_last_error(), f"cannot create {self.name} (is another helper running?)")  # type: ignore[attr-defined]
        self._first = False
        return int(handle)

    def start(self) -> None:
        first = self._create()  # fail here, in the caller, when the name is taken
        self._thread = threading.Thread(target=self._serve, args=(first,), name="tether-auth-pipe", daemon=True)
        self._thread.start()

    def _serve(self, handle: int) -> None:
        while not self._stop.is_set():
            try:
                connected = self._k32.ConnectNamedPipe(ctypes.c_void_p(handle), None)
                ready = connected or ctypes.get_last_error() == ERROR_PIPE_CONNECTED  # type: ignore[attr-defined]
                if ready and not self._stop.is_set():
                    conn = _Connection(handle, self.group_sid)
                    line = reply_line(self.issue, lambda c=conn: windows_peer_credentials(c), self.target)
                    written = ctypes.c_uint32(0)
                    self._k32.WriteFile(ctypes.c_void_p(handle), line, len(line), ctypes.byref(written), None)
                    self._k32.FlushFileBuffers(ctypes.c_void_p(handle))
                self._k32.DisconnectNamedPipe(ctypes.c_void_p(handle))
            except Exception:
                log.exception("the credentials pipe failed on one client")
        self._k32.CloseHandle(ctypes.c_void_p(handle))

    def stop(self) -> None:
        self._stop.set()
        # Wake the thread out of ConnectNamedPipe by connecting once ourselves.
        self._k32.CreateFileW.restype = ctypes.c_void_p
        handle = self._k32.CreateFileW(self.name, 0x80000000, 0, None, 3, 0, None)
        if handle not in (None, INVALID_HANDLE):
            self._k32.CloseHandle(ctypes.c_void_p(handle))
        if self._thread is not None:
            self._thread.join(2)
        self._k32.LocalFree(self._sd)
