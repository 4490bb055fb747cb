"""The helper's link to the traffic-manager: channel, session, keep-alive, cluster-info stream, reconnects.

The link survives the manager restarting or the port-forward dropping: it
reports the loss, reconnects with backoff, arrives again and carries on
streaming cluster info. Whoever uses the stub reads `stub`/`session_id` anew
for each call, so flows started after a reconnect use the new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import grpc
import kubernetes

from tether.helper.cluster.manager_dial import ManagerConnection
from tether.helper.root.tunnel.mux_client import MuxClient, TransportOpener, connect_mux
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.grpcopts import grpc_options
from tether.manager.api.skew import Side, judge_manager
from tether.manager.api.version import API_LEVEL, __version__

log = logging.getLogger("tether.helper.manager")

KEEPALIVE_INTERVAL = 5.0
CALL_TIMEOUT = 10.0
DNS_TIMEOUT = 4.0
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0


class VersionSkewError(ConnectionError):
    """This client and the traffic-manager do not speak compatible API levels; the text names both versions and
    what to upgrade."""


ClusterInfoHandler = Callable[[pb.ClusterInfo], Awaitable[None]]
StatusHandler = Callable[[str, str], None]  # ("connected" | "reconnecting", detail)


class ManagerLink:
    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        manager_namespace: str,
        client: pb.ClientInfo,
        manager_address: str = "",
    ) -> None:
        self._configuration = configuration
        self._manager_namespace = manager_namespace
        self._client = client
        self._manager_address = manager_address
        self._connection: ManagerConnection | None = None
        self._channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.ManagerStub | None = None
        self.session_id = ""
        self.version = ""
        self.api_level = 0
        self.manager_pod = ""
        self._supervisor: asyncio.Task[None] | None = None
        self.reconnects = 0
        # The tunnel mux, when the manager offers one and it could be opened; else flows use Tunnel streams.
        self.mux: MuxClient | None = None
        self.use_mux = True

    async def open(self) -> None:
        """Connect and arrive once; errors propagate (the caller decides whether to retry)."""
        if self._manager_address:
            # An explicit dns:/// scheme: a bare target such as "unix:80" would be read as a local socket.
            target = f"dns:///{self._manager_address}"
            self._channel = grpc.aio.insecure_channel(target, options=grpc_options())
            self.manager_pod = self._manager_address
        else:
            self._connection = ManagerConnection(self._configuration, self._manager_namespace)
            self._channel = await self._connection.open()
            pod = self._connection.pod
            self.manager_pod = f"{pod.namespace}/{pod.name}" if pod else ""
        self.stub = pb_grpc.ManagerStub(self._channel)
        version = await self.stub.Version(pb.Empty(), timeout=CALL_TIMEOUT)
        self.version, self.api_level = version.version, version.api_level
        manager = Side(version.version, version.api_level)
        skew = judge_manager(
            Side(__version__, API_LEVEL), manager, version.min_client_api_level, self._manager_namespace
        )
        if not skew.compatible:
            raise VersionSkewError(skew.message)
        try:
            arrived = await self.stub.ArriveAsClient(self._client, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # the manager's own skew refusal
                raise VersionSkewError(exc.details() or "the traffic-manager refused this client's version") from None
            raise
        self.session_id = arrived.session_id
        if version.tunnel_mux_port and self.use_mux:
            self.mux = await self._open_mux(version.tunnel_mux_port)
        else:
            log.info("the traffic-manager offers no tunnel mux; flows use gRPC Tunnel streams")

    async def _open_mux(self, port: int) -> MuxClient | None:
        """The tunnel mux for this session, or None (logged) when it cannot be had: flows fall back to gRPC."""
        opener: TransportOpener
        if self._manager_address:
            host = _host(self._manager_address)
            where = f"{host}:{port}"

            def opener(factory: Callable[[], MuxClient]) -> Awaitable[tuple[asyncio.BaseTransport, MuxClient]]:
                return asyncio.get_running_loop().create_connection(factory, host, port)

        else:
            assert self._connection is not None
            opener = functools.partial(self._connection.connect_port, port)
            where = f"a port-forward to {self.manager_pod} port {port}"
        try:
            mux = await connect_mux(opener, self.session_id, timeout=CALL_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "cannot open the tunnel mux through %s (%s); flows use gRPC Tunnel streams", where, _describe(exc)
            )
            return None
        log.info("tunnel mux connected", extra={"through": where})
        return mux

    async def first_cluster_info(self, timeout: float = 30.0) -> pb.ClusterInfo:
        assert self.stub is not None
        call = self.stub.WatchClusterInfo(pb.SessionInfo(session_id=self.session_id))
        try:
            info = await asyncio.wait_for(call.read(), timeout)
        finally:
            call.cancel()
        if info is grpc.aio.EOF:
            raise ConnectionError("the traffic-manager ended the cluster-info stream")
        return info

    async def lookup_dns(
        self, name: str, qtype: int, via: tuple[str, str, str] | None = None
    ) -> tuple[int, list[bytes]]:
        """Resolve `name` in the cluster: (rcode, the answer records in wire form); with ``via`` (namespace,
        name, kind) in that workload's pod, by its agent. ConnectionError while the link has no session
        (reconnecting); the DNS server answers SERVFAIL then."""
        if self.stub is None or not self.session_id:
            raise ConnectionError("not connected to the traffic-manager")
        request = pb.DNSRequest(session_id=self.session_id, name=name, qtype=qtype)
        if via is not None:
            request.via.namespace, request.via.name, request.via.kind = via
        reply = await self.stub.LookupDNS(request, timeout=DNS_TIMEOUT)
        return reply.rcode, list(reply.answers)

    def supervise(self, on_info: ClusterInfoHandler, on_status: StatusHandler) -> None:
        """From now on: keep the session alive, stream cluster info, and reconnect after any loss."""
        self._supervisor = asyncio.ensure_future(self._supervise(on_info, on_status))

    async def _supervise(self, on_info: ClusterInfoHandler, on_status: StatusHandler) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._serve(on_info)
                reason = "the cluster-info stream ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _describe(exc)
            log.warning("lost the traffic-manager: %s; reconnecting", reason)
            on_status("reconnecting", reason)
            while True:
                await self._close_transport()
                await asyncio.sleep(backoff)
                try:
                    await self.open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    detail = _describe(exc)
                    log.info("reconnect failed: %s (next try in %.1fs)", detail, backoff)
                    on_status("reconnecting", detail)
                    continue
                self.reconnects += 1
                backoff = BACKOFF_FIRST
                log.info("reconnected to the traffic-manager", extra={"manager": self.manager_pod})
                on_status("connected", "")
                break

    async def _serve(self, on_info: ClusterInfoHandler) -> None:
        """Stream cluster info and send keep-alives until either fails."""
        assert self.stub is not None
        stub, session = self.stub, pb.SessionInfo(session_id=self.session_id)

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(KEEPALIVE_INTERVAL)
                await stub.Remain(pb.RemainRequest(session=session), timeout=CALL_TIMEOUT)

        async def watch() -> None:
            async for info in stub.WatchClusterInfo(session):
                await on_info(info)

        async def mux_watch(mux: MuxClient) -> None:
            reason = await asyncio.shield(mux.closed)
            raise ConnectionError(f"the tunnel mux connection ended: {reason}")

        tasks = [asyncio.ensure_future(keepalive()), asyncio.ensure_future(watch())]
        if self.mux is not None:
            # The mux shares the link's fate: losing it is losing the manager (a restart, a dropped forward).
            tasks.append(asyncio.ensure_future(mux_watch(self.mux)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_transport(self) -> None:
        self.session_id = ""
        if self.mux is not None:
            self.mux.close("the client is disconnecting")
            self.mux = None
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
        self.stub = None

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if self.stub is not None and self.session_id:
            with contextlib.suppress(Exception):
                await self.stub.Depart(pb.SessionInfo(session_id=self.session_id), timeout=2)
        await self._close_transport()


def client_info(name: str, namespace: str) -> pb.ClientInfo:
    return pb.ClientInfo(name=name, namespace=namespace, version=__version__, api_level=API_LEVEL)


def _host(address: str) -> str:
    """The host of HOST:PORT or [V6]:PORT."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
