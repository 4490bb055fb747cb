"""Windows caller identity: SIDs and token structures parsed from memory, the group rule, the pipe's DACL."""

from __future__ import annotations

import ctypes
import struct

import pytest

from tether.helper.root.server.peercred import READERS, PeerCredentialsError, peer_credentials
from tether.helper.root.server.peercred_windows import (
    SE_GROUP_ENABLED,
    SE_GROUP_USE_FOR_DENY_ONLY,
    SID_AND_ATTRIBUTES,
    WindowsIdentityError,
    WindowsPeer,
    credentials_for,
    parse_sid,
    parse_token_groups,
    parse_token_user,
    pipe_sddl,
    uid_for_sid,
)

USER = "S-1-5-21-3623811015-3361044348-30300820-1013"
TETHER = "S-1-5-21-3623811015-3361044348-30300820-1020"
ADMINS = "S-1-5-32-544"


def sid_bytes(sid: str) -> bytes:
    _s, _one, authority, *subs = sid.split("-")
    return bytes([1, len(subs)]) + int(authority).to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *map(int, subs))


class Memory:
    """SIDs and token structures laid out in this process's memory, as GetTokenInformation fills them."""

    def __init__(self) -> None:
        self.keep: list[object] = []

    def sid(self, sid: str) -> int:
        buffer = ctypes.create_string_buffer(sid_bytes(sid))
        self.keep.append(buffer)
        return ctypes.addressof(buffer)

    def token_user(self, sid: str) -> ctypes.Array[ctypes.c_char]:
        buffer = ctypes.create_string_buffer(ctypes.sizeof(SID_AND_ATTRIBUTES))
        entry = SID_AND_ATTRIBUTES.from_buffer(buffer)
        entry.Sid, entry.Attributes = self.sid(sid), 0
        return buffer

    def token_groups(self, groups: list[tuple[str, int]]) -> ctypes.Array[ctypes.c_char]:
        header = ctypes.sizeof(ctypes.c_void_p)
        buffer = ctypes.create_string_buffer(header + len(groups) * ctypes.sizeof(SID_AND_ATTRIBUTES))
        ctypes.c_uint32.from_buffer(buffer).value = len(groups)
        entries = (SID_AND_ATTRIBUTES * len(groups)).from_buffer(buffer, header)
        for entry, (sid, attrs) in zip(entries, groups, strict=True):
            entry.Sid, entry.Attributes = self.sid(sid), attrs
        return buffer


@pytest.mark.parametrize("sid", [USER, "S-1-5-18", ADMINS, "S-1-1-0"])
def test_parse_sid_round_trips(sid):
    assert parse_sid(sid_bytes(sid)) == sid


@pytest.mark.parametrize("data", [b"", b"\x02\x01" + bytes(10), bytes([1, 5]) + bytes(10)])
def test_parse_sid_refuses_what_is_not_a_sid(data):
    with pytest.raises(WindowsIdentityError):
        parse_sid(data)


def test_token_structures_are_read_through_their_pointers():
    memory = Memory()
    assert parse_token_user(memory.token_user(USER)) == USER
    groups = [(TETHER, SE_GROUP_ENABLED), (ADMINS, SE_GROUP_USE_FOR_DENY_ONLY)]
    assert parse_token_groups(memory.token_groups(groups)) == tuple(groups)


def test_a_token_groups_count_beyond_the_buffer_is_refused():
    buffer = Memory().token_groups([(TETHER, SE_GROUP_ENABLED)])
    ctypes.c_uint32.from_buffer(buffer).value = 50
    with pytest.raises(WindowsIdentityError, match="claims 50 groups"):
        parse_token_groups(buffer)


@pytest.mark.parametrize(
    ("attrs", "member"),
    [(SE_GROUP_ENABLED, True), (0, False), (SE_GROUP_ENABLED | SE_GROUP_USE_FOR_DENY_ONLY, False)],
)
def test_membership_needs_the_group_enabled_and_not_deny_only(attrs, member):
    assert WindowsPeer(7, USER, ((TETHER, attrs),)).member_of(TETHER) is member


def test_credentials_for_a_member_carry_the_sid_and_rid():
    peer = WindowsPeer(4321, USER, ((TETHER, SE_GROUP_ENABLED), (ADMINS, SE_GROUP_USE_FOR_DENY_ONLY)))
    creds = credentials_for(peer, TETHER)
    assert (creds.pid, creds.uid, creds.gid, creds.groups, creds.sid) == (4321, 1013, 1020, (1020,), USER)


def test_a_non_member_is_refused_naming_the_sid_and_system_is_root():
    with pytest.raises(PeerCredentialsError, match=f"{USER} is not a member of the group {TETHER}"):
        credentials_for(WindowsPeer(1, USER, ((ADMINS, SE_GROUP_ENABLED),)), TETHER)
    assert credentials_for(WindowsPeer(4, "S-1-5-18", ()), TETHER).uid == 0


def test_uid_for_sid_refuses_malformed_sids():
    with pytest.raises(WindowsIdentityError, match="invalid SID"):
        uid_for_sid("S-1-5-x")


def test_the_pipe_dacl_admits_system_administrators_and_the_group_only():
    assert pipe_sddl(TETHER) == f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;{TETHER})"
    with pytest.raises(WindowsIdentityError):
        pipe_sddl("S-1-5;(A;;GA;;;WD)")


def test_the_table_has_a_windows_reader_that_needs_windows():
    assert "win32" in READERS

    class Conn:
        pipe_handle = 5
        group_sid = TETHER

    with pytest.raises(PeerCredentialsError, match="only on Windows"):
        peer_credentials(Conn(), "win32")  # type: ignore[arg-type]
