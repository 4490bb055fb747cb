"""Agent authentication: the real AgentService over gRPC on loopback, with the API server's TokenReview and
pod reads played by a test double; the claim check and the agent's token file on their own.

The attack: anything that reaches the manager's pod arrives as workload default/web's agent and is handed
other users' --proxy-via flows. Each refusal below is one way of trying.
"""

import asyncio
import ipaddress
import os
import re

import grpc
import pytest

from tests.doubles.fake_token_reviewer import FakeCluster
from tether.manager.agent.token import TokenFile, TokenFileError
from tether.manager.agentauth import (
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    AgentAuthenticator,
    AgentClaim,
    AgentDeniedError,
    PodFacts,
    TokenIdentity,
    bearer_token,
    check_claim,
)
from tether.manager.agents import AgentRegistry
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.grpcopts import grpc_options
from tether.manager.server import AgentService

WEB_0_IP = "10.244.1.11"


def info(pod: str = "web-0", workload: str = "web", ip: str = WEB_0_IP, kind: str = "Deployment") -> pb.AgentInfo:
    return pb.AgentInfo(
        workload=pb.WorkloadRef(namespace="default", name=workload, kind=kind),
        pod_name=pod,
        pod_ip=ipaddress.ip_address(ip).packed,
        version="t",
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Manager:
    """The agent API on loopback, checking tokens against a fake cluster with pods web-0, web-1 (Deployment
    web, through a ReplicaSet) and other-0 (Deployment other)."""

    def __init__(self) -> None:
        self.now = [0.0]
        self.cluster = FakeCluster()
        self.cluster.add_pod("default", "web-0", WEB_0_IP, [("ReplicaSet", "web-5d9c"), ("Deployment", "web")])
        self.cluster.add_pod("default", "web-1", "10.244.2.12", [("ReplicaSet", "web-5d9c"), ("Deployment", "web")])
        self.cluster.add_pod("default", "other-0", "10.244.1.20", [("Deployment", "other")])
        self.agents = AgentRegistry(idle_timeout=30)
        self.auth = AgentAuthenticator(self.cluster, self.cluster, ttl=30, clock=lambda: self.now[0])

    async def __aenter__(self) -> "Manager":
        self.server = grpc.aio.server(options=grpc_options())
        pb_grpc.add_AgentsServicer_to_server(AgentService(self.agents, self.auth), self.server)
        # the server picks its own port: one found free and released first may be taken by then
        port = self.server.add_insecure_port("127.0.0.1:0")
        assert port > 0
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options())
        self.stub = pb_grpc.AgentsStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(0)

    async def refused(self, call: object) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        return raised.value.code(), raised.value.details() or ""


def run(scenario) -> None:
    async def main() -> None:
        async with Manager() as m:
            await asyncio.wait_for(scenario(m), 30)

    asyncio.run(main())


def test_an_agent_without_a_token_is_refused_unauthenticated_on_every_call():
    async def scenario(m: Manager) -> None:
        code, details = await m.refused(m.stub.Arrive(info()))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "no service-account token" in details
        # A real agent's id does not let a caller without its token act as it.
        session = await m.stub.Arrive(info(), metadata=bearer(m.cluster.issue("default", "web-0")))
        assert (await m.refused(m.stub.Remain(session)))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert (await m.refused(m.stub.Depart(session)))[0] == grpc.StatusCode.UNAUTHENTICATED
        watch = m.stub.WatchDials(session)
        assert (await m.refused(watch.read()))[0] == grpc.StatusCode.UNAUTHENTICATED
        tunnel = m.stub.Tunnel()
        await tunnel.write(pb.TunnelMessage(agent_flow=pb.AgentFlow(agent_id=session.agent_id, flow_id="x")))
        assert (await m.refused(tunnel.read()))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert m.agents.get(session.agent_id).pod_name == "web-0", "the agent must still be there"

    run(scenario)


def test_a_token_the_api_server_does_not_accept_is_refused_unauthenticated():
    async def scenario(m: Manager) -> None:
        for token in ("forged", m.cluster.issue("default", "web-0", audiences=("https://kubernetes.default.svc",))):
            code, details = await m.refused(m.stub.Arrive(info(), metadata=bearer(token)))
            assert code == grpc.StatusCode.UNAUTHENTICATED, details
            assert "did not accept the token for tether-manager" in details
        assert len(m.agents) == 0

    run(scenario)


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        (info(workload="other"), "its owners are ReplicaSet web-5d9c -> Deployment web"),
        (info(kind="StatefulSet"), "its owners are"),
        (info(pod="web-1", ip="10.244.2.12"), 'the token is for pod "web-0"'),
        (info(ip="10.244.1.99"), "claims pod IP 10.244.1.99, pod web-0 has 10.244.1.11"),
    ],
    ids=["other-workload", "other-kind", "other-pod", "other-ip"],
)
def test_a_valid_token_for_web_0_claiming_anything_else_is_refused_permission_denied(claim, why):
    async def scenario(m: Manager) -> None:
        token = m.cluster.issue("default", "web-0")
        code, details = await m.refused(m.stub.Arrive(claim, metadata=bearer(token)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and why in details, details
        assert len(m.agents) == 0

    run(scenario)


def test_the_token_of_the_right_pod_is_accepted_and_one_review_serves_a_while():
    async def scenario(m: Manager) -> None:
        token = bearer(m.cluster.issue("default", "web-0"))
        session = await m.stub.Arrive(info(), metadata=token)
        for _ in range(5):
            await m.stub.Remain(session, metadata=token)
        assert len(m.cluster.reviews) == 1, "a successful review is remembered"
        m.now[0] = 31
        await m.stub.Remain(session, metadata=token)
        assert len(m.cluster.reviews) == 2, "and checked again once it is old"
        # Another real agent's token does not let it act as this one.
        other = bearer(m.cluster.issue("default", "web-1"))
        code, details = await m.refused(m.stub.Remain(session, metadata=other))
        assert code == grpc.StatusCode.PERMISSION_DENIED and 'the token is for pod "web-1"' in details
        await m.stub.Depart(session, metadata=token)
        assert len(m.agents) == 0

    run(scenario)


def test_a_repeated_bad_token_costs_one_review_until_its_refusal_is_old():
    """The attack: a caller repeats a forged token so that every call becomes a TokenReview."""

    async def scenario(m: Manager) -> None:
        forged = bearer("forged-token")
        for _ in range(200):
            code, details = await m.refused(m.stub.Arrive(info(), metadata=forged))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "invalid bearer token" in details
        assert len(m.cluster.reviews) == 1, "the refusal is remembered"
        m.now[0] = 6
        await m.refused(m.stub.Arrive(info(), metadata=forged))
        assert len(m.cluster.reviews) == 2, "and asked again once it is old"
        # A valid token claiming another pod is refused from memory as well, and the right claim still works.
        token = bearer(m.cluster.issue("default", "web-0"))
        for _ in range(3):
            code, _ = await m.refused(m.stub.Arrive(info(pod="web-1", ip="10.244.2.12"), metadata=token))
            assert code == grpc.StatusCode.PERMISSION_DENIED
        assert len(m.cluster.reviews) == 3
        await m.stub.Arrive(info(), metadata=token)

    run(scenario)


def test_only_a_few_reviews_run_at_once_however_many_tokens_arrive():
    async def scenario(m: Manager) -> None:
        m.cluster.delay = 0.02
        calls = [m.refused(m.stub.Arrive(info(), metadata=bearer(f"forged-{i}"))) for i in range(64)]
        answers = await asyncio.gather(*calls)
        assert {code for code, _ in answers} == {grpc.StatusCode.UNAUTHENTICATED}
        assert len(m.cluster.reviews) == 64 and m.cluster.most_in_flight == 8

    run(scenario)


def test_an_api_server_that_does_not_answer_means_try_again():
    async def scenario(m: Manager) -> None:
        token = bearer(m.cluster.issue("default", "web-0"))
        m.cluster.down = True
        code, details = await m.refused(m.stub.Arrive(info(), metadata=token))
        assert code == grpc.StatusCode.UNAVAILABLE and "connection refused" in details

    run(scenario)


# --- the claim check on its own ---------------------------------------------------------------------


def identity(pod: PodFacts, account: str = "default", namespace: str = "default") -> TokenIdentity:
    extra = {POD_NAME_EXTRA: (pod.name,), POD_UID_EXTRA: (pod.uid,)}
    return TokenIdentity(True, f"system:serviceaccount:{namespace}:{account}", extra)


STATEFUL = PodFacts("db", "db-0", "uid-1", "default", frozenset({"10.0.0.5"}), (("StatefulSet", "db"),))


def claim(workload: str = "db", kind: str = "StatefulSet", pod: str = "db-0", ip: str | None = "10.0.0.5"):
    return AgentClaim("db", workload, kind, pod, ipaddress.ip_address(ip) if ip else None)


def test_check_claim_accepts_the_pod_of_its_workload_and_names_what_differs():
    check_claim(identity(STATEFUL, namespace="db"), STATEFUL, claim())
    check_claim(identity(STATEFUL, namespace="db"), STATEFUL, claim(ip=None))
    earlier = PodFacts("db", "db-0", "uid-0", "default", STATEFUL.ips, STATEFUL.owners)
    for ident, pod, wanted, text in (
        (identity(STATEFUL, namespace="db"), earlier, claim(), "an earlier pod named db/db-0"),
        (identity(STATEFUL, namespace="web"), STATEFUL, claim(), 'namespace "web"'),
        (identity(STATEFUL, "admin", "db"), STATEFUL, claim(), 'service account "admin"'),
        (TokenIdentity(True, "alice"), STATEFUL, claim(), 'not a service account\'s (user "alice")'),
        (TokenIdentity(True, "system:serviceaccount:db:default"), STATEFUL, claim(), "not bound to a pod"),
        (identity(STATEFUL, namespace="db"), None, claim(), "pod db/db-0 does not exist"),
        (identity(STATEFUL, namespace="db"), STATEFUL, claim(kind="Deployment"), "StatefulSet db"),
    ):
        with pytest.raises(AgentDeniedError, match=re.escape(text)):
            check_claim(ident, pod, wanted)


def test_bearer_token_reads_the_authorization_metadata_only():
    assert bearer_token((("x", "y"), ("authorization", "Bearer abc "))) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) == ""
    assert bearer_token(None) == ""


# --- the agent's token file ------------------------------------------------------------------------


def test_the_token_file_is_read_again_when_it_changes_and_errors_name_it(tmp_path):
    path = tmp_path / "token"
    token = TokenFile(path)
    with pytest.raises(TokenFileError, match=str(path)):
        token.read()
    path.write_text("first\n")
    assert token.metadata() == (("authorization", "Bearer first"),)
    # The kubelet rotates a projected token by swapping the file for a new one.
    fresh = tmp_path / "token.new"
    fresh.write_text("second")
    os.replace(fresh, path)
    assert token.read() == "second"
    path.write_text("\n")
    with pytest.raises(TokenFileError, match="holds no token"):
        token.read()
