"""The API server with a FakeSession over real unix sockets in a temp dir, as the current user (test mode).

The scenarios run on the server's event loop; the (blocking) client runs on worker threads
(``asyncio.to_thread``), as asyncio code uses it.
"""

import asyncio
import os
import socket
import stat
import time
from pathlib import Path

import grpc
import pytest
from api_support import ServerThread, options_for, short_tmp

from tests.doubles.fake_session import FakeSession
from tether.helper.api import helper_pb2 as pb
from tether.helper.api import helper_pb2_grpc as pb_grpc
from tether.helper.root.server import server as server_module
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.server import HelperServer, ServerOptions, ServerSetupError
from tether.helper.root.server.tokens import TokenStore
from tether.helper.user.client import HelperCallError, HelperClient, TokenSource

KUBECONFIG = "apiVersion: v1\nkind: Config\n"


def request(**fields) -> pb.ConnectRequest:
    return pb.ConnectRequest(kubeconfig=KUBECONFIG, context="lab", client_name="test", **fields)


class StaticTokens(TokenSource):
    """A token issued directly by the server's store: lets one process act as several uids."""

    def __init__(self, server: HelperServer, caller: Caller) -> None:
        super().__init__(server.auth_socket_path)
        self.token = server.tokens.issue(caller).token

    def get(self) -> str:
        return self.token


def as_uid(server: HelperServer, uid: int) -> HelperClient:
    caller = Caller(uid=uid, gid=uid, pid=1, groups=(uid,), username=f"user{uid}")
    return HelperClient(server.socket_path, tokens=StaticTokens(server, caller))


def off_loop(function, *args, **kwargs):
    """``function`` on a worker thread: a blocking call on the loop would starve the server it calls."""
    return asyncio.to_thread(function, *args, **kwargs)


def first(iterator):
    """The first item of a streaming call, then cancel the call."""
    try:
        return next(iterator)
    finally:
        iterator.close()


def run(scenario, socket_dir: Path, session: FakeSession | None = None, **options):
    """Run ``scenario(server, session)`` with a started server in one event loop; stop it afterwards."""

    async def main():
        fake = session or FakeSession()
        opts = options_for(socket_dir)
        if options:
            opts = ServerOptions(**{**opts.__dict__, **options})
        server = HelperServer(fake, opts)
        await server.start()
        try:
            return await asyncio.wait_for(scenario(server, fake), 20)
        finally:
            await server.stop(grace=0.5)

    return asyncio.run(main())


def test_sockets_are_created_0660_and_removed(socket_dir):
    async def scenario(server, session):
        for path in (server.socket_path, server.auth_socket_path):
            info = path.lstat()
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o660
        assert server.auth_socket_path.name == "helper-auth.sock"
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o755

    run(scenario, socket_dir)
    assert not socket_dir.exists(), "the helper removes its emptied socket directory"


def test_connect_streams_progress_and_state_follows(socket_dir):
    async def scenario(server, session):
        with HelperClient(server.socket_path) as client:
            version = await off_loop(client.version)
            assert version.name == "tether-helper" and version.api_level == 1
            assert (await off_loop(client.status)).phase == pb.State.DISCONNECTED

            watched: list[int] = []

            def watch():
                states = client.watch_state()
                for state in states:
                    watched.append(state.phase)
                    if state.phase == pb.State.CONNECTED:
                        states.close()
                        return

            watcher = asyncio.ensure_future(off_loop(watch))
            await asyncio.sleep(0.2)
            steps = await off_loop(lambda: list(client.connect(request(namespace="apps", never_proxy=["10.9.0.0/16"]))))
            assert [p.step for p in steps] == [
                "checking the kubeconfig",
                "finding the traffic-manager",
                "configuring routes and DNS",
                "connected",
            ]
            final = steps[-1].state
            assert final.phase == pb.State.CONNECTED
            assert final.owner_uid == os.geteuid()
            await asyncio.wait_for(watcher, 5)
            assert watched[0] == pb.State.DISCONNECTED
            assert watched[-2:] == [pb.State.CONNECTING, pb.State.CONNECTED]

            status = await off_loop(client.status)
            assert status.phase == pb.State.CONNECTED
            assert (status.cluster, status.namespace) == ("lab", "apps")
            assert [s.cidr for s in status.routed_subnets] == ["10.96.0.0/12", "10.244.0.0/16"]
            assert list(status.never_proxy) == ["10.9.0.0/16"]
            assert status.owner_uid == os.geteuid()

            # The caller the session saw is the one the kernel reported.
            _, caller = session.connects[-1]
            assert (caller.uid, caller.gid, caller.pid) == (os.geteuid(), os.getegid(), os.getpid())
            assert set(caller.groups) == set(os.getgroups())

            state = await off_loop(client.disconnect)
            assert state.phase == pb.State.DISCONNECTED
            assert (await off_loop(client.status)).owner_uid == 0

    run(scenario, socket_dir)


def test_a_failing_connect(socket_dir):
    session = FakeSession()
    session.fail("no traffic-manager in namespace tether", at_step="finding the traffic-manager")

    async def scenario(server, session):
        with HelperClient(server.socket_path) as client:
            steps = []

            def connect():
                for progress in client.connect(request()):
                    steps.append(progress.step)

            with pytest.raises(HelperCallError) as info:
                await off_loop(connect)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert info.value.details == "no traffic-manager in namespace tether"
            assert steps == ["checking the kubeconfig", "finding the traffic-manager"]
            status = await off_loop(client.status)
            assert status.phase == pb.State.DISCONNECTED
            assert status.last_error == "no traffic-manager in namespace tether"
            session.succeed()
            state = await off_loop(client.connect_and_wait, request())  # someone else may connect now
            assert state.phase == pb.State.CONNECTED

    run(scenario, socket_dir, session)


def test_invalid_requests_are_refused_with_the_value(socket_dir):
    async def scenario(server, session):
        with HelperClient(server.socket_path) as client:
            with pytest.raises(HelperCallError) as info:
                await off_loop(client.connect_and_wait, request(also_proxy=["10.0.0.1/8"]))
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details == 'also-proxy: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?'
            assert session.connects == []

    run(scenario, socket_dir)


def test_calls_without_a_token_are_unauthenticated(socket_dir):
    async def scenario(server, session):
        async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
            stub = pb_grpc.HelperStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Status(pb.Empty())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "fetch a new token" in info.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Status(pb.Empty(), metadata=(("tether-token", "ab" * 32),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "unknown token" in info.value.details()

    run(scenario, socket_dir)


def test_the_client_fetches_a_new_token_once_when_the_old_one_expired(socket_dir):
    now = [1000.0]

    async def scenario(server, session):
        server.tokens = server.service._tokens = TokenStore(ttl=600, clock=lambda: now[0])
        with HelperClient(server.socket_path) as client:
            await off_loop(client.status)
            token = client.tokens.cached()
            now[0] += 601  # the server forgets it; the client still thinks it is good
            await off_loop(client.status)
            assert client.tokens.cached() not in (None, token)
            now[0] += 601  # and again, for a streaming call
            state = await off_loop(lambda: first(client.watch_state()))
            assert state.phase == pb.State.DISCONNECTED


def test_ownership_rules_between_users(socket_dir):
    async def scenario(server, session):
        alice, bob, root = as_uid(server, 1000), as_uid(server, 1001), as_uid(server, 0)
        assert (await off_loop(alice.connect_and_wait, request())).owner_uid == 1000
        assert (await off_loop(bob.status)).owner_uid == 1000  # anyone in the group may look

        with pytest.raises(HelperCallError) as info:
            await off_loop(bob.disconnect)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "session is owned by uid 1000" in info.value.details
        with pytest.raises(HelperCallError) as info:
            await off_loop(bob.connect_and_wait, request())
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "owned by uid 1000" in info.value.details
        with pytest.raises(HelperCallError) as info:
            await off_loop(bob.quit)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED

        assert (await off_loop(root.disconnect)).phase == pb.State.DISCONNECTED  # root may
        assert [c.uid for c in session.disconnects] == [0]
        assert (await off_loop(bob.connect_and_wait, request())).owner_uid == 1001  # and now bob may connect
        assert (await off_loop(alice.status)).owner_uid == 1001
        for client in (alice, bob, root):
            client.close()

    run(scenario, socket_dir)


def test_an_owner_can_disconnect_a_connect_in_progress(socket_dir):
    session = FakeSession(step_delay=0.3)

    async def scenario(server, session):
        alice, bob = as_uid(server, 1000), as_uid(server, 1001)
        task = asyncio.ensure_future(off_loop(lambda: [p.step for p in alice.connect(request())]))
        await asyncio.sleep(0.1)
        with pytest.raises(HelperCallError, match="owned by uid 1000"):
            await off_loop(bob.connect_and_wait, request())  # the connecting user owns the session already
        assert (await off_loop(alice.disconnect)).phase == pb.State.DISCONNECTED
        with pytest.raises(HelperCallError) as info:
            await task
        assert info.value.code == grpc.StatusCode.ABORTED
        assert (await off_loop(bob.connect_and_wait, request())).owner_uid == 1001
        for client in (alice, bob):
            client.close()

    run(scenario, socket_dir, session)


def test_quit_disconnects_and_stops_the_server(socket_dir):
    async def scenario(server, session):
        alice = as_uid(server, 1000)
        await off_loop(alice.connect_and_wait, request())
        await off_loop(alice.quit)
        await asyncio.wait_for(server.wait(), 5)
        assert server.quit_requested
        assert session.state().phase == pb.State.DISCONNECTED
        assert [c.uid for c in session.disconnects] == [1000]
        alice.close()

    run(scenario, socket_dir)


def test_sync_client_against_a_server_thread(helper):
    with HelperClient(helper.socket_path) as client:
        assert client.status().phase == pb.State.DISCONNECTED
        steps = []
        state = client.connect_and_wait(request(), on_progress=lambda p: steps.append(p.step))
        assert state.phase == pb.State.CONNECTED and steps[-1] == "connected"
        watch = client.watch_state()
        assert next(watch).phase == pb.State.CONNECTED
        watch.close()
        assert (client.socket_path, client.auth_socket_path) == (helper.socket_path, helper.server.auth_socket_path)
        assert client.disconnect().phase == pb.State.DISCONNECTED
        client.quit()
    for _ in range(50):
        if helper.stopped:
            break
        time.sleep(0.1)
    assert helper.stopped and helper.server.quit_requested


# --- setup checks ------------------------------------------------------------------------------------


def test_a_stale_socket_is_replaced(socket_dir):
    socket_dir.mkdir(mode=0o755)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_dir / "helper.sock"))
    stale.close()  # the file stays, nobody listens: a crashed helper's leftover

    async def scenario(server, session):
        with HelperClient(server.socket_path) as client:
            assert (await off_loop(client.status)).phase == pb.State.DISCONNECTED

    run(scenario, socket_dir)


def test_a_live_helper_is_not_replaced(helper):
    second = ServerThread(FakeSession(), options_for(helper.socket_path.parent))
    with pytest.raises(ServerSetupError, match=r"another tether-helper is already running on .*helper.sock"):
        second.start()
    with HelperClient(helper.socket_path) as client:
        assert client.status().phase == pb.State.DISCONNECTED  # the first one still serves


def test_something_else_at_the_socket_path(socket_dir):
    socket_dir.mkdir(mode=0o755)
    (socket_dir / "helper.sock").write_text("not a socket")
    with pytest.raises(ServerSetupError, match=r"helper.sock exists and is not a socket; remove it first"):
        run(lambda s, f: asyncio.sleep(0), socket_dir)


def test_the_directory_is_created_0755_and_must_be_safe(socket_dir):
    socket_dir.mkdir(mode=0o755)
    os.chmod(socket_dir, 0o777)
    with pytest.raises(ServerSetupError, match=r"writable by group or others \(mode 0777\); `chmod 755"):
        run(lambda s, f: asyncio.sleep(0), socket_dir)
    os.chmod(socket_dir, 0o755)
    if os.geteuid() == 0:
        os.chown(socket_dir, 64999, -1)
        with pytest.raises(ServerSetupError, match=r"it is owned by uid 64999, not uid 0|owned by uid 64999"):
            run(lambda s, f: asyncio.sleep(0), socket_dir)
        os.chown(socket_dir, 0, -1)
    link = socket_dir.parent / "link"
    link.symlink_to(socket_dir)
    with pytest.raises(ServerSetupError, match="not a directory"):
        server_module.prepare_socket_dir(link, os.geteuid())


def test_root_is_required_outside_test_mode(monkeypatch):
    monkeypatch.setattr(server_module.os, "geteuid", lambda: 1000)
    with pytest.raises(ServerSetupError, match=r"tether-helper must run as root.*sudo tether helper start"):
        server_module.check_options(ServerOptions(socket_path=Path("/tmp/x/helper.sock"), group="root"))


def test_the_default_group_must_exist(monkeypatch):
    def missing(name):
        raise KeyError(name)

    from tether.helper.root.server import accounts_posix

    monkeypatch.setattr(accounts_posix.grp, "getgrnam", missing)
    with pytest.raises(
        ServerSetupError, match=r'the group "tether" does not exist. Create it with `groupadd --system tether`'
    ):
        server_module.resolve_group(None)
    with pytest.raises(ServerSetupError, match=r"--group staff: no such group"):
        server_module.resolve_group("staff")
    assert server_module.resolve_group("64010") == 64010
    assert server_module.resolve_group(64010) == 64010


def test_group_root_is_allowed():
    assert server_module.resolve_group("root") == 0


def test_socket_paths_must_be_absolute_and_short():
    with pytest.raises(ServerSetupError, match="must be absolute"):
        server_module.check_options(ServerOptions(socket_path=Path("run/helper.sock"), require_root=False))
    with pytest.raises(ServerSetupError, match="too long for a unix socket"):
        server_module.check_options(ServerOptions(socket_path=Path("/" + "x" * 120), require_root=False))


def test_group_is_applied_when_asked(socket_dir):
    gid = os.getegid()

    async def scenario(server, session):
        assert server.socket_path.lstat().st_gid == gid
        assert server.auth_socket_path.lstat().st_gid == gid

    run(scenario, socket_dir, set_group=True, group=gid)


def test_short_tmp_is_usable():
    path = short_tmp()
    try:
        assert len(str(path / "run" / "helper-auth.sock")) < 100
    finally:
        path.rmdir()


def test_a_socket_directory_that_was_there_before_is_left_with_its_other_files(socket_dir):
    socket_dir.mkdir(mode=0o755)
    os.chmod(socket_dir, 0o755)

    async def scenario(server, session):
        assert server.socket_path.exists() and server.auth_socket_path.exists()

    run(scenario, socket_dir)
    assert socket_dir.is_dir(), "a directory the helper did not create is not its to remove"
    assert list(socket_dir.iterdir()) == [], "its own sockets are gone"


def test_a_pre_existing_socket_directory_survives_the_daemons_two_preflights(socket_dir):
    """The daemon runs preflight (which creates the directory) before the server's own start: what counts is
    whether the directory existed before the daemon's first look, which it hands to the server."""
    socket_dir.mkdir(mode=0o755)
    os.chmod(socket_dir, 0o755)

    async def main():
        server = HelperServer(FakeSession(), options_for(socket_dir), directory_existed=True)
        await server.start()
        await server.stop(grace=0.5)
        server.remove_directory()  # as the daemon does once the session's journal is gone

    asyncio.run(main())
    assert socket_dir.is_dir()


def test_a_socket_directory_a_crashed_helper_made_is_removed_by_the_next_one(socket_dir):
    """Its ownership marker says Tether made it: the next helper removes it at stop, as if it had made it."""
    from tether.helper.root.server.server import OWNED_MARKER, existed_before_tether

    socket_dir.mkdir(mode=0o755)
    os.chmod(socket_dir, 0o755)
    (socket_dir / OWNED_MARKER).touch()
    stale = socket.socket(socket.AF_UNIX)  # what a killed helper leaves: a socket nobody listens on
    stale.bind(str(socket_dir / "helper.sock"))
    stale.close()
    assert not existed_before_tether(socket_dir)

    async def scenario(server, session):
        assert server.socket_path.exists()

    run(scenario, socket_dir)
    assert not socket_dir.exists()


def test_a_directory_the_helper_makes_carries_its_marker_while_it_runs(socket_dir):
    from tether.helper.root.server.server import OWNED_MARKER

    async def scenario(server, session):
        assert (socket_dir / OWNED_MARKER).exists()

    run(scenario, socket_dir)
    assert not socket_dir.exists()
