"""Discovery's one-shot API requests against a fake CoreV1Api: the service-CIDR probe and its fallbacks."""

from __future__ import annotations

import json
from ipaddress import ip_network as net

import pytest
from kubernetes.client.exceptions import ApiException

from tether.manager.config import ManagerConfig
from tether.manager.discovery.kubeapi import discover_service_subnets, probe_service_cidr, probe_service_cidrs


def api_error(status: int, message: str = "", reason: str = "") -> ApiException:
    exc = ApiException(status=status, reason=reason or "error")
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": "Invalid",
            "code": status,
        }
    )
    return exc


def refusal(cidr: str, probe: str = "1.1.1.1") -> ApiException:
    return api_error(
        422,
        f'Service "tether-service-cidr-probe" is invalid: spec.clusterIPs: Invalid value: []string{{"{probe}"}}: '
        f"failed to allocate IP {probe}: the provided IP ({probe}) is not in the valid range. "
        f"The range of valid IPs is {cidr}",
    )


class _Released:
    def __init__(self, body: dict | None = None) -> None:
        self.data = json.dumps(body or {}).encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """Answers create_namespaced_service per ClusterIP from a script of results/exceptions."""

    def __init__(self, answers: dict[str, list], services: list[dict] | None = None) -> None:
        self.answers = answers
        self.services = services or []
        self.created: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    def create_namespaced_service(self, namespace, body, **kwargs):
        self.created.append((namespace, body.metadata.name, body.spec.cluster_ip))
        assert body.spec.ports[0].port == 80
        answer = self.answers[body.spec.cluster_ip].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return _Released()

    def delete_namespaced_service(self, name, namespace, **kwargs):
        self.deleted.append((namespace, name))
        return _Released()

    def list_service_for_all_namespaces(self, **kwargs):
        return _Released({"metadata": {"resourceVersion": "5"}, "items": self.services})


class TestProbe:
    def test_refusal_is_parsed(self):
        core = FakeCore({"1.1.1.1": [refusal("10.96.0.0/12")]})
        assert probe_service_cidr(core, "tether") == net("10.96.0.0/12")
        assert core.created == [("tether", "tether-service-cidr-probe", "1.1.1.1")]
        assert core.deleted == []

    def test_message_only_in_causes_or_raw_body(self):
        exc = ApiException(status=422, reason="Unprocessable Entity")
        exc.body = json.dumps(
            {"message": "", "details": {"causes": [{"message": "The range of valid IPs is 10.43.0.0/16"}]}}
        )
        assert probe_service_cidr(FakeCore({"1.1.1.1": [exc]}), "ns") == net("10.43.0.0/16")
        raw = ApiException(status=422, reason="x")
        raw.body = "plain text: The range of valid IPs is 10.0.0.0/16\n"
        assert probe_service_cidr(FakeCore({"1.1.1.1": [raw]}), "ns") == net("10.0.0.0/16")

    def test_unexpected_creation_is_deleted(self):
        core = FakeCore({"1.1.1.1": [None]})
        assert probe_service_cidr(core, "tether") is None
        assert core.deleted == [("tether", "tether-service-cidr-probe")]

    def test_stale_probe_is_replaced(self):
        core = FakeCore({"1.1.1.1": [api_error(409, "already exists"), refusal("10.96.0.0/12")]})
        assert probe_service_cidr(core, "tether") == net("10.96.0.0/12")
        assert core.deleted == [("tether", "tether-service-cidr-probe")]
        assert len(core.created) == 2

    def test_forbidden_or_other_wording_tells_nothing(self):
        assert probe_service_cidr(FakeCore({"1.1.1.1": [api_error(403, "forbidden")]}), "ns") is None
        assert probe_service_cidr(FakeCore({"1.1.1.1": [api_error(422, "some new wording")]}), "ns") is None

    def test_unreachable_api_raises(self):
        with pytest.raises(ConnectionRefusedError):
            probe_service_cidr(FakeCore({"1.1.1.1": [ConnectionRefusedError()]}), "ns")
        with pytest.raises(ApiException):
            probe_service_cidr(FakeCore({"1.1.1.1": [api_error(503, "unavailable")]}), "ns")

    def test_ipv6_only_cluster(self):
        core = FakeCore(
            {
                "1.1.1.1": [api_error(422, 'spec.ipFamilies[0]: Invalid value: "IPv4": not configured')],
                "2001:db8::1": [refusal("fd00:10:96::/112", "2001:db8::1")],
            }
        )
        assert probe_service_cidrs(core, "ns") == [net("fd00:10:96::/112")]

    def test_dual_stack_cluster(self):
        core = FakeCore(
            {"1.1.1.1": [refusal("10.96.0.0/16")], "2001:db8::1": [refusal("fd00:10:96::/112", "2001:db8::1")]}
        )
        assert probe_service_cidrs(core, "ns") == [net("10.96.0.0/16"), net("fd00:10:96::/112")]


class TestDiscoverServiceSubnets:
    def test_override_skips_the_probe(self):
        core = FakeCore({})
        config = ManagerConfig(service_cidr=net("10.43.0.0/16"))
        assert discover_service_subnets(core, config, "ns") == (net("10.43.0.0/16"),)
        assert core.created == []

    def test_probe(self):
        core = FakeCore({"1.1.1.1": [refusal("10.96.0.0/12")], "2001:db8::1": [api_error(422, "IPv6 not configured")]})
        assert discover_service_subnets(core, ManagerConfig(), "ns") == (net("10.96.0.0/12"),)

    def test_fallback_from_cluster_ips(self):
        services = [
            {"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.100.0.1", "clusterIPs": ["10.100.0.1"]}},
            {"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.100.0.10"}},
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None"}},
        ]
        core = FakeCore(
            {"1.1.1.1": [api_error(403, "forbidden")], "2001:db8::1": [api_error(403, "forbidden")]}, services
        )
        assert discover_service_subnets(core, ManagerConfig(), "ns") == (net("10.100.0.0/16"),)
