"""The manager's TokenReview and pod reads against the lab's Kubernetes API emulator, through the official
client over HTTP: a real agent's claim passes, the same token claiming another workload does not."""

import asyncio
import ipaddress

import kubernetes
import pytest

from tether.lab.apiserver.server import LabApiServerThread
from tether.manager.agentauth import AgentAuthenticator, AgentClaim, AgentDeniedError, AgentUnauthenticatedError
from tether.manager.kubereview import KubePodReader, KubeTokenReviewer


def web_pod(name: str, ip: str, owner: tuple[str, str] = ("Deployment", "web")) -> dict:
    kind, owner_name = owner
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": "u-1", "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "web", "image": "web:1"}], "serviceAccountName": "default"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


@pytest.fixture
def cluster():
    seed = [web_pod("web-0", "10.244.1.11"), web_pod("db-0", "10.244.1.12", ("ReplicaSet", "db-77f"))]
    with LabApiServerThread(seed=seed) as server:
        configuration = kubernetes.client.Configuration()
        configuration.host = server.url
        with kubernetes.client.ApiClient(configuration) as api:
            yield server, api


def claim(workload: str = "web", pod: str = "web-0", ip: str = "10.244.1.11") -> AgentClaim:
    return AgentClaim("default", workload, "Deployment", pod, ipaddress.ip_address(ip))


def test_the_pods_token_passes_for_its_own_claim_only(cluster):
    server, api = cluster
    token = server.call(server.emulator.issue_token, "default", "web-0", ["tether-manager"])
    auth = AgentAuthenticator(KubeTokenReviewer(api), KubePodReader(api))

    async def scenario() -> None:
        await auth.verify(token, claim())
        with pytest.raises(AgentDeniedError, match="its owners are Deployment web"):
            await auth.verify(token, claim(workload="other"))
        with pytest.raises(AgentUnauthenticatedError, match="did not accept the token"):
            await auth.verify("forged", claim())
        other = AgentAuthenticator(KubeTokenReviewer(api), KubePodReader(api), audience="someone-else")
        with pytest.raises(AgentUnauthenticatedError, match="audiences is invalid"):
            await other.verify(token, claim())

    asyncio.run(scenario())


def test_the_pod_reader_follows_the_controller_chain_and_knows_missing_pods(cluster):
    _, api = cluster
    reader = KubePodReader(api)

    async def scenario() -> None:
        web = await reader.pod("default", "web-0")
        assert web is not None and web.ips == {"10.244.1.11"} and web.owners == (("Deployment", "web"),)
        assert web.service_account == "default" and web.uid
        # The emulator serves no ReplicaSets: the chain ends at the ReplicaSet it cannot read.
        db = await reader.pod("default", "db-0")
        assert db is not None and db.owners == (("ReplicaSet", "db-77f"),)
        assert await reader.pod("default", "nope") is None

    asyncio.run(scenario())
