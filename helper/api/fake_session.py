"""A stand-in ``Session`` for tests of the API server, the client library, the CLI and the tray.

It walks DISCONNECTED -> CONNECTING -> CONNECTED through a few progress steps and touches nothing on
the host. It is a test double: the daemon never uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from tether.helper.api.caller import Caller
from tether.helper.api.session import SessionError
from tether.helper.rpc import helper_pb2 as pb

DEFAULT_STEPS = ("checking the kubeconfig", "finding the traffic-manager", "configuring routes and DNS")


class FakeSession:
    def __init__(
        self,
        *,
        steps: Sequence[str] = DEFAULT_STEPS,
        step_delay: float = 0.0,
        subnets: Sequence[str] = ("10.96.0.0/12", "10.244.0.0/16"),
    ) -> None:
        self.steps = tuple(steps)
        self.step_delay = step_delay
        self.subnets = tuple(subnets)
        self.fail_at: str | None = None
        self.fail_message = ""
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.connects: list[tuple[pb.ConnectRequest, Caller]] = []
        self.disconnects: list[Caller] = []
        self.closed = False
        self._state = pb.State(phase=pb.State.DISCONNECTED)
        self._watchers: set[asyncio.Queue[pb.State]] = set()
        self._cancelled = False

    def fail(
        self, message: str, at_step: str | None = None, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ) -> None:
        """Make the next connects fail with ``message`` at ``at_step`` (default: the last step)."""
        self.fail_at = at_step or self.steps[-1]
        self.fail_message = message
        self.fail_code = code

    def succeed(self) -> None:
        self.fail_at = None

    def state(self) -> pb.State:
        copy = pb.State()
        copy.CopyFrom(self._state)
        return copy

    async def watch(self) -> AsyncIterator[pb.State]:
        queue: asyncio.Queue[pb.State] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            yield self.state()
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    async def connect(self, request: pb.ConnectRequest, caller: Caller) -> AsyncIterator[pb.ConnectProgress]:
        self.connects.append((request, caller))
        if self._state.phase == pb.State.CONNECTED:
            yield pb.ConnectProgress(step="already connected", state=self.state())
            return
        self._cancelled = False
        self._set(
            pb.State(
                phase=pb.State.CONNECTING,
                cluster=request.context or "default",
                namespace=request.namespace or "default",
                owner_uid=caller.uid,
            )
        )
        for step in self.steps:
            yield pb.ConnectProgress(step=step)
            if self.step_delay:
                await asyncio.sleep(self.step_delay)
            if self._cancelled:
                raise SessionError("connect cancelled: the session was disconnected", grpc.StatusCode.ABORTED)
            if self.fail_at == step:
                self._set(pb.State(phase=pb.State.DISCONNECTED, last_error=self.fail_message))
                raise SessionError(self.fail_message, self.fail_code)
        connected = self.state()
        connected.phase = pb.State.CONNECTED
        connected.server = "https://fake.invalid:6443"
        connected.manager_version = "0.0.0-fake"
        connected.dns_mode = "fake"
        connected.dns_server = "127.0.0.1:53"
        connected.tun_device = "tun-fake"
        connected.cluster_domain = "cluster.local"
        connected.connected_since_unix = int(time.time())
        connected.routed_subnets.extend(pb.Subnet(cidr=c, via="tun") for c in self.subnets)
        connected.never_proxy.extend(request.never_proxy)
        self._set(connected)
        yield pb.ConnectProgress(step="connected", state=self.state())

    async def disconnect(self, caller: Caller) -> pb.State:
        self.disconnects.append(caller)
        self._cancelled = True
        if self._state.phase != pb.State.DISCONNECTED:
            self._set(pb.State(phase=pb.State.DISCONNECTED))
        return self.state()

    async def close(self) -> None:
        self.closed = True
        self._cancelled = True
        self._set(pb.State(phase=pb.State.DISCONNECTED))

    def _set(self, state: pb.State) -> None:
        self._state = state
        for queue in self._watchers:
            queue.put_nowait(self.state())
