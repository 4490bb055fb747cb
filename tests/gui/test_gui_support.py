"""Shared parts of the tray tests (imported as ``test_gui_support``): a fake helper server on a temporary
socket that speaks the real helper API (``HelperServer`` with a ``FakeSession``), a kubeconfig, and a
controller built against both. The few tests at the bottom check the fake itself.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.fake_session import FakeSession
from tether.gui.controller import TrayController
from tether.gui.retry import Backoff
from tether.helper.api import helper_pb2 as pb
from tether.helper.root.server.server import HelperServer, ServerOptions
from tether.helper.user.client import HelperCallError, HelperClient, build_connect_request
from tether.helper.user.resolutions import ResolutionStore

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: lab
clusters:
- name: lab
  cluster: {server: "http://127.0.0.1:6443"}
- name: staging
  cluster: {server: "https://staging.example:6443"}
users:
- name: dev
  user: {token: not-a-real-token}
contexts:
- name: lab
  context: {cluster: lab, user: dev, namespace: default}
- name: staging
  context: {cluster: staging, user: dev}
"""

VPN_CONFLICT = pb.Conflict(
    subnet="10.96.0.0/12",
    route="10.0.0.0/8",
    device="vpn0",
    gateway="100.64.0.1",
    description="cluster subnet 10.96.0.0/12 overlaps the route to 10.0.0.0/8 via 100.64.0.1 on vpn0",
)


class FakeHelper:
    """A HelperServer with a FakeSession in a thread of its own, on ``socket_path``; can stop and start again."""

    def __init__(self, socket_path: Path, session: FakeSession | None = None) -> None:
        self.socket_path = socket_path
        self.session = session or FakeSession()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: HelperServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeHelper:
        ready = threading.Event()
        failure: list[BaseException] = []
        self.loop = asyncio.new_event_loop()
        options = ServerOptions(socket_path=self.socket_path, require_root=False, set_group=False)
        self._server = HelperServer(self.session, options)

        async def serve() -> None:
            assert self._server is not None
            try:
                await self._server.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._server.wait()
            await self._server.stop(grace=0.5)
            await self.session.close()  # as the daemon does when it exits: a stopped helper holds no connection

        def run(loop: asyncio.AbstractEventLoop) -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.close()

        self._thread = threading.Thread(target=run, args=(self.loop,), daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self.loop is not None and self._server is not None
            self.loop.call_soon_threadsafe(self._server.request_stop)
            self._thread.join(10)
        self._thread = None

    def on_loop(self, function: Callable[[], Any]) -> None:
        """Run ``function`` on the server's event loop (FakeSession is not thread-safe)."""
        assert self.loop is not None
        done = threading.Event()

        def call() -> None:
            try:
                function()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(call)
        done.wait(5)

    def publish(self, state: pb.State) -> None:
        self.on_loop(lambda: self.session.publish(state))

    @property
    def requests(self) -> list[pb.ConnectRequest]:
        return [request for request, _ in self.session.connects]


@dataclass(frozen=True)
class Options:
    also_proxy: tuple[str, ...] = ()
    never_proxy: tuple[str, ...] = ()
    virtual_subnet: str = ""
    dns_include_suffixes: tuple[str, ...] = ()
    dns_exclude_suffixes: tuple[str, ...] = ()


def short_dir() -> Path:
    """A private directory with a short path (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tether-gui-"))
    os.chmod(path, 0o755)
    return path


def write_kubeconfig(directory: Path, text: str = KUBECONFIG) -> Path:
    path = directory / "kubeconfig"
    path.write_text(text)
    return path


def make_controller(
    socket_path: Path,
    work: Path,
    *,
    kubeconfig: Path | None = None,
    settings: Callable[[], Options] = Options,
    added: Callable[[], list[Any]] | None = None,
    kubeconfig_text_for: Callable[[str], str] | None = None,
) -> TrayController:
    return TrayController(
        socket_path,
        kubeconfig=kubeconfig or write_kubeconfig(work),
        environ={"HOME": str(work), "LANG": "C.UTF-8"},
        resolutions=ResolutionStore(work / "resolutions.json"),
        settings=settings,
        added_clusters=added or (lambda: []),
        kubeconfig_text_for=kubeconfig_text_for or (lambda name: ""),
        backoff=Backoff(initial=0.05, cap=0.2),
    )


@pytest.fixture(autouse=True)
def collect_garbage_on_the_gui_thread() -> Iterator[None]:
    """Collect Python's cyclic garbage here, in the GUI thread, before and after each test.

    Left alone, the collector runs in whichever thread allocates when it triggers, which may be one of
    a controller's workers, and a Qt object (a window or tray from an earlier test) deleted from there
    crashes the process. What survives the first collection is frozen for the test (left out of the
    second), which keeps that one quick. Test modules that start controllers import this fixture.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.collect()
    gc.unfreeze()  # frozen objects are hidden from gc.get_objects(); leave the next test a normal heap


@pytest.fixture
def work() -> Iterator[Path]:
    base = short_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


# --- the fake itself ------------------------------------------------------------------------------------


def test_fake_helper_fails_on_conflicts_unless_the_request_resolves_them(work):
    helper = FakeHelper(work / "run" / "helper.sock").start()
    helper.session.conflict_with([VPN_CONFLICT])
    try:
        kubeconfig = write_kubeconfig(work)
        with HelperClient(helper.socket_path) as client:
            request = build_connect_request(context="lab", kubeconfig=kubeconfig, environment={})
            with pytest.raises(HelperCallError) as failed:
                client.connect_and_wait(request)
            assert "overlaps the route to 10.0.0.0/8" in failed.value.message
            state = client.status()
            assert state.phase == pb.State.DISCONNECTED
            assert [c.subnet for c in state.conflicts] == ["10.96.0.0/12"]

            allowed = build_connect_request(
                context="lab", kubeconfig=kubeconfig, environment={}, allow_conflicting_subnets=["10.0.0.0/8"]
            )
            assert client.connect_and_wait(allowed).phase == pb.State.CONNECTED
            client.disconnect()
            auto = build_connect_request(context="lab", kubeconfig=kubeconfig, environment={}, auto_resolve=True)
            state = client.connect_and_wait(auto)
            assert [(r.subnet, r.reason) for r in state.remapped] == [("10.96.0.0/12", "auto-resolve")]
            assert not state.conflicts
    finally:
        helper.stop()


def test_fake_helper_publishes_arbitrary_states(work):
    helper = FakeHelper(work / "run" / "helper.sock").start()
    try:
        with HelperClient(helper.socket_path) as client:
            states = client.watch_state()
            assert next(states).phase == pb.State.DISCONNECTED
            helper.publish(pb.State(phase=pb.State.RECONNECTING, cluster="lab"))
            seen = next(states)
            assert (seen.phase, seen.cluster) == (pb.State.RECONNECTING, "lab")
            states.close()
    finally:
        helper.stop()


def test_the_fake_helper_runs_by_hand_and_stops_on_sigterm(work):
    socket_path = work / "run" / "helper.sock"
    command = [sys.executable, "-m", "tests.doubles.fake_session", "--socket", str(socket_path)]
    # `-m tests.doubles...` resolves from the repository root, wherever pytest was started.
    process = subprocess.Popen(
        [*command, "--conflict", "error", "--step-delay", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"fake helper serving on {socket_path}"
        kubeconfig = write_kubeconfig(work)
        with HelperClient(socket_path) as client:
            assert client.status().phase == pb.State.DISCONNECTED
            with pytest.raises(HelperCallError):
                client.connect_and_wait(build_connect_request(context="lab", kubeconfig=kubeconfig, environment={}))
            assert client.status().phase == pb.State.ERROR
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert not socket_path.exists()
    finally:
        if process.poll() is None:
            process.kill()
