"""Peer credentials: struct layouts of Linux (ucred) and macOS (xucred), and the real thing here."""

import os
import socket
import struct
import sys

import pytest

from tether.helper.root.server import peercred
from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError


def test_parse_ucred():
    assert peercred.parse_ucred(struct.pack("=iII", 4242, 1000, 1001)) == (4242, 1000, 1001)
    with pytest.raises(PeerCredentialsError, match="expected 12"):
        peercred.parse_ucred(b"\0" * 8)


def test_parse_proc_status():
    text = "Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 998 \n"
    assert peercred.parse_proc_status(text) == ((1000, 1000, 1000, 1000), (4, 24, 27, 998))
    assert peercred.parse_proc_status("Uid:\t0\t0\t0\t0\nGroups:\t\n") == ((0, 0, 0, 0), ())


def xucred(uid: int, groups: list[int], version: int = 0) -> bytes:
    padded = groups + [0] * (16 - len(groups))
    return struct.pack("=IIh2x16I", version, uid, len(groups), *padded)


def test_xucred_layout_is_76_bytes():
    assert peercred.XUCRED.size == 76


def test_parse_xucred():
    assert peercred.parse_xucred(xucred(501, [20, 12, 61, 79])) == (501, 20, (20, 12, 61, 79))
    with pytest.raises(PeerCredentialsError, match="unknown xucred version 3"):
        peercred.parse_xucred(xucred(501, [20], version=3))
    with pytest.raises(PeerCredentialsError, match="carries 0 groups"):
        peercred.parse_xucred(xucred(501, []))
    with pytest.raises(PeerCredentialsError, match="expected 76"):
        peercred.parse_xucred(b"\0" * 40)


class FakeDarwinSocket:
    def __init__(self, creds: bytes, pid: int) -> None:
        self.answers = {
            (peercred.SOL_LOCAL, peercred.LOCAL_PEERCRED): creds,
            (peercred.SOL_LOCAL, peercred.LOCAL_PEERPID): struct.pack("=i", pid),
        }

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes:
        return self.answers[(level, optname)][:buflen]


def test_darwin_reader_from_the_platform_table():
    sock = FakeDarwinSocket(xucred(501, [20, 80]), pid=777)
    assert peercred.peer_credentials(sock, platform="darwin") == PeerCredentials(
        pid=777, uid=501, gid=20, groups=(20, 80)
    )


class FakeLinuxSocket:
    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.data = struct.pack("=iII", pid, uid, gid)

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes:
        assert (level, optname) == (socket.SOL_SOCKET, peercred.SO_PEERCRED)
        return self.data


def test_linux_reader_reads_groups_from_proc(tmp_path):
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "status").write_text("Uid:\t1000\t1000\t1000\t1000\nGroups:\t1000 998\n")
    creds = peercred.linux_peer_credentials(FakeLinuxSocket(4242, 1000, 1000), proc=tmp_path)
    assert creds == PeerCredentials(pid=4242, uid=1000, gid=1000, groups=(1000, 998))


def test_linux_reader_refuses_a_process_with_another_uid(tmp_path):
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "status").write_text("Uid:\t0\t0\t0\t0\nGroups:\t0\n")
    with pytest.raises(PeerCredentialsError, match="no longer runs as uid 1000"):
        peercred.linux_peer_credentials(FakeLinuxSocket(4242, 1000, 1000), proc=tmp_path)
    with pytest.raises(PeerCredentialsError, match="cannot read the groups of pid 99"):
        peercred.linux_peer_credentials(FakeLinuxSocket(99, 1000, 1000), proc=tmp_path)


def test_unsupported_platform():
    with pytest.raises(PeerCredentialsError, match="not implemented on plan9"):
        peercred.peer_credentials(FakeLinuxSocket(1, 1, 1), platform="plan9")


@pytest.mark.skipif(sys.platform != "linux", reason="SO_PEERCRED is Linux")
def test_real_socketpair_on_linux():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        creds = peercred.peer_credentials(a)
    assert creds.pid == os.getpid()
    assert creds.uid == os.geteuid()
    assert creds.gid == os.getegid()
    assert set(creds.groups) == set(os.getgroups())
