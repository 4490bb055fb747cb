"""The traffic-manager's gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from tether.manager import __version__
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.dns import ClusterResolver, DNSLookupError, pack_record
from tether.manager.rpc import manager_pb2 as pb
from tether.manager.rpc import manager_pb2_grpc as pb_grpc
from tether.manager.sessions import SessionTable, UnknownSessionError
from tether.manager.tunnel import framing
from tether.manager.tunnel.dialer import run_flow
from tether.manager.tunnel.framing import TunnelError

log = logging.getLogger("tether.manager.server")

API_LEVEL = 1


class ManagerService(pb_grpc.ManagerServicer):
    def __init__(self, sessions: SessionTable, hub: ClusterInfoHub, resolver: ClusterResolver) -> None:
        self._sessions = sessions
        self._hub = hub
        self._resolver = resolver

    async def Version(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.VersionInfo:
        return pb.VersionInfo(name="tether-manager", version=__version__, api_level=API_LEVEL)

    async def ArriveAsClient(self, request: pb.ClientInfo, context: grpc.aio.ServicerContext) -> pb.SessionInfo:
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a client must give its name")
        session = self._sessions.arrive(request.name, request.namespace, request.version)
        log.info(
            "client arrived",
            extra={"session": session.session_id[:8], "client": request.name, "namespace": request.namespace},
        )
        return pb.SessionInfo(session_id=session.session_id)

    async def Remain(self, request: pb.RemainRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        await self._session(request.session.session_id, context)
        self._sessions.remain(request.session.session_id)
        return pb.Empty()

    async def Depart(self, request: pb.SessionInfo, context: grpc.aio.ServicerContext) -> pb.Empty:
        session = self._sessions.depart(request.session_id)
        if session is not None:
            log.info("client departed", extra={"session": session.session_id[:8], "client": session.name})
        return pb.Empty()

    async def WatchClusterInfo(
        self, request: pb.SessionInfo, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClusterInfo]:
        await self._session(request.session_id, context)
        async for info in self._hub.watch():
            yield info

    async def LookupDNS(self, request: pb.DNSRequest, context: grpc.aio.ServicerContext) -> pb.DNSResponse:
        session = await self._session(request.session_id, context)
        try:
            result = await self._resolver.lookup(request.name, request.qtype, session.namespace)
        except DNSLookupError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.DNSResponse(rcode=result.rcode, answers=[pack_record(rr) for rr in result.answers])

    async def Tunnel(
        self, request_iterator: AsyncIterator[pb.TunnelMessage], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        try:
            spec = framing.parse_open(first)
            self._sessions.get(spec.session_id)
        except (TunnelError, UnknownSessionError) as exc:
            await context.write(framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            return
        try:
            await run_flow(spec, request_iterator, context.write)
        except TunnelError as exc:
            log.warning("tunnel %s broke the protocol: %s", spec.describe(), exc)
            with contextlib.suppress(Exception):
                await context.write(framing.abort_message(str(exc)))

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> object:
        try:
            return self._sessions.get(session_id)
        except UnknownSessionError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # abort raises; this keeps type checkers honest


async def expire_sessions(sessions: SessionTable, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for session in sessions.expire():
            log.info("session expired", extra={"session": session.session_id[:8], "client": session.name})


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", framing.MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", framing.MAX_MESSAGE_BYTES),
        # Clients keep sessions alive themselves; these catch dead transports (a dropped port-forward).
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]
