"""The helper's socket permissions and caller identity with real, different uids (root only).

No user or group is created: the clients run under unused numeric ids (64010-64013) via setpriv, so
nothing persists. The helper (with a FakeSession that also loads the caller's kubeconfig credentials)
serves on a socket directory under a fresh temp dir; its group is the unused gid 64010.

When this interpreter lives where other uids cannot read it (e.g. pyenv under /root), each client runs
in a private mount namespace that bind-mounts the interpreter's prefix to a readable path; the mount
disappears with the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.doubles.fake_session import FakeSession
from tether.helper.api import helper_pb2 as pb
from tether.helper.root.kube.credentials import aload_credentials, load_credentials
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.server import HelperServer, ServerOptions

GROUP, OUTSIDER, OWNER, MEMBER = 64010, 64011, 64012, 64013
IDS = (GROUP, OUTSIDER, OWNER, MEMBER)

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Linux peer credentials and setpriv"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch uids and chown sockets"),
]

PLUGIN = """#!/bin/sh
token="uid-$(id -u)-groups-$(id -G | tr ' ' ,)-home-$HOME"
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"%s"}}' \\
  client.authentication.k8s.io/v1 "$token"
"""


def _ids_in_use() -> list[str]:
    used = []
    for uid in IDS:
        with contextlib.suppress(KeyError):
            used.append(f"uid {uid} ({pwd.getpwuid(uid).pw_name})")
        with contextlib.suppress(KeyError):
            used.append(f"gid {uid} ({grp.getgrgid(uid).gr_name})")
    return used


def _processes_of(uids: tuple[int, ...]) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) in uids:
                    found.append(proc.name)
    return found


class ProbeSession(FakeSession):
    """A FakeSession whose connect first builds the caller's Kubernetes credentials, and reports the token."""

    async def connect(self, request: pb.ConnectRequest, caller: Caller) -> AsyncIterator[pb.ConnectProgress]:
        creds = await aload_credentials(request.kubeconfig, caller, request.environment, request.context or None)
        try:
            token = creds.configuration.api_key.get("BearerToken", "")
        finally:
            creds.close()
        yield pb.ConnectProgress(step=f"credential {token}")
        async for progress in super().connect(request, caller):
            yield progress


class HelperThread:
    def __init__(self, socket_path: Path) -> None:
        self.session = ProbeSession()
        self.server = HelperServer(self.session, ServerOptions(socket_path=socket_path, group=GROUP))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            await self.server.start()
        except BaseException as exc:
            self.error = exc
            return
        finally:
            self.ready.set()
        await self.server.wait()
        await self.server.stop(grace=1)

    def __enter__(self) -> HelperThread:
        self.thread.start()
        self.ready.wait(10)
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.request_stop)
        self.thread.join(10)
        self.loop.close()


class Clients:
    """Run `tether ...` as a given uid/gid/groups; bind-mount the interpreter when others cannot read it."""

    def __init__(self, workdir: Path, socket_path: Path) -> None:
        self.workdir = workdir
        self.socket_path = socket_path
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir / "home"),
            "KUBECONFIG": str(workdir / "kubeconfig"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        self.mount: Path | None = None
        executable = Path(sys.executable).resolve()
        if not self._works([str(executable)]):
            prefix = Path(sys.prefix).resolve()
            if Path(sys.base_prefix).resolve() != prefix or not executable.is_relative_to(prefix):
                pytest.skip("the interpreter is not readable by other uids (and is a venv)")
            for tool in ("unshare", "setpriv", "mount"):
                if shutil.which(tool) is None:
                    pytest.skip(f"the interpreter is not readable by other uids and {tool} is missing")
            self.mount = workdir / "python"
            self.mount.mkdir()
            self.prefix = prefix
            self.python_rel = executable.relative_to(prefix)
            if not self._works([]):
                pytest.skip("cannot make the interpreter readable for other uids")

    def _argv(self, uid: int, gid: int, groups: tuple[int, ...], python_args: list[str]) -> list[str]:
        ident = [f"--reuid={uid}", f"--regid={gid}"]
        ident.append("--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
        if self.mount is None:
            return ["setpriv", *ident, "--", sys.executable, *python_args]
        mount = str(self.mount)
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(self.prefix), mount,
            "setpriv", *ident, "--",
            "env", f"LD_LIBRARY_PATH={mount}/lib", f"{mount}/{self.python_rel}", *python_args,
        ]  # fmt: skip

    def _works(self, executable: list[str]) -> bool:
        argv = (
            ["setpriv", f"--reuid={OUTSIDER}", f"--regid={OUTSIDER}", "--clear-groups", "--", *executable]
            if executable
            else self._argv(OUTSIDER, OUTSIDER, (), [])
        )
        probe = subprocess.run(
            [*argv, "-c", "import grpc, tether.helper.user.client"], env=self.env, capture_output=True, timeout=60
        )
        return probe.returncode == 0

    def run(self, uid: int, groups: tuple[int, ...], *args: str) -> subprocess.CompletedProcess[str]:
        python_args = ["-m", "tether.helper.user.cli.main", *args, "--socket", str(self.socket_path)]
        return subprocess.run(
            self._argv(uid, uid, groups, python_args), env=self.env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    used = _ids_in_use()
    if used:
        pytest.skip(f"the test ids are in use here: {', '.join(used)}")
    base = Path(tempfile.mkdtemp(prefix="tethertest-"))
    os.chmod(base, 0o755)
    (base / "home").mkdir(mode=0o755)
    plugin = base / "get-token"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    (base / "kubeconfig").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [
                    {
                        "name": "me",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1",
                                "command": str(plugin),
                                "interactiveMode": "Never",
                            }
                        },
                    }
                ],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me"}}],
            }
        )
    )
    os.chmod(base / "kubeconfig", 0o644)
    yield base
    shutil.rmtree(base)
    assert _processes_of(IDS) == []


@pytest.fixture(scope="module")
def helper(workdir: Path) -> Iterator[HelperThread]:
    with HelperThread(workdir / "run" / "helper.sock") as thread:
        yield thread
    assert not (workdir / "run" / "helper.sock").exists()
    assert not (workdir / "run" / "helper-auth.sock").exists()


@pytest.fixture(scope="module")
def clients(workdir: Path, helper: HelperThread) -> Clients:
    return Clients(workdir, helper.server.socket_path)


def test_sockets_belong_to_root_and_the_group(helper):
    directory = helper.server.socket_path.parent
    info = directory.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)
    for path in (helper.server.socket_path, helper.server.auth_socket_path):
        info = path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, GROUP, 0o660)


def test_a_user_outside_the_group_is_told_to_join_it(clients):
    result = clients.run(OUTSIDER, (), "status")
    assert result.returncode == 4, result.stderr
    assert f'permission denied: you are not in the "{GROUP}" group' in result.stderr
    assert f"usermod -aG {GROUP}" in result.stderr
    assert clients.run(OUTSIDER, (), "connect").returncode == 4


def test_ownership_between_real_uids(clients, helper):
    result = clients.run(OWNER, (GROUP,), "status")
    assert result.returncode == 0, result.stderr
    assert "disconnected" in result.stdout

    result = clients.run(OWNER, (GROUP,), "connect")
    assert result.returncode == 0, result.stderr
    # The exec plugin ran as the caller, with its groups and the environment it sent, not as root.
    assert f"credential Bearer uid-{OWNER}-groups-{OWNER},{GROUP}-home-{clients.env['HOME']}" in result.stdout
    assert "connected to lab" in result.stdout
    request, caller = helper.session.connects[-1]
    assert (caller.uid, caller.gid, caller.groups) == (OWNER, OWNER, (GROUP,))
    assert request.environment["KUBECONFIG"] == clients.env["KUBECONFIG"]
    assert helper.session.state().phase == pb.State.CONNECTED

    result = clients.run(MEMBER, (GROUP,), "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["phase"], status["owner_uid"]) == ("connected", OWNER)

    for command in ("disconnect", "quit"):
        result = clients.run(MEMBER, (GROUP,), command)
        assert result.returncode == 4, result.stderr
        assert f"session is owned by uid {OWNER}" in result.stderr
    result = clients.run(MEMBER, (GROUP,), "connect")
    assert result.returncode == 4
    assert f"owned by uid {OWNER}" in result.stderr
    assert helper.session.state().phase == pb.State.CONNECTED

    root = subprocess.run(
        [sys.executable, "-m", "tether.helper.user.cli.main", "disconnect", "--socket", str(helper.server.socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert root.returncode == 0, root.stderr
    assert [c.uid for c in helper.session.disconnects] == [0]
    assert helper.session.state().phase == pb.State.DISCONNECTED

    result = clients.run(MEMBER, (GROUP,), "status", "--json")
    assert json.loads(result.stdout)["phase"] == "disconnected"


def test_exec_plugin_runs_as_the_caller_not_root(workdir):
    caller = Caller(uid=OWNER, gid=OWNER, pid=1, groups=(GROUP,), username=str(OWNER))
    text = (workdir / "kubeconfig").read_text()
    with load_credentials(text, caller, {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}) as creds:
        token = creds.configuration.api_key["BearerToken"]
        private = creds.directory
        assert (private.stat().st_uid, stat.S_IMODE(private.stat().st_mode)) == (0, 0o700)
    assert token == f"Bearer uid-{OWNER}-groups-{OWNER},{GROUP}-home-/nonexistent"
    assert not private.exists()


def test_exec_plugins_survive_busy_grpc_threads(workdir, helper):
    """Starting plugins while gRPC threads are busy must not crash them (it did with fork())."""
    from tether.helper.user.client import HelperClient

    caller = Caller(uid=OWNER, gid=OWNER, pid=1, groups=(GROUP,), username=str(OWNER))
    text = (workdir / "kubeconfig").read_text()
    stop = threading.Event()

    def hammer() -> None:
        with HelperClient(helper.server.socket_path) as client:
            while not stop.is_set():
                client.status()

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20):
            with load_credentials(text, caller, {"PATH": "/usr/bin:/bin", "HOME": "/"}) as creds:
                assert creds.configuration.api_key["BearerToken"].startswith(f"Bearer uid-{OWNER}-")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
