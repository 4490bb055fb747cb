"""The connection origin while intercepting: which intercept, which via for which destination, which resolver."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tests.doubles.fake_manager_answers import FakeAnswerLink
from tether.helper.api import helper_pb2 as pb
from tether.helper.api.intercepts import ACTIVE, FAILED, WAITING
from tether.helper.root import session
from tether.helper.root.connection import Connection
from tether.helper.root.intercept.origin import (
    Origin,
    OriginMapper,
    choose_origin,
    cluster_subnets,
    dns_via,
    manager_addresses,
    origin_via,
    rules_namespace,
)
from tether.helper.root.proxyvia import UnknownVirtualIP
from tether.helper.root.server.caller import Caller
from tether.helper.user.cli.control import describe_state, format_state
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnet_to_pb

ip = ipaddress.ip_address
net = ipaddress.ip_network
WEB = Origin("default", "web", "Deployment")
CLUSTER = (net("10.244.0.0/16"), net("10.96.0.0/12"), net("fd00:10:244::/56"))
MANAGER = (ip("10.244.1.5"),)


def state(namespace: str, workload: str, phase: str = ACTIVE, ours: bool = True) -> pb.InterceptState:
    return pb.InterceptState(namespace=namespace, workload=workload, kind="Deployment", phase=phase, ours=ours)


def test_no_intercept_means_no_origin() -> None:
    assert choose_origin([]) is None


def test_the_first_started_active_intercept_is_the_origin() -> None:
    table = [state("default", "web"), state("webshop", "catalog")]
    assert choose_origin(table) == WEB
    assert choose_origin(reversed(table)) == Origin("webshop", "catalog", "Deployment")


def test_waiting_failed_and_others_intercepts_are_skipped() -> None:
    table = [
        state("default", "web", WAITING),
        state("default", "bulk", FAILED),
        state("default", "echo", ours=False),
        state("webshop", "catalog"),
    ]
    assert choose_origin(table) == Origin("webshop", "catalog", "Deployment")
    assert choose_origin(table[:3]) is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.244.2.10", WEB.via),  # a pod
        ("10.96.1.11", WEB.via),  # a service
        ("fd00:10:244::7", WEB.via),  # an IPv6 pod
        ("10.244.1.5", None),  # the manager's own pod stays the manager's
        ("192.168.7.1", None),  # not the cluster's (an also-proxy subnet, say)
    ],
)
def test_which_via_for_which_destination(address: str, expected: tuple[str, str, str] | None) -> None:
    assert origin_via(ip(address), WEB, CLUSTER, MANAGER) == expected


def test_without_an_origin_the_manager_dials_everything() -> None:
    assert origin_via(ip("10.244.2.10"), None, CLUSTER, MANAGER) is None


def test_which_resolver_and_namespace() -> None:
    assert dns_via(WEB) == ("default", "web", "Deployment")
    assert dns_via(None) is None
    assert rules_namespace(Origin("webshop", "catalog"), "default") == "webshop"
    assert rules_namespace(None, "webshop") == "webshop"


def test_cluster_subnets_and_manager_come_from_cluster_info() -> None:
    info = mpb.ClusterInfo(
        service_subnet=subnet_to_pb(net("10.96.0.0/12")),
        service_subnets=[subnet_to_pb(net("10.96.0.0/12"))],
        pod_subnets=[subnet_to_pb(net("10.244.1.0/24")), subnet_to_pb(net("10.244.2.0/24"))],
        manager_pod_ip=ip("10.244.1.5").packed,
    )
    assert cluster_subnets(info) == (net("10.244.1.0/24"), net("10.244.2.0/24"), net("10.96.0.0/12"))
    assert manager_addresses(info) == (ip("10.244.1.5"),)
    assert manager_addresses(mpb.ClusterInfo()) == ()


def vip_mapper(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int):  # type: ignore[no-untyped-def]
    """A stand-in for the --proxy-via VIP mapper: 246.246.0.1 is catalog's pod by --proxy-via, .2 the
    automatic remap's (the manager would dial), .9 never handed out."""
    table = {
        ip("246.246.0.1"): (ip("10.244.1.10"), ("webshop", "catalog", "")),
        ip("246.246.0.2"): (ip("10.244.2.11"), None),
    }
    if address == ip("246.246.0.9"):
        raise UnknownVirtualIP("246.246.0.9 was never handed out")
    found = table.get(address)
    return None if found is None else (found[0], port, found[1])


def test_mapper_sends_cluster_flows_through_the_origin_and_back() -> None:
    mapper = OriginMapper(vip_mapper)
    mapper.cluster, mapper.manager = CLUSTER, MANAGER
    assert mapper(ip("10.96.1.11"), 7) is None  # no intercept: unchanged, the manager dials
    mapper.origin = WEB
    assert mapper(ip("10.96.1.11"), 7) == (ip("10.96.1.11"), 7, WEB.via)
    assert mapper(ip("10.244.1.5"), 8081) is None
    assert mapper(ip("8.8.8.8"), 53) is None
    # an explicit --proxy-via workload keeps its VIPs; the automatic remap's real address goes via the origin
    assert mapper(ip("246.246.0.1"), 80) == (ip("10.244.1.10"), 80, ("webshop", "catalog", ""))
    assert mapper(ip("246.246.0.2"), 80) == (ip("10.244.2.11"), 80, WEB.via)
    with pytest.raises(LookupError):
        mapper(ip("246.246.0.9"), 80)
    mapper.origin = None  # the intercept ended
    assert mapper(ip("10.96.1.11"), 7) is None
    assert mapper(ip("246.246.0.2"), 80) == (ip("10.244.2.11"), 80, None)


def test_status_says_which_pod_the_traffic_comes_from() -> None:
    state = pb.State(phase=pb.State.CONNECTED, origin="default/web", intercepts=[state_of_web()])
    assert describe_state(state)["origin"] == "default/web"
    rows = [line for line in format_state(state).splitlines() if line.startswith("origin")]
    assert rows and rows[0].endswith("go through the pod of default/web (intercepted)")
    plain = pb.State(phase=pb.State.CONNECTED)
    assert describe_state(plain)["origin"] is None
    assert not any(line.startswith("origin") for line in format_state(plain).splitlines())


def state_of_web() -> pb.InterceptState:
    return state("default", "web")


def test_the_sessions_cluster_lookups_go_to_the_origins_agent_while_intercepting() -> None:
    link = FakeAnswerLink()
    connection = Connection(request=pb.ConnectRequest(), caller=Caller(uid=1000, gid=1000, pid=1))
    connection.link = link  # type: ignore[assignment]

    async def ask() -> None:
        await session._lookup(connection, "echo.default.svc.cluster.local.", 1)

    asyncio.run(ask())
    connection.origin.origin = WEB
    asyncio.run(ask())
    connection.origin.origin = None
    asyncio.run(ask())
    assert link.vias == [None, WEB.via, None]
