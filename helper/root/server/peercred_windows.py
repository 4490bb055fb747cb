"""Who is on the other end of the helper's named pipe on Windows: the client's SID and groups.

Why a named pipe and not an AF_UNIX socket: Windows' AF_UNIX has no SO_PEERCRED; the only peer
query (SIO_AF_UNIX_GETPEERPID) gives a process id, and looking a token up by pid races with pid
reuse. A named pipe server can instead *impersonate* its client (``ImpersonateNamedPipeClient``) and
read the client's own access token (``OpenThreadToken``), which the kernel took from the client at
connect: no pid in between. ``GetNamedPipeClientProcessId`` is read only for the log, as on Linux.

From the token: ``GetTokenInformation(TokenUser)`` gives the user's SID, ``TokenGroups`` the groups.
The "tether" group is a local group; a caller is a member when the token carries the group's SID
enabled and not deny-only (what ``CheckTokenMembership`` decides, done here on the parsed groups so
the rule is testable). The pipe's own DACL (``pipe_sddl``) already lets only SYSTEM, Administrators
and that group open it; the token check is the second lock, as the socket mode and the helper's
checks are on Linux.

Mapping to ``PeerCredentials``: ``uid`` is the SID's last sub-authority (the RID) and 0 for
LocalSystem (S-1-5-18), which plays root's part; the full SID is in ``sid``. RIDs of two domains can
coincide (a local account and a domain account both 1001), so decisions that must tell accounts apart
use the SID.

The structure parsers read memory through ``ctypes`` only, so they are tested on any OS with
structures built in memory; the Win32 calls are made only on Windows.
"""

from __future__ import annotations

import ctypes
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tether.helper.root.server.peercred import PeerCredentials

__all__ = [
    "LOCAL_SYSTEM",
    "WindowsPeer",
    "parse_sid",
    "parse_token_groups",
    "pipe_sddl",
    "uid_for_sid",
]

LOCAL_SYSTEM = "S-1-5-18"
BUILTIN_ADMINISTRATORS = "S-1-5-32-544"
SE_GROUP_ENABLED = 0x4
SE_GROUP_USE_FOR_DENY_ONLY = 0x10
TOKEN_USER_CLASS = 1
TOKEN_GROUPS_CLASS = 2
TOKEN_QUERY = 0x8
_SID_RE = re.compile(r"^S-1-\d+(-\d+){1,15}$")


class WindowsIdentityError(OSError):
    """The client's token could not be read, or a SID is malformed."""


def parse_sid(data: bytes) -> str:
    """The string form ("S-1-5-21-...-1001") of a binary SID."""
    if len(data) < 8 or data[0] != 1:
        raise WindowsIdentityError(f"not a SID: {data[:16].hex()}")
    count = data[1]
    if len(data) < 8 + 4 * count:
        raise WindowsIdentityError(f"SID with {count} sub-authorities is truncated ({len(data)} bytes)")
    authority = int.from_bytes(data[2:8], "big")
    subs = struct.unpack_from(f"<{count}I", data, 8)
    return "-".join(["S", "1", str(authority), *map(str, subs)])


def sid_at(address: int) -> str:
    """The SID at a memory address (a PSID inside a token structure)."""
    head = ctypes.string_at(address, 2)
    return parse_sid(ctypes.string_at(address, 8 + 4 * head[1]))


class SID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = (("Sid", ctypes.c_void_p), ("Attributes", ctypes.c_uint32))


def parse_token_user(buffer: ctypes.Array[ctypes.c_char]) -> str:
    """The user's SID from a TOKEN_USER buffer (GetTokenInformation(TokenUser))."""
    entry = SID_AND_ATTRIBUTES.from_buffer(buffer)
    if not entry.Sid:
        raise WindowsIdentityError("TOKEN_USER without a SID")
    return sid_at(entry.Sid)


def parse_token_groups(buffer: ctypes.Array[ctypes.c_char]) -> tuple[tuple[str, int], ...]:
    """(SID, attributes) of every group in a TOKEN_GROUPS buffer (a count, then SID_AND_ATTRIBUTES[])."""
    count = ctypes.c_uint32.from_buffer(buffer).value
    offset = ctypes.sizeof(ctypes.c_void_p)  # GroupCount is padded to pointer alignment
    if offset + count * ctypes.sizeof(SID_AND_ATTRIBUTES) > len(buffer):
        raise WindowsIdentityError(f"TOKEN_GROUPS claims {count} groups in {len(buffer)} bytes")
    entries = (SID_AND_ATTRIBUTES * count).from_buffer(buffer, offset)
    return tuple((sid_at(e.Sid), int(e.Attributes)) for e in entries)


def validate_sid(sid: str) -> str:
    if not isinstance(sid, str) or not _SID_RE.match(sid):
        raise WindowsIdentityError(f"invalid SID {sid!r}")
    return sid


def uid_for_sid(sid: str) -> int:
    """0 for LocalSystem, else the RID (see the module docstring)."""
    validate_sid(sid)
    return 0 if sid == LOCAL_SYSTEM else int(sid.rsplit("-", 1)[1])


@dataclass(frozen=True)
class WindowsPeer:
    pid: int
    sid: str
    groups: tuple[tuple[str, int], ...]  # (SID, SE_GROUP_* attributes)

    def member_of(self, group_sid: str) -> bool:
        """What CheckTokenMembership answers: the group is in the token, enabled, not deny-only."""
        validate_sid(group_sid)
        return any(
            sid == group_sid and attrs & SE_GROUP_ENABLED and not attrs & SE_GROUP_USE_FOR_DENY_ONLY
            for sid, attrs in self.groups
        )

    @property
    def uid(self) -> int:
        return uid_for_sid(self.sid)

    @property
    def is_system(self) -> bool:
        return self.sid == LOCAL_SYSTEM


def pipe_sddl(group_sid: str) -> str:
    """The pipe's security descriptor: SYSTEM and Administrators full access, the group read/write, no one else.

    ``P`` protects the DACL from inheritance; no ACE for Everyone, so other users cannot even open it.
    """
    return f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;{validate_sid(group_sid)})"


# --- the Win32 calls (Windows only) ---------------------------------------------------------------------


def _token_information(advapi32: object, token: int, klass: int) -> ctypes.Array[ctypes.c_char]:
    size = ctypes.c_uint32(0)
    advapi32.GetTokenInformation(token, klass, None, 0, ctypes.byref(size))  # type: ignore[attr-defined]
    buffer = ctypes.create_string_buffer(size.value)
    if not advapi32.GetTokenInformation(token, klass, buffer, size, ctypes.byref(size)):  # type: ignore[attr-defined]
        raise WindowsIdentityError(ctypes.get_last_error(), "GetTokenInformation failed")  # type: ignore[attr-defined]
    return buffer


def pipe_client(pipe: int) -> WindowsPeer:
    """The identity of the client connected to the server end ``pipe`` (a HANDLE). Windows only."""
    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        raise WindowsIdentityError("named pipe clients can be identified only on Windows")
    kernel32 = win_dll("kernel32", use_last_error=True)
    advapi32 = win_dll("advapi32", use_last_error=True)
    pid = ctypes.c_uint32(0)
    kernel32.GetNamedPipeClientProcessId(ctypes.c_void_p(pipe), ctypes.byref(pid))
    if not advapi32.ImpersonateNamedPipeClient(ctypes.c_void_p(pipe)):
        raise WindowsIdentityError(ctypes.get_last_error(), "ImpersonateNamedPipeClient failed")  # type: ignore[attr-defined]
    token = ctypes.c_void_p()
    try:
        opened = advapi32.OpenThreadToken(kernel32.GetCurrentThread(), TOKEN_QUERY, True, ctypes.byref(token))
    finally:
        # Back to the helper's own identity before anything else runs on this thread.
        if not advapi32.RevertToSelf():
            raise SystemExit("RevertToSelf failed: the helper must not go on as its client")
    if not opened:
        raise WindowsIdentityError(ctypes.get_last_error(), "OpenThreadToken failed")  # type: ignore[attr-defined]
    try:
        sid = parse_token_user(_token_information(advapi32, token.value or 0, TOKEN_USER_CLASS))
        groups = parse_token_groups(_token_information(advapi32, token.value or 0, TOKEN_GROUPS_CLASS))
    finally:
        kernel32.CloseHandle(token)
    return WindowsPeer(pid=pid.value, sid=sid, groups=groups)


class PipeConnection(Protocol):
    """What the pipe server hands to ``windows_peer_credentials``: the connected pipe and the group's SID."""

    pipe_handle: int
    group_sid: str


def credentials_for(peer: WindowsPeer, group_sid: str) -> PeerCredentials:
    """``PeerCredentials`` for a pipe client; refuses one outside the group (SYSTEM is always let in)."""
    from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError

    if not peer.is_system and not peer.member_of(group_sid):
        raise PeerCredentialsError(f"{peer.sid} is not a member of the group {group_sid}")
    enabled = tuple(
        uid_for_sid(sid)
        for sid, attrs in peer.groups
        if attrs & SE_GROUP_ENABLED and not attrs & SE_GROUP_USE_FOR_DENY_ONLY and _SID_RE.match(sid)
    )
    return PeerCredentials(pid=peer.pid, uid=peer.uid, gid=uid_for_sid(group_sid), groups=enabled, sid=peer.sid)


def windows_peer_credentials(conn: PipeConnection) -> PeerCredentials:
    return credentials_for(pipe_client(conn.pipe_handle), conn.group_sid)
