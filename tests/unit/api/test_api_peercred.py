"""Peer credentials: struct layouts of Linux (ucred) and macOS (xucred), and the real thing here."""

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tether.helper.root.server import peercred
from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError


def test_parse_ucred():
    assert peercred.parse_ucred(struct.pack("=iII", 4242, 1000, 1001)) == (4242, 1000, 1001)
    with pytest.raises(PeerCredentialsError, match="expected 12"):
        peercred.parse_ucred(b"\0" * 8)


def test_parse_groups():
    assert peercred.parse_groups(struct.pack("=3I", 4, 24, 998)) == (4, 24, 998)
    assert peercred.parse_groups(b"") == ()
    with pytest.raises(PeerCredentialsError, match="not a whole number of gids"):
        peercred.parse_groups(b"\0" * 6)


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
    def __init__(self, pid: int, uid: int, gid: int, groups: tuple[int, ...] = ()) -> None:
        self.answers = {
            peercred.SO_PEERCRED: struct.pack("=iII", pid, uid, gid),
            peercred.SO_PEERGROUPS: struct.pack(f"={len(groups)}I", *groups),
        }

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes:
        assert level == socket.SOL_SOCKET
        return self.answers[optname][:buflen]

    def fileno(self) -> int:
        return -1


def test_linux_reader_takes_the_groups_from_the_socket():
    creds = peercred.linux_peer_credentials(FakeLinuxSocket(4242, 1000, 1000, (1000, 998)))
    assert creds == PeerCredentials(pid=4242, uid=1000, gid=1000, groups=(1000, 998))


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


def _unavailable_as_another_user() -> str:
    if sys.platform != "linux":
        return "SO_PEERGROUPS is Linux"
    if os.geteuid() != 0:
        return "needs root (to start a client with another uid and its own groups)"
    return ""


@pytest.mark.skipif(bool(_unavailable_as_another_user()), reason=_unavailable_as_another_user() or "available")
@pytest.mark.parametrize("ngroups", [3, 300])
def test_groups_of_a_client_that_already_exited_come_from_the_kernel(ngroups):
    """The client connects and exits (its pid is free for reuse) before the helper asks who it was: the uid,
    gid and groups are still those it connected with. Reading /proc/<pid>/status found nothing (or a stranger).
    300 groups need more than CPython's 1024-byte getsockopt buffer."""
    groups = list(range(70000, 70000 + ngroups))
    directory = Path(tempfile.mkdtemp(prefix="tether-peer-"))  # pytest's tmp_path is not reachable by nobody
    os.chmod(directory, 0o755)
    path = directory / "s.sock"
    with contextlib.ExitStack() as cleanup, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        server.bind(str(path))
        os.chmod(path, 0o777)
        server.listen(1)
        # The client drops to nobody itself, after its imports: the interpreter may live where nobody can read.
        client = (
            "import os, socket, sys; os.setgroups([int(g) for g in sys.argv[2:]]); os.setgid(65534); "
            "os.setuid(65534); s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'x')"
        )
        subprocess.run([sys.executable, "-I", "-c", client, str(path), *map(str, groups)], check=True, timeout=30)
        conn, _ = server.accept()
        with conn:
            creds = peercred.peer_credentials(conn)
    assert (creds.uid, creds.gid) == (65534, 65534)
    assert sorted(creds.groups) == groups
