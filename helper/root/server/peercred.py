"""Read a unix-socket peer's credentials from the kernel.

One reader per platform, chosen from a plain table keyed by ``sys.platform``:

* Linux: ``SO_PEERCRED`` gives ``struct ucred {pid_t pid; uid_t uid; gid_t gid;}`` and ``SO_PEERGROUPS``
  the supplementary groups, both as of ``connect()``. The pid is only for the log: a pid can be reused,
  so nothing is looked up by it.
* macOS: ``LOCAL_PEERCRED`` (level ``SOL_LOCAL``) gives ``struct xucred {u_int cr_version; uid_t cr_uid;
  short cr_ngroups; gid_t cr_groups[NGROUPS];}`` whose first group is the effective gid; the pid comes
  from ``LOCAL_PEERPID``.
* Windows: the helper's credentials endpoint is a named pipe, not a socket; ``peercred_windows`` reads the
  client's SID and groups from its token (the "win32" entry takes the pipe connection).

The struct parsers are pure functions so both layouts are tested on any machine.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class PeerCredentialsError(OSError):
    """The kernel did not tell us who the peer is (or the answer is inconsistent)."""


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    sid: str = ""  # Windows: the client's SID (uid is only its last part, see peercred_windows)


class _SockOpt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def fileno(self) -> int: ...


# --- Linux -------------------------------------------------------------------------------------------

UCRED = struct.Struct("=iII")
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
GID = struct.Struct("=I")
NGROUPS_MAX = 65536
# CPython's getsockopt() takes at most 1024 bytes (256 groups); a longer list is read through libc.
SOCKOPT_MAX = 1024


def parse_ucred(data: bytes) -> tuple[int, int, int]:
    """(pid, uid, gid) from the bytes of a ``struct ucred``."""
    if len(data) < UCRED.size:
        raise PeerCredentialsError(f"SO_PEERCRED returned {len(data)} bytes, expected {UCRED.size}")
    pid, uid, gid = UCRED.unpack_from(data)
    return pid, uid, gid


def parse_groups(data: bytes) -> tuple[int, ...]:
    """The gids in the bytes of an SO_PEERGROUPS answer (an array of ``gid_t``)."""
    if len(data) % GID.size:
        raise PeerCredentialsError(f"SO_PEERGROUPS returned {len(data)} bytes, not a whole number of gids")
    return tuple(gid for (gid,) in GID.iter_unpack(data))


def _getsockopt_libc(fd: int, level: int, optname: int, size: int) -> bytes:
    import ctypes  # only for the rare caller in more than 256 groups

    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    if libc.getsockopt(fd, level, optname, buffer, ctypes.byref(length)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buffer.raw[: length.value]


def linux_peer_groups(sock: _SockOpt) -> tuple[int, ...]:
    """The peer's supplementary groups as of ``connect()``, from the kernel (SO_PEERGROUPS, Linux 4.13)."""
    try:
        return parse_groups(sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, SOCKOPT_MAX))
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
    return parse_groups(_getsockopt_libc(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS, NGROUPS_MAX * GID.size))


def linux_peer_credentials(sock: _SockOpt) -> PeerCredentials:
    # uid, gid and groups all come from the socket, as the kernel recorded them at connect(): reading the
    # groups from /proc/<pid>/status instead would ask whichever process holds that pid now.
    pid, uid, gid = parse_ucred(sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, UCRED.size))
    return PeerCredentials(pid=pid, uid=uid, gid=gid, groups=linux_peer_groups(sock))


# --- macOS -------------------------------------------------------------------------------------------

SOL_LOCAL = 0
LOCAL_PEERCRED = 0x001
LOCAL_PEERPID = 0x002
XUCRED_VERSION = 0
XUCRED_NGROUPS = 16
# u_int cr_version, uid_t cr_uid, short cr_ngroups (+2 bytes padding), gid_t cr_groups[16]
XUCRED = struct.Struct(f"=IIh2x{XUCRED_NGROUPS}I")
PID = struct.Struct("=i")


def parse_xucred(data: bytes) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, groups) from the bytes of a macOS ``struct xucred``; gid is ``cr_groups[0]``."""
    if len(data) < XUCRED.size:
        raise PeerCredentialsError(f"LOCAL_PEERCRED returned {len(data)} bytes, expected {XUCRED.size}")
    version, uid, ngroups, *groups = XUCRED.unpack_from(data)
    if version != XUCRED_VERSION:
        raise PeerCredentialsError(f"unknown xucred version {version}")
    if not 1 <= ngroups <= XUCRED_NGROUPS:
        raise PeerCredentialsError(f"xucred carries {ngroups} groups")
    return uid, groups[0], tuple(groups[:ngroups])


def darwin_peer_credentials(sock: _SockOpt) -> PeerCredentials:
    uid, gid, groups = parse_xucred(sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, XUCRED.size))
    (pid,) = PID.unpack_from(sock.getsockopt(SOL_LOCAL, LOCAL_PEERPID, PID.size))
    return PeerCredentials(pid=pid, uid=uid, gid=gid, groups=groups)


# --- the table ---------------------------------------------------------------------------------------

READERS: dict[str, Callable[[_SockOpt], PeerCredentials]] = {
    "linux": linux_peer_credentials,
    "darwin": darwin_peer_credentials,
    "win32": lambda conn: importlib.import_module(f"{__package__}.peercred_windows").windows_peer_credentials(conn),
}


def peer_credentials(sock: _SockOpt, platform: str = sys.platform) -> PeerCredentials:
    """Who is on the other end of a connected AF_UNIX stream socket."""
    try:
        reader = READERS[platform]
    except KeyError:
        raise PeerCredentialsError(f"reading a socket peer's credentials is not implemented on {platform}") from None
    try:
        return reader(sock)
    except PeerCredentialsError:
        raise
    except OSError as exc:
        raise PeerCredentialsError(f"cannot read the peer's credentials: {exc}") from None
