"""proxy-via in the lab: flows dialed by the tether-agents that run in the web pods, asked for through the
real manager the way the helper reaches it (the API server's port-forward, from the workstation)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from manager_client import ManagerClient, kube_configuration, restart_manager

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import Protocol

WEB = ("default", "web", "Deployment")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
#: what the two web pods' own 127.0.0.1:9090 answer
BOTH_WEB_PODS = {f"hello from web on loopback (pod web-{i})" for i in (0, 1)}


class Client(ManagerClient):
    """A client session with the lab's manager that asks for flows dialed by an agent."""

    def __init__(self, lab: Any, workstation: Any) -> None:
        super().__init__(lab, workstation, name="agent-test")

    async def exchange(
        self, ip: str, port: int, payload: bytes, via: tuple[str, str, str] | None = WEB
    ) -> tuple[pb.DialResult, bytes]:
        """Open a TCP flow, send payload and eof, return the dial result and everything received."""
        call = self.stub.Tunnel()
        target = (ipaddress.ip_address(ip), port)
        await call.write(framing.open_message(self.session, Protocol.TCP, target, dial_timeout=5, via=via))
        result = (await call.read()).dial
        if not result.ok:
            call.cancel()
            return result, b""

        async def send() -> None:
            for piece in framing.chunks(payload):
                await call.write(framing.data_message(piece))
            await call.write(framing.eof_message())

        sender = asyncio.ensure_future(send())
        received = bytearray()
        while (message := await call.read()).WhichOneof("kind") == "data":
            received += message.data
        assert message.WhichOneof("kind") == "eof", message
        await sender
        await call.done_writing()
        return result, bytes(received)


@pytest.fixture(scope="module")
def client(lab, workstation):
    session = Client(lab, workstation)
    # the agents are sidecars the lab's controller starts: ready once running, each arrives at the manager
    # a moment later (its backoff after the manager was missing), as in a real cluster; wait for both
    deadline, answered = time.monotonic() + 30, set()
    while answered != BOTH_WEB_PODS:
        result, response = session.run(lambda: session.exchange("127.0.0.1", 9090, GET))
        assert time.monotonic() < deadline, (result.error, answered)
        if result.ok:
            answered.add(response.split(b"\r\n\r\n", 1)[1].decode().strip())
        else:
            time.sleep(0.2)
    yield session
    session.close()


GET = b"GET / HTTP/1.1\r\nHost: mesh.default\r\nConnection: close\r\n\r\n"


def test_via_web_reaches_the_web_pods_own_loopback_through_both_agents(lab, client):
    bodies = set()
    for _ in range(4):
        result, response = client.run(lambda: client.exchange("127.0.0.1", 9090, GET))
        assert result.ok, result.error
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        bodies.add(response.split(b"\r\n\r\n", 1)[1].decode().strip())
    # the agents take turns: each answer comes from its own pod's 127.0.0.1:9090
    assert bodies == BOTH_WEB_PODS


def test_via_web_to_the_echo_cluster_ip_echoes_a_megabyte(lab, client):
    payload = os.urandom(1024 * 1024)
    result, echoed = client.run(lambda: client.exchange(lab.service_ip("echo"), 7, payload), 120)
    assert result.ok, result.error
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_the_manager_itself_cannot_reach_the_web_pods_loopback(lab, client):
    """Without via the manager dials from its own pod: nothing listens on its 127.0.0.1:9090."""
    result, _ = client.run(lambda: client.exchange("127.0.0.1", 9090, GET, via=None))
    assert not result.ok and result.reason == pb.DialResult.REFUSED, result.error


def test_a_refused_port_in_the_web_pod_is_refused(lab, client):
    started = time.monotonic()
    result, _ = client.run(lambda: client.exchange("127.0.0.1", 9, b"", via=WEB))
    assert not result.ok and result.reason == pb.DialResult.REFUSED, result.error
    assert "tcp://127.0.0.1:9" in result.error
    assert time.monotonic() - started < 5


def test_mesh_name_answers_loopback_in_the_cluster_dns(lab, netns):
    query = DNSRecord.question("mesh.default.svc.cluster.local", "A")
    with netns(lab.pod_netns["default/echo-0"]):
        answer = DNSRecord.parse(query.send("10.96.0.10", 53, timeout=3))
    assert answer.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A] == ["127.0.0.1"]


def test_agents_run_as_sidecars_in_the_web_pods(lab, workstation):
    """The controller runs the web pods' tether-agent containers: ready in the API, a process in each pod."""
    client = kubernetes.config.new_client_from_config(config_file=str(lab.kubeconfig), context="tether-lab")
    with workstation():
        pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod("default", label_selector="app=web").items
    client.close()
    assert sorted(p.metadata.name for p in pods) == ["web-0", "web-1"]
    for pod in pods:
        [agent] = [s for s in pod.status.container_statuses if s.name == "tether-agent"]
        assert agent.ready and agent.state.running is not None
        assert agent.container_id == f"netns://{lab.pod_netns['default/' + pod.metadata.name]}/tether-agent"
        pids = subprocess.run(["ip", "netns", "pids", lab.pod_netns[f"default/{pod.metadata.name}"]],
                              capture_output=True, text=True).stdout.split()  # fmt: skip
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
        assert any(b"tether.manager.agent.main" in c and b"--workload\0web" in c for c in cmdlines)


# Run in another pod: an impostor that tries to arrive as web-0's agent, without a token and with a forged one.
IMPOSTOR = """
import asyncio, ipaddress, sys
import grpc
from tether.manager.api import manager_pb2 as pb, manager_pb2_grpc as pb_grpc

async def main(address, ip):
    info = pb.AgentInfo(
        workload=pb.WorkloadRef(namespace="default", name="web", kind="Deployment"),
        pod_name="web-0", pod_ip=ipaddress.ip_address(ip).packed, version="impostor",
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AgentsStub(channel)
        for metadata in ((), (("authorization", "Bearer forged"),)):
            try:
                await stub.Arrive(info, metadata=metadata, timeout=10)
                print("ACCEPTED")
            except grpc.aio.AioRpcError as exc:
                print(exc.code().name, exc.details())

asyncio.run(main(*sys.argv[1:]))
"""


def test_an_agent_without_its_pods_token_is_refused_and_the_real_agents_keep_serving(lab, client, lab_run):
    address, web_0 = lab.plan.agent_manager_address, lab.pod_ips["default/web-0"]
    done = lab_run(sys.executable, "-c", IMPOSTOR, address, web_0, pod="default/echo-0")
    assert done.returncode == 0, done.stderr
    answers = done.stdout.splitlines()
    assert len(answers) == 2 and all(a.startswith("UNAUTHENTICATED") for a in answers), answers
    assert "did not accept the token" in answers[1]
    # Every via flow still goes to the real agents, both of them.
    bodies = set()
    for _ in range(4):
        result, response = client.run(lambda: client.exchange("127.0.0.1", 9090, GET))
        assert result.ok, result.error
        bodies.add(response.split(b"\r\n\r\n", 1)[1].decode().strip())
    assert bodies == BOTH_WEB_PODS


def test_a_clients_request_no_longer_makes_the_manager_patch_a_workload(lab, client, workstation):
    """The attack: any client reaching the manager asked for a workload without an agent, and the manager
    patched it with its own service account. Now the flow is refused and the workload is untouched."""
    api_config = kube_configuration(lab.kubeconfig)

    def template() -> dict[str, Any]:
        with workstation(), kubernetes.client.ApiClient(api_config) as api:
            response = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(
                "echo", "default", _preload_content=False
            )
            return json.loads(response.data)["spec"]["template"]

    before = template()
    result, _ = client.run(lambda: client.exchange(lab.service_ip("echo"), 7, b"", via=("default", "echo", "")))
    assert not result.ok and result.reason == pb.DialResult.UNREACHABLE
    assert result.error.startswith("no tether-agent for workload default/echo: no agent has arrived"), result.error
    after = template()
    assert "tether-agent" not in [c["name"] for c in after["spec"]["containers"]]
    assert after == before


def test_agents_arrive_again_after_the_manager_restarts(lab, workstation):
    restart_manager(lab)
    session = Client(lab, workstation)
    try:
        deadline = time.monotonic() + 30
        while True:
            result, response = session.run(lambda: session.exchange("127.0.0.1", 9090, GET))
            if result.ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.ok, result.error
        assert b"hello from web on loopback" in response
    finally:
        session.close()
