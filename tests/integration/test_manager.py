"""The real traffic-manager in the lab, reached the way the helper reaches it: the API server's port-forward."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import sys
import time
from typing import Any

import kubernetes
import pytest
from dnslib import QTYPE, RCODE
from manager_client import ManagerClient, kube_configuration, manager_pod

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.framing import Protocol
from tether.manager.api.wire import ip_from_bytes, subnet_from_pb, subnets_from_pb
from tether.manager.dns import unpack_record

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
NODE_CIDRS = {ipaddress.ip_network("10.244.1.0/24"), ipaddress.ip_network("10.244.2.0/24")}


@pytest.fixture(scope="module")
def manager(lab, workstation):
    client = ManagerClient(lab, workstation)
    yield client
    client.close()


async def first_info(stub: pb_grpc.ManagerStub, session: str, predicate: Any = None, timeout: float = 30) -> Any:
    call = stub.WatchClusterInfo(pb.SessionInfo(session_id=session))
    try:
        async with asyncio.timeout(timeout):
            while True:
                info = await call.read()
                if predicate is None or predicate(info):
                    return info
    finally:
        call.cancel()


def test_cluster_info_reports_the_labs_subnets(lab, manager):
    info = manager.run(lambda: first_info(manager.stub, manager.session))
    assert subnet_from_pb(info.service_subnet) == SERVICE_CIDR
    assert set(subnets_from_pb(info.pod_subnets)) == NODE_CIDRS
    assert str(ip_from_bytes(info.manager_pod_ip)) == manager_pod(lab).status.pod_ip
    assert info.dns.cluster_domain == "cluster.local."
    assert ".com" in info.dns.exclude_suffixes


def test_a_node_and_pod_added_through_the_api_appear_in_the_pod_subnets(lab, manager, workstation):
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "lab-node-extra"},
        "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "extra", "namespace": "default"},
        "spec": {"nodeName": "lab-node-extra", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.244.3.5"},
    }
    added = ipaddress.ip_network("10.244.3.0/24")
    with workstation():
        api = kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig))
        core = kubernetes.client.CoreV1Api(api)
        core.create_node(node)
        core.create_namespaced_pod("default", pod)
    try:
        info = manager.run(
            lambda: first_info(manager.stub, manager.session, lambda i: added in subnets_from_pb(i.pod_subnets))
        )
        assert set(subnets_from_pb(info.pod_subnets)) == {*NODE_CIDRS, added}
    finally:
        with workstation():
            core.delete_namespaced_pod("extra", "default")
            core.delete_node("lab-node-extra")
            api.close()
    info = manager.run(
        lambda: first_info(manager.stub, manager.session, lambda i: added not in subnets_from_pb(i.pod_subnets))
    )
    assert set(subnets_from_pb(info.pod_subnets)) == NODE_CIDRS


async def tcp_exchange(stub: pb_grpc.ManagerStub, session: str, ip: str, port: int, payload: bytes) -> bytes:
    call = stub.Tunnel()
    await call.write(framing.open_message(session, Protocol.TCP, (ipaddress.ip_address(ip), port)))
    result = (await call.read()).dial
    assert result.ok, result.error

    async def send() -> None:
        for piece in framing.chunks(payload):
            await call.write(framing.data_message(piece))
        await call.write(framing.eof_message())

    sender = asyncio.ensure_future(send())
    received = bytearray()
    while (message := await call.read()).WhichOneof("kind") == "data":
        received += message.data
    assert message.WhichOneof("kind") == "eof"
    await sender
    await call.done_writing()
    return bytes(received)


def test_tunnel_to_the_echo_cluster_ip_echoes_10mb_byte_exact(lab, manager):
    payload = os.urandom(10 * 1024 * 1024)
    echoed = manager.run(lambda: tcp_exchange(manager.stub, manager.session, lab.service_ip("echo"), 7, payload), 120)
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_tunnel_to_web_by_cluster_ip_speaks_http(lab, manager):
    request = b"GET / HTTP/1.1\r\nHost: web.default\r\nConnection: close\r\n\r\n"
    response = manager.run(lambda: tcp_exchange(manager.stub, manager.session, lab.service_ip("web"), 80, request))
    assert response.startswith(b"HTTP/1.1 200")
    assert b"hello from web" in response


def test_tunnel_to_a_closed_port_is_rejected_promptly(lab, manager):
    async def dial() -> pb.DialResult:
        call = manager.stub.Tunnel()
        open_message = framing.open_message(
            manager.session, Protocol.TCP, (ipaddress.ip_address(lab.service_ip("echo")), 9), dial_timeout=10
        )
        await call.write(open_message)
        result = (await call.read()).dial
        call.cancel()
        return result

    started = time.monotonic()
    result = manager.run(lambda: dial())
    assert not result.ok
    assert result.reason == pb.DialResult.REFUSED, result.error
    assert f"{lab.service_ip('echo')}:9" in result.error
    assert time.monotonic() - started < 5, "a refused port must not wait for the dial timeout"


def test_tunnel_udp_echo_keeps_datagrams(lab, manager):
    async def exchange() -> list[bytes]:
        call = manager.stub.Tunnel()
        target = (ipaddress.ip_address(lab.service_ip("udp-echo")), 7)
        await call.write(framing.open_message(manager.session, Protocol.UDP, target))
        assert (await call.read()).dial.ok
        datagrams = [b"one", b"two" * 500, os.urandom(8000)]
        for datagram in datagrams:
            await call.write(framing.data_message(datagram))
        replies = [(await asyncio.wait_for(call.read(), 10)).data for _ in datagrams]
        call.cancel()
        return sorted(replies, key=len) == sorted(datagrams, key=len)

    assert manager.run(lambda: exchange())


def lookup(manager: ManagerClient, name: str, qtype: int) -> pb.DNSResponse:
    request = pb.DNSRequest(session_id=manager.session, name=name, qtype=qtype)
    return manager.run(lambda: manager.stub.LookupDNS(request))


def test_lookup_dns_resolves_cluster_names(lab, manager):
    web_ip = lab.service_ip("web")
    fqdn = lookup(manager, "web.default.svc.cluster.local.", QTYPE.A)
    assert fqdn.rcode == RCODE.NOERROR
    assert [str(unpack_record(r).rdata) for r in fqdn.answers] == [web_ip]

    short = lookup(manager, "web", QTYPE.A)  # the session's namespace is "default"
    [record] = [unpack_record(r) for r in short.answers]
    assert (str(record.rname), str(record.rdata)) == ("web.", web_ip)

    other_namespace = lookup(manager, "catalog.webshop", QTYPE.A)
    assert [str(unpack_record(r).rdata) for r in other_namespace.answers] == [lab.service_ip("catalog", "webshop")]

    missing = lookup(manager, "no-such-service", QTYPE.A)
    assert missing.rcode == RCODE.NXDOMAIN


def test_cluster_info_cli_from_the_workstation(lab, lab_run):
    result = lab_run("tether", "cluster-info", "--kubeconfig", str(lab.kubeconfig), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["service_subnet"] == str(SERVICE_CIDR)
    assert set(shown["pod_subnets"]) == {str(n) for n in NODE_CIDRS}
    assert shown["manager_pod"].startswith("tether/")


PROBE_FROM_A_POD = """
import socket, sys
import grpc
from tether.manager.api import manager_pb2 as pb, manager_pb2_grpc as pb_grpc
ip = sys.argv[1]
with grpc.insecure_channel(f"{ip}:8081") as channel:
    try:
        pb_grpc.ManagerStub(channel).ArriveAsClient(pb.ClientInfo(name="intruder"), timeout=10)
        print("client-api: open")
    except grpc.RpcError as exc:
        print(f"client-api: {exc.code().name}")
try:
    socket.create_connection((ip, 8082), timeout=5).close()
    print("mux: open")
except OSError as exc:
    print(f"mux: {type(exc).__name__}")
"""


def test_the_client_api_and_the_mux_are_not_reachable_from_another_pod(lab, lab_run):
    """The attack: any pod (or anything else on the pod network) opens a client session with no credentials.
    The client API and the mux listen on the manager pod's loopback: only the API server's port-forward (which
    checks the user's RBAC) reaches them; the pod IP serves the agent API only."""
    manager_ip = manager_pod(lab).status.pod_ip
    result = lab_run(sys.executable, "-c", PROBE_FROM_A_POD, manager_ip, pod="default/echo-0", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["client-api: UNIMPLEMENTED", "mux: ConnectionRefusedError"], result
