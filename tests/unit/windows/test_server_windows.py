"""The helper server's Windows wiring on any OS: gRPC on loopback TCP, tokens and the target from the pipe.

The pipe is ``FakeAuthPipe`` (the real one needs Win32); gRPC, the token store and the client are real.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.doubles.fake_pipe import FakeAuthPipe
from tests.doubles.fake_session import FakeSession
from tether.helper.api import helper_pb2 as pb
from tether.helper.api.paths import AUTH_PIPE
from tether.helper.root.server.peercred import PeerCredentials
from tether.helper.root.server.server import HelperServer, ServerOptions, ServerSetupError, resolve_group_sid
from tether.helper.user.client import (
    HelperClient,
    HelperNotInstalledError,
    HelperProtocolError,
    TokenSource,
)

GROUP_SID = "S-1-5-21-1-2-3-1020"
ALICE = PeerCredentials(pid=7, uid=1013, gid=1020, groups=(1020,), sid="S-1-5-21-1-2-3-1013")


def windows_server(tmp: Path, lookup=lambda name: GROUP_SID if name == "tether" else None) -> HelperServer:
    options = ServerOptions(socket_path=tmp / "Tether" / "helper.sock", require_root=False)
    return HelperServer(FakeSession(), options, platform="win32", pipe_server=FakeAuthPipe, group_sid_lookup=lookup)


def pipe_client(pipe_of, creds: PeerCredentials = ALICE) -> HelperClient:
    """A client whose pipe reads go to whichever fake pipe ``pipe_of()`` names (the current helper's)."""
    tokens = TokenSource(Path("unused"), platform="win32", read_pipe=lambda name, timeout: pipe_of().exchange(creds))
    return HelperClient(Path("unused"), tokens=tokens, timeout=10)


def test_the_server_serves_grpc_on_loopback_and_the_pipe_names_it():
    async def main(tmp: Path) -> None:
        server = windows_server(tmp)
        await server.start()
        try:
            (pipe,) = FakeAuthPipe.made[-1:]
            assert pipe.started and pipe.group_sid == GROUP_SID and pipe.name == AUTH_PIPE
            assert server.grpc_target.startswith("127.0.0.1:") and pipe.target == server.grpc_target
            assert (tmp / "Tether").is_dir()  # the runtime directory: the journal goes there
            reply = json.loads(await asyncio.to_thread(pipe.exchange, ALICE))
            assert reply["grpc_target"] == server.grpc_target and reply["uid"] == 1013
            caller = server.tokens.resolve(reply["token"])
            assert (caller.uid, caller.username, caller.groups) == (1013, ALICE.sid, (1020,))
            client = pipe_client(lambda: pipe)
            version = await asyncio.to_thread(client.version)
            assert version.name == "tether-helper"
            assert client.target() == server.grpc_target
            state = await asyncio.to_thread(client.status)
            assert state.phase == pb.State.DISCONNECTED
            client.close()
        finally:
            await server.stop(grace=0.2)
        assert pipe.stopped

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))


def test_the_client_follows_a_restarted_helper_to_its_new_port():
    async def main(tmp: Path) -> None:
        first = windows_server(tmp)
        await first.start()
        client = pipe_client(lambda: FakeAuthPipe.made[-1])
        await asyncio.to_thread(client.version)
        old_target = client.target()
        await first.stop(grace=0.2)
        second = windows_server(tmp)
        await second.start()
        try:
            assert second.grpc_target != old_target
            # The old channel is refused (UNAVAILABLE): the client asks the pipe again and dials the new port.
            assert (await asyncio.to_thread(client.version)).name == "tether-helper"
            assert client.target() == second.grpc_target
        finally:
            client.close()
            await second.stop(grace=0.2)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))


def test_a_missing_group_is_refused_with_the_command_that_makes_it(tmp_path):
    with pytest.raises(ServerSetupError, match=r'local group "tether" does not exist.*New-LocalGroup -Name tether'):
        asyncio.run(windows_server(tmp_path, lookup=lambda name: None).start())
    assert resolve_group_sid("S-1-5-21-9-9-9-1111") == "S-1-5-21-9-9-9-1111"  # a SID is taken as given
    assert resolve_group_sid("devs", {"devs": GROUP_SID}.get) == GROUP_SID


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ({"token": "t", "expires_in": 60}, "no grpc_target"),
        ({"token": "t", "expires_in": 60, "grpc_target": "10.0.0.5:4000"}, "not a loopback address"),
        ({"token": "t", "expires_in": 60, "grpc_target": "127.0.0.1:http"}, "not a loopback address"),
    ],
)
def test_the_client_dials_only_a_loopback_target_from_the_pipe(reply, error):
    tokens = TokenSource(Path("unused"), platform="win32", read_pipe=lambda n, t: json.dumps(reply).encode())
    with pytest.raises(HelperProtocolError, match=error):
        tokens.get()


def test_no_pipe_means_the_helper_is_not_running():
    def absent(name: str, timeout: float) -> bytes:
        raise FileNotFoundError(2, "The system cannot find the file specified", name)

    tokens = TokenSource(Path("unused"), platform="win32", read_pipe=absent)
    with pytest.raises(HelperNotInstalledError, match=r"no pipe \\\\\.\\pipe\\tether-helper-auth"):
        tokens.get()


def test_the_posix_client_keeps_its_socket():
    client = HelperClient(Path("/run/tether/helper.sock"), tokens=TokenSource(Path("/x"), platform="linux"))
    assert client.target() == "unix:/run/tether/helper.sock" and client.tokens.pipe == ""


BLOCK_POSIX = """
import sys
sys.modules["grp"] = None  # as on Windows: importing them raises ImportError
sys.modules["pwd"] = None
sys.modules["resource"] = None
import tether.helper.root.server.server
import tether.helper.root.daemon
import tether.helper.user.client
print("imported")
"""


def test_the_server_daemon_and_client_import_without_posix_only_modules():
    done = subprocess.run([sys.executable, "-c", BLOCK_POSIX], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "imported", done.stderr
