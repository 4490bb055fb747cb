"""A stand-in ``Session`` for tests of the API server, the client library, the CLI and the tray.

It walks DISCONNECTED -> CONNECTING -> CONNECTED through a few progress steps and touches nothing on
the host. It is a test double: the daemon never uses it.

``conflict_with(...)`` makes connects fail on VPN conflicts the way the real session does (an error status,
then a state that lists the conflicts) unless the request resolves them; ``publish(state)`` sends an
arbitrary state to every watcher (call it on the server's event loop).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.session_api import SessionError

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
        self.conflicts: tuple[pb.Conflict, ...] = ()
        self.conflict_phase: pb.State.Phase.ValueType = pb.State.DISCONNECTED
        # Intercepts: the workloads ListWorkloads shows, other clients' intercepts, the calls seen.
        self.workloads: dict[str, list[tuple[str, str]]] = {"default": [("api", "Deployment"), ("web", "Deployment")]}
        self.foreign: list[pb.InterceptState] = []
        self.intercepts_made: list[pb.InterceptRequest] = []
        self.environment = {"APP_MODE": "fake", "GREETING": "hello world"}
        self.closed_ports: set[int] = set()  # local ports "nothing listens on"
        self.intercept_delay = 0.0

    def fail(
        self, message: str, at_step: str | None = None, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ) -> None:
        """Make the next connects fail with ``message`` at ``at_step`` (default: the last step)."""
        self.fail_at = at_step or self.steps[-1]
        self.fail_message = message
        self.fail_code = code

    def succeed(self) -> None:
        self.fail_at = None

    def conflict_with(
        self, conflicts: Sequence[pb.Conflict], phase: pb.State.Phase.ValueType = pb.State.DISCONNECTED
    ) -> None:
        """Make connects fail on these conflicts (at the last step) unless the request resolves them.

        The real session reports DISCONNECTED (nothing is left applied) with the conflicts and the error;
        ``phase`` ERROR stands in for a session that still holds something.
        """
        self.conflicts = tuple(conflicts)
        self.conflict_phase = phase

    def publish(self, state: pb.State) -> None:
        """Make ``state`` the current state and send it to every watcher."""
        self._set(state)

    def _unresolved(self, request: pb.ConnectRequest) -> list[pb.Conflict]:
        if request.auto_resolve or request.proxy_via:
            return []
        allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in request.allow_conflicting_subnets]
        return [
            conflict
            for conflict in self.conflicts
            if not any(_inside(ipaddress.ip_network(conflict.subnet, strict=False), a) for a in allowed)
        ]

    def _remaps(self, request: pb.ConnectRequest) -> list[pb.Remap]:
        if request.auto_resolve:
            return [pb.Remap(subnet=c.subnet, reason="auto-resolve") for c in self.conflicts]
        workload = request.proxy_via[0].partition("=")[2] if request.proxy_via else ""
        return [pb.Remap(subnet=c.subnet, workload=workload, reason="proxy-via") for c in self.conflicts if workload]

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
            if step == self.steps[-1] and (unresolved := self._unresolved(request)):
                message = "\n".join(c.description or f"{c.subnet} overlaps {c.route}" for c in unresolved)
                self._set(
                    pb.State(
                        phase=self.conflict_phase,
                        cluster=request.context or "default",
                        last_error=message,
                        conflicts=unresolved,
                    )
                )
                raise SessionError(message, grpc.StatusCode.FAILED_PRECONDITION)
        connected = self.state()
        connected.phase = pb.State.CONNECTED
        connected.server = "https://fake.invalid:6443"
        connected.manager_version, connected.manager_api_level = "0.0.0-fake", 2
        connected.client_version, connected.client_api_level = "0.0.0-fake-client", 1
        connected.dns_mode = request.dns_mode or "fake"
        connected.dns_mode_forced = bool(request.dns_mode)
        connected.dns_mode_reason = "forced with --dns-mode (fake probes)" if request.dns_mode else "fake probes"
        connected.dns_probes.extend(["platform: fake", "resolv.conf: nameserver 192.0.2.53 (a file)"])
        connected.dns_server = "127.0.0.1:53"
        connected.tun_device = "tun-fake"
        connected.cluster_domain = "cluster.local"
        connected.connected_since_unix = int(time.time())
        connected.routed_subnets.extend(pb.Subnet(cidr=c, via="tun") for c in self.subnets)
        connected.never_proxy.extend(request.never_proxy)
        if self.conflicts:
            connected.remapped.extend(self._remaps(request))
            connected.virtual_subnet = request.virtual_subnet or ("246.246.0.0/16" if connected.remapped else "")
        self._set(connected)
        yield pb.ConnectProgress(step="connected", state=self.state())

    # --- intercepts ---

    def _known(self, namespace: str, name: str) -> str:
        """The workload's kind; SessionError when the fake cluster has no such workload."""
        if self._state.phase != pb.State.CONNECTED:
            raise SessionError("not connected: connect first", grpc.StatusCode.FAILED_PRECONDITION)
        for workload, kind in self.workloads.get(namespace, []):
            if workload == name:
                return kind
        raise SessionError(f'no workload "{name}" in namespace "{namespace}"', grpc.StatusCode.NOT_FOUND)

    async def intercept(self, request: pb.InterceptRequest, caller: Caller) -> pb.InterceptReply:
        self.intercepts_made.append(request)
        namespace = request.namespace or self._state.namespace or "default"
        kind = self._known(namespace, request.name)
        for other in self.foreign:
            if (other.namespace, other.workload) == (namespace, request.name):
                since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(other.since_unix_ms / 1000))
                raise SessionError(
                    f"{namespace}/{request.name} is intercepted by {other.client} since {since}",
                    grpc.StatusCode.ALREADY_EXISTS,
                )
        if request.port and request.port not in ("80", "http"):
            raise SessionError(
                f'the service "{request.name}" has no port "{request.port}" (it has 80/http)', grpc.StatusCode.NOT_FOUND
            )
        local = request.local_port or 80
        if local in self.closed_ports:
            raise SessionError(f"nothing listens on localhost:{local}", grpc.StatusCode.FAILED_PRECONDITION)
        if self.intercept_delay:
            await asyncio.sleep(self.intercept_delay)
        item = pb.InterceptState(
            namespace=namespace,
            workload=request.name,
            kind=kind,
            service=request.service or request.name,
            service_port=80,
            port_name="http",
            port=8080,
            local_port=local,
            client=f"uid {caller.uid}",
            since_unix_ms=int(time.time() * 1000),
            phase="active",
            agents_intercepting=1,
            agents_live=1,
            ours=True,
            mount="" if request.mount == "false" else (request.mount or "/tmp/tether-fake-mount"),
        )
        state = self.state()
        kept = [i for i in state.intercepts if (i.namespace, i.workload) != (namespace, request.name)]
        del state.intercepts[:]
        state.intercepts.extend([*kept, item])
        state.intercept_error = ""
        self._set(state)
        return pb.InterceptReply(intercept=item, environment=self.environment)

    async def leave(self, request: pb.LeaveRequest, caller: Caller) -> pb.State:
        namespace = request.namespace or self._state.namespace or "default"
        state = self.state()
        kept = [i for i in state.intercepts if (i.namespace, i.workload) != (namespace, request.name)]
        if len(kept) == len(state.intercepts):
            raise SessionError(f"{namespace}/{request.name} is not intercepted by you", grpc.StatusCode.NOT_FOUND)
        del state.intercepts[:]
        state.intercepts.extend(kept)
        self._set(state)
        return self.state()

    def fail_intercept(self, namespace: str, name: str, error: str) -> None:
        """Mark our intercept of the workload failed (an agent lost), as the real session reports it."""
        state = self.state()
        for item in state.intercepts:
            if (item.namespace, item.workload) == (namespace, name):
                item.phase, item.error = "failed", error
        state.intercept_error = error
        self._set(state)

    async def list_workloads(self, request: pb.ListWorkloadsRequest, caller: Caller) -> pb.WorkloadList:
        if self._state.phase != pb.State.CONNECTED:
            raise SessionError("not connected: connect first", grpc.StatusCode.FAILED_PRECONDITION)
        namespace = request.namespace or self._state.namespace or "default"
        listing = pb.WorkloadList()
        for name, kind in self.workloads.get(namespace, []):
            taken = [
                i for i in [*self.foreign, *self._state.intercepts] if (i.namespace, i.workload) == (namespace, name)
            ]
            listing.workloads.append(
                pb.WorkloadInfo(namespace=namespace, name=name, kind=kind, agent=bool(taken), intercepts=taken)
            )
        return listing

    async def uninstall_agents(self, request: pb.UninstallAgentsRequest, caller: Caller) -> pb.UninstallAgentsReply:
        return pb.UninstallAgentsReply()

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


def _inside(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, allowed: object) -> bool:
    return isinstance(allowed, type(subnet)) and subnet.subnet_of(allowed)  # type: ignore[arg-type]


# --- run by hand ---------------------------------------------------------------------------------------

SAMPLE_CONFLICT = pb.Conflict(
    subnet="10.96.0.0/12",
    route="10.0.0.0/8",
    device="vpn0",
    gateway="100.64.0.1",
    description="cluster subnet 10.96.0.0/12 overlaps the route to 10.0.0.0/8 via 100.64.0.1 on vpn0",
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.doubles.fake_session --socket PATH``: the helper API with this stand-in session.

    For trying the tray or the CLI (and for end-to-end tests of the tray) without root or a cluster. It
    runs as the calling user; SIGINT or SIGTERM stops it and removes its sockets.
    """
    import argparse
    import signal
    from pathlib import Path

    from tether.helper.root.server.server import HelperServer, ServerOptions, ServerSetupError

    parser = argparse.ArgumentParser(prog="python -m tests.doubles.fake_session", description=main.__doc__)
    parser.add_argument("--socket", type=Path, required=True, help="where to serve (an absolute path)")
    parser.add_argument("--step-delay", type=float, default=0.5, help="seconds per connect step (default 0.5)")
    parser.add_argument(
        "--conflict",
        choices=["none", "disconnected", "error"],
        default="none",
        help="connects fail on a sample VPN conflict unless resolved, ending in this phase",
    )
    args = parser.parse_args(argv)
    session = FakeSession(step_delay=args.step_delay)
    if args.conflict != "none":
        phase = pb.State.ERROR if args.conflict == "error" else pb.State.DISCONNECTED
        session.conflict_with([SAMPLE_CONFLICT], phase)
    server = HelperServer(
        session, ServerOptions(socket_path=args.socket.absolute(), require_root=False, set_group=False)
    )

    async def serve() -> None:
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_stop)
        print(f"fake helper serving on {args.socket}", flush=True)
        await server.wait()
        await server.stop(grace=1)
        await session.close()

    try:
        asyncio.run(serve())
    except ServerSetupError as exc:
        print(f"fake helper: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
