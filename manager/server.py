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
from tether.manager.agentdns import AgentLookupError, StrayAnswerError
from tether.manager.agents import (
    Agent,
    AgentError,
    AgentRegistry,
    UnknownAgentError,
    UnknownFlowError,
    agent_fields,
    claim_of,
)
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.skew import MIN_CLIENT_API_LEVEL, Side, judge_client
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.destinations import DestinationPolicy
from tether.manager.dns import ClusterResolver, DNSLookupError, pack_record, validate_query
from tether.manager.intercepts import (
    Intercept,
    InterceptConflictError,
    InterceptTable,
    UnknownInterceptError,
    key_of,
)
from tether.manager.limits import KeyedLimit, LimitReachedError, ManagerLimits
from tether.manager.sessions import ClientSession, SessionTable, UnknownSessionError
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
        intercepts: InterceptTable | None = None,
    ) -> None:
        self._sessions = sessions
        #: shared with the AgentService, which routes the agents' intercepted connections by it
        self.intercepts = intercepts if intercepts is not None else InterceptTable()
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
            self._end_intercepts(request.session_id, "the client departed")
        return pb.Empty()

    # --- intercepts ---------------------------------------------------------------------------------

    async def CreateIntercept(
        self, request: pb.InterceptRequest, context: grpc.aio.ServicerContext
    ) -> pb.InterceptInfo:
        session = await self._session(request.session_id, context)
        try:
            intercept, new = self.intercepts.create(request.spec, request.session_id, session.name)
        except AgentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        except InterceptConflictError as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            raise
        told = self._tell(intercept.spec.workload)
        if new:
            log.info(
                "intercept started",
                extra={"session": request.session_id[:8], "intercept": intercept.describe(), "agents": told},
            )
        return intercept_info(intercept, self._agents)

    async def RemoveIntercept(self, request: pb.InterceptRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        await self._session(request.session_id, context)
        try:
            intercept = self.intercepts.remove(key_of(request.spec), request.session_id)
        except UnknownInterceptError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        self._tell(intercept.spec.workload)
        log.info("intercept ended", extra={"session": request.session_id[:8], "intercept": intercept.describe()})
        return pb.Empty()

    async def ListIntercepts(self, request: pb.SessionInfo, context: grpc.aio.ServicerContext) -> pb.InterceptList:
        await self._session(request.session_id, context)
        return pb.InterceptList(
            intercepts=[intercept_info(i, self._agents) for i in self.intercepts.all()],
            agents=[agent_report(a) for a in self._agents.agents()],
        )

    async def WatchInterceptDials(
        self, request: pb.SessionInfo, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DialRequest]:
        session = await self._session(request.session_id, context)
        try:
            with self._agents.client_watching(request.session_id, session.name) as dials:
                await context.send_initial_metadata(())
                async for dial in dials:
                    yield dial
        finally:
            if self._agents.client_dialer(request.session_id) is None:
                # Nobody dials for this client any more (its helper went away): its intercepts end.
                self._end_intercepts(request.session_id, "the client stopped taking intercepted connections")

    def _end_intercepts(self, session_id: str, why: str) -> None:
        for intercept in self.intercepts.drop_session(session_id):
            self._tell(intercept.spec.workload)
            log.info("intercept ended: %s", why, extra={"session": session_id[:8], "intercept": intercept.describe()})

    def _tell(self, workload: pb.WorkloadRef) -> int:
        return self._agents.tell(
            workload.namespace, workload.name, self.intercepts.ports_of(workload.namespace, workload.name)
        )

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
            validate_query(request.name, request.qtype)
            if request.HasField("via"):
                # The client intercepts that workload: resolve as its pod does.
                return await self._agents.lookups.resolve(request.via, request.name, request.qtype)
            result = await self._resolver.lookup(request.name, request.qtype, session.namespace)
        except DNSLookupError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AgentLookupError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.DNSResponse(rcode=result.rcode, answers=[pack_record(rr) for rr in result.answers])

    async def Tunnel(
        self, request_iterator: AsyncIterator[pb.TunnelMessage], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        await self.flows.serve(first, request_iterator, context.write)

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> ClientSession:
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

    def __init__(
        self,
        agents: AgentRegistry,
        authenticator: AgentAuthenticator,
        intercepts: InterceptTable | None = None,
    ) -> None:
        self._agents = agents
        self._auth = authenticator
        self._intercepts = intercepts if intercepts is not None else InterceptTable()

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
            # The workload's intercepts first, so a new agent knows which ports are not its app's now.
            yield pb.DialRequest(intercepts=self._intercepts.ports_of(agent.namespace, agent.workload))
            async for dial in dials:
                yield dial

    async def Report(self, request: pb.AgentReport, context: grpc.aio.ServicerContext) -> pb.Empty:
        agent = await self._agent(request.agent_id, context)
        report = pb.AgentReport()
        report.CopyFrom(request)
        agent.report = report
        return pb.Empty()

    async def AnswerDNS(self, request: pb.AgentDNSAnswer, context: grpc.aio.ServicerContext) -> pb.Empty:
        agent = await self._agent(request.agent_id, context)
        try:
            self._agents.lookups.answer(agent.agent_id, request)
        except StrayAnswerError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.Empty()

    async def Tunnel(
        self, request_iterator: AsyncIterator[pb.TunnelMessage], context: grpc.aio.ServicerContext
    ) -> None:
        token = await self._token(context)
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") == "intercepted":
            await self._intercepted(token, first.intercepted, request_iterator, context)
            return
        if first.WhichOneof("kind") != "agent_flow":
            kind = first.WhichOneof("kind") or "an empty message"
            message = f"the first agent tunnel message must be agent_flow or intercepted, got {kind}"
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

    async def _intercepted(
        self,
        token: str,
        flow: pb.InterceptedFlow,
        agent_messages: AsyncIterator[pb.TunnelMessage],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """A connection an agent accepted on an intercepted port: splice it to the intercepting client, which
        dials its local port."""
        try:
            agent = self._agents.get(flow.agent_id)
        except UnknownAgentError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        await self._verify(token, agent.claim, context)
        intercept = self._intercepts.get((agent.namespace, agent.workload, flow.port))
        dialer = self._agents.client_dialer(intercept.session_id) if intercept is not None else None
        if intercept is None or dialer is None:
            why = f"{agent.namespace}/{agent.workload} port {flow.port} is not intercepted"
            await context.write(framing.dial_failed(pb.DialResult.REFUSED, why))
            return
        open_request = pb.TunnelOpen(
            protocol=pb.TCP,
            destination=pb.Endpoint(ip=bytes([127, 0, 0, 1]), port=flow.port),
            source=flow.source if flow.HasField("source") else None,
            via=pb.WorkloadRef(namespace=agent.namespace, name=agent.workload, kind=agent.kind),
        )
        try:
            spec = framing.parse_open(pb.TunnelMessage(open=open_request))
        except framing.TunnelError as exc:
            await context.write(framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            return
        await self._agents.splice_to(dialer, spec, open_request, agent_messages, context.write)

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


def intercept_info(intercept: Intercept, agents: AgentRegistry) -> pb.InterceptInfo:
    """An intercept as clients see it: with how many of the workload's live agents report taking it, and the
    app's environment as one of them reported it."""
    namespace, name, port = intercept.key
    live = agents.live(namespace, name)
    taking = [
        a
        for a in live
        if a.report is not None and any(p.port == port and p.intercepted_by == intercept.client for p in a.report.ports)
    ]
    environment = next((dict(a.report.environment) for a in live if a.report is not None), {})
    return pb.InterceptInfo(
        spec=intercept.spec,
        client=intercept.client,
        since_unix_ms=int(intercept.since * 1000),
        agents_intercepting=len(taking),
        agents_live=len(live),
        environment=environment,
    )


def agent_report(agent: Agent) -> pb.AgentReport:
    """An agent's last report for lists: its workload and pod, without its id (which acts as the agent)."""
    report = pb.AgentReport(
        workload=pb.WorkloadRef(namespace=agent.namespace, name=agent.workload, kind=agent.kind),
        pod_name=agent.pod_name,
    )
    if agent.report is not None:
        report.ports.extend(agent.report.ports)
    return report


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
