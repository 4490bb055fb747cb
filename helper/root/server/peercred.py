"""Read a unix-socket peer's credentials from the kernel.

One reader per platform, chosen from a plain table keyed by ``sys.platform``:

* Linux: ``SO_PEERCRED`` gives ``struct ucred {pid_t pid; uid_t uid; gid_t gid;}`` as of ``connect()``;
  the supplementary groups come from ``/proc/<pid>/status`` (``Groups:``), after checking that the
  process there still has the uid the kernel reported.
* macOS: ``LOCAL_PEERCRED`` (level ``SOL_LOCAL``) gives ``struct xucred {u_int cr_version; uid_t cr_uid;
  short cr_ngroups; gid_t cr_groups[NGROUPS];}`` whose first group is the effective gid; the pid comes
  from ``LOCAL_PEERPID``.

The struct parsers are pure functions so both layouts are tested on any machine.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class PeerCredentialsError(OSError):
    """The kernel did not tell us who the peer is (or the answer is inconsistent)."""


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


class _SockOpt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


# --- Linux -------------------------------------------------------------------------------------------

UCRED = struct.Struct("=iII")
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


def parse_ucred(data: bytes) -> tuple[int, int, int]:
    """(pid, uid, gid) from the bytes of a ``struct ucred``."""
    if len(data) < UCRED.size:
        raise PeerCredentialsError(f"SO_PEERCRED returned {len(data)} bytes, expected {UCRED.size}")
    pid, uid, gid = UCRED.unpack_from(data)
    return pid, uid, gid


def parse_proc_status(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(uids, groups) from the text of ``/proc/<pid>/status``: ``Uid:`` (real, effective, saved, fs) and ``Groups:``."""
    uids: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Uid":
            uids = tuple(int(v) for v in value.split())
        elif key == "Groups":
            groups = tuple(int(v) for v in value.split())
    return uids, groups


def linux_peer_credentials(sock: _SockOpt, proc: Path = Path("/proc")) -> PeerCredentials:
    pid, uid, gid = parse_ucred(sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, UCRED.size))
    if pid <= 0:
        raise PeerCredentialsError("the peer's pid is unknown (is it in another pid namespace?)")
    try:
        uids, groups = parse_proc_status((proc / str(pid) / "status").read_text())
    except (OSError, ValueError) as exc:
        raise PeerCredentialsError(f"cannot read the groups of pid {pid}: {exc}") from None
    if len(uids) < 2 or uids[1] != uid:
        raise PeerCredentialsError(f"pid {pid} no longer runs as uid {uid}; ask again")
    return PeerCredentials(pid=pid, uid=uid, gid=gid, groups=groups)


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
