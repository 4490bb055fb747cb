"""The traffic-manager's gRPC service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from tether.manager.agentauth import (
    AgentAuthenticator,
    AgentAuthError,
    AgentAuthUnavailableError,
    AgentClaim,
    AgentDeniedError,
    AgentUnauthenticatedError,
    bearer_token,
)
from tether.manager.agents import (
    Agent,
    AgentError,
    AgentRegistry,
    UnknownAgentError,
    UnknownFlowError,
    agent_fields,
    claim_of,
)
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.skew import MIN_CLIENT_API_LEVEL, Side, judge_client
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.destinations import DestinationPolicy
from tether.manager.dns import ClusterResolver, DNSLookupError, pack_record
from tether.manager.limits import KeyedLimit, LimitReachedError, ManagerLimits
from tether.manager.sessions import SessionTable, UnknownSessionError
from tether.manager.tunnel.flows import FlowServer

log = logging.getLogger("tether.manager.server")


class ManagerService(pb_grpc.ManagerServicer):
    def __init__(
        self,
        sessions: SessionTable,
        hub: ClusterInfoHub,
        resolver: ClusterResolver,
        agents: AgentRegistry | None = None,
        tunnel_mux_port: int = 0,
        destinations: DestinationPolicy | None = None,
        limits: ManagerLimits | None = None,
        *,
        identity: Side | None = None,
        min_client_api_level: int = MIN_CLIENT_API_LEVEL,
    ) -> None:
        self._sessions = sessions
        # What this manager tells clients it is (a test hook may make it claim another version), and the
        # oldest client API level it serves.
        self.identity = identity if identity is not None else Side(__version__, API_LEVEL)
        self.min_client_api_level = min_client_api_level
        self._hub = hub
        self._resolver = resolver
        # Flows with `via` go to these agents; without a registry every such flow finds no agent.
        self._agents = agents if agents is not None else AgentRegistry(idle_timeout=60.0)
        # The same flows, whether a Tunnel stream or a tunnel mux stream (on this port; 0: none) carries them.
        self.flows = FlowServer(sessions, self._agents, limits, destinations)
        self.tunnel_mux_port = tunnel_mux_port
        self._watches = KeyedLimit(self.flows.limits.watches_per_session, "cluster-info watches")

    async def Version(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.VersionInfo:
        return pb.VersionInfo(
            name="tether-manager",
            version=self.identity.version,
            api_level=self.identity.api_level,
            tunnel_mux_port=self.tunnel_mux_port,
            min_client_api_level=self.min_client_api_level,
        )

    async def ArriveAsClient(self, request: pb.ClientInfo, context: grpc.aio.ServicerContext) -> pb.SessionInfo:
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a client must give its name")
        skew = judge_client(Side(request.version, request.api_level), self.identity, self.min_client_api_level)
        if not skew.compatible:
            log.warning("refusing a client: %s", skew.message, extra={"client": request.name})
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, skew.message)
        try:
            session = self._sessions.arrive(request.name, request.namespace, request.version, _peer_ip(context.peer()))
        except LimitReachedError as exc:
            log.warning("refusing a session: %s", exc, extra={"client": request.name})
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise
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
        try:
            self._watches.acquire(request.session_id, f"session {request.session_id[:8]}")
        except LimitReachedError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise
        try:
            async for info in self._hub.watch():
                yield info
        finally:
            self._watches.release(request.session_id)

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
        await self.flows.serve(first, request_iterator, context.write)

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> object:
        try:
            return self._sessions.get(session_id)
        except UnknownSessionError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # abort raises; this keeps type checkers honest


class AgentService(pb_grpc.AgentsServicer):
    """What tether-agents call: arrive, keep alive, receive dials, and carry the flows they dial.

    Every call carries the agent's pod service-account token, checked against the pod the agent claims
    (at arrival) or claimed (on later calls, by its agent id) before anything else happens.
    """

    def __init__(self, agents: AgentRegistry, authenticator: AgentAuthenticator) -> None:
        self._agents = agents
        self._auth = authenticator

    async def Arrive(self, request: pb.AgentInfo, context: grpc.aio.ServicerContext) -> pb.AgentSession:
        token = await self._token(context)
        try:
            claim = claim_of(request)
        except AgentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        peer = _peer_ip(context.peer())
        await self._verify(token, claim, context, peer)
        agent = self._agents.arrive(request)
        fields = {**agent_fields(agent), "version": agent.version, "peer": peer}
        if agent.pod_ip is not None and peer and peer != str(agent.pod_ip):
            # Not refused: a CNI or proxy may rewrite the source address; but worth seeing in the log.
            log.warning("tether-agent connects from another address than its pod IP", extra=fields)
        log.info("tether-agent arrived", extra=fields)
        return pb.AgentSession(agent_id=agent.agent_id)

    async def Remain(self, request: pb.AgentSession, context: grpc.aio.ServicerContext) -> pb.Empty:
        agent = await self._agent(request.agent_id, context)
        self._agents.remain(agent.agent_id)
        return pb.Empty()

    async def Depart(self, request: pb.AgentSession, context: grpc.aio.ServicerContext) -> pb.Empty:
        token = await self._token(context)
        try:
            agent = self._agents.get(request.agent_id)
        except UnknownAgentError:
            return pb.Empty()  # gone already: nothing to do, whoever asks
        await self._verify(token, agent.claim, context)
        self._agents.depart(request.agent_id)
        log.info("tether-agent departed", extra=agent_fields(agent))
        return pb.Empty()

    async def WatchDials(
        self, request: pb.AgentSession, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DialRequest]:
        agent = await self._agent(request.agent_id, context)
        with self._agents.watching(agent) as dials:
            # Headers now tell the agent it is live: dials for its workload come to it from here on.
            await context.send_initial_metadata(())
            async for dial in dials:
                yield dial

    async def Tunnel(
        self, request_iterator: AsyncIterator[pb.TunnelMessage], context: grpc.aio.ServicerContext
    ) -> None:
        token = await self._token(context)
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "agent_flow":
            kind = first.WhichOneof("kind") or "an empty message"
            message = f"the first agent tunnel message must be agent_flow, got {kind}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        try:
            agent = self._agents.get(first.agent_flow.agent_id)
        except UnknownAgentError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        # A flow's id reaches only the agent it was given to, but holding it must not be enough.
        await self._verify(token, agent.claim, context)
        try:
            await self._agents.attach(first.agent_flow, request_iterator, context.write)
        except UnknownFlowError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except AgentError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    async def _agent(self, agent_id: str, context: grpc.aio.ServicerContext) -> Agent:
        """The live agent with this id, once the call's token proves it is that agent's pod."""
        token = await self._token(context)
        try:
            agent = self._agents.get(agent_id)
        except UnknownAgentError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        await self._verify(token, agent.claim, context)
        return agent

    async def _token(self, context: grpc.aio.ServicerContext) -> str:
        token = bearer_token(context.invocation_metadata())
        if not token:
            # Refused before the request is looked at: without a token there is nothing to say to the caller.
            await self._refuse(AgentUnauthenticatedError(self._auth.missing_token()), None, context)
        return token

    async def _verify(self, token: str, claim: AgentClaim, context: grpc.aio.ServicerContext, peer: str = "") -> None:
        try:
            await self._auth.verify(token, claim)
        except AgentAuthError as exc:
            await self._refuse(exc, claim, context, peer)

    async def _refuse(
        self, exc: AgentAuthError, claim: AgentClaim | None, context: grpc.aio.ServicerContext, peer: str = ""
    ) -> NoReturn:
        fields = {"claim": claim.describe() if claim else "", "peer": peer or _peer_ip(context.peer())}
        log.warning("refused a tether-agent: %s", exc, extra=fields)
        await context.abort(_AUTH_CODES[type(exc)], str(exc))
        raise exc  # abort raises; this keeps type checkers honest


_AUTH_CODES = {
    AgentUnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    AgentDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    AgentAuthUnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def _peer_ip(peer: str) -> str:
    """The address in a gRPC peer string ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000"); "" for others."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rsplit(":", 1)[0]
    return host.strip("[]")


async def expire_sessions(sessions: SessionTable, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for session in sessions.expire():
            log.info("session expired", extra={"session": session.session_id[:8], "client": session.name})
