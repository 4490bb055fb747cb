"""Discovery's decoding of raw API JSON: nodes' podCIDRs, pods' IPs and flags, an API error's text."""

from __future__ import annotations

import json
from ipaddress import ip_address as ip
from ipaddress import ip_network as net

import pytest
from discovery_support import v1_node, v1_pod
from kubernetes.client.exceptions import ApiException

from tether.manager.discovery.decode import NodeInfo, PodInfo, api_error_text, get_path, node_info, pod_info


class TestExtraction:
    def test_node_pod_cidrs_dual_stack(self):
        info = node_info(v1_node("n1", "10.244.1.0/24", "fd00:244:1::/64"))
        assert info == NodeInfo("n1", (net("10.244.1.0/24"), net("fd00:244:1::/64")))

    def test_node_legacy_pod_cidr(self):
        assert node_info(v1_node("n1", "10.244.1.0/24", legacy=True)).pod_cidrs == (net("10.244.1.0/24"),)

    def test_node_without_cidr_and_with_garbage(self):
        assert node_info(v1_node("n1")).pod_cidrs == ()
        raw = {"metadata": {"name": "n2"}, "spec": {"podCIDRs": ["bogus", "10.1.0.0/24"]}}
        assert node_info(raw) == NodeInfo("n2", (net("10.1.0.0/24"),))

    def test_pod_ips(self):
        info = pod_info(v1_pod("web", "10.244.1.5", "fd00:244:1::5", namespace="shop"))
        assert info == PodInfo("shop/web", (ip("10.244.1.5"), ip("fd00:244:1::5")), False, "Running")
        assert info.counts

    def test_pod_legacy_ip_and_raw_dict(self):
        assert pod_info(v1_pod("a", "10.0.0.1", legacy=True)).ips == (ip("10.0.0.1"),)
        raw = {"metadata": {"namespace": "x", "name": "b"}, "status": {"podIP": "10.0.0.2", "phase": "Pending"}}
        assert pod_info(raw) == PodInfo("x/b", (ip("10.0.0.2"),), False, "Pending")

    @pytest.mark.parametrize(
        "pod",
        [
            v1_pod("host", "192.168.1.10", host_network=True),
            v1_pod("pending"),
            v1_pod("done", "10.244.1.9", phase="Succeeded"),
            v1_pod("crashed", "10.244.1.9", phase="Failed"),
        ],
    )
    def test_pods_that_do_not_count(self, pod):
        assert not pod_info(pod).counts


def test_get_path():
    data = {"metadata": {"name": "n1", "labels": ["not", "an", "object"]}}
    assert get_path(data, "metadata", "name") == "n1"
    assert get_path(data, "metadata") == {"name": "n1", "labels": ["not", "an", "object"]}
    assert get_path(data, "metadata", "uid") is None
    assert get_path(data, "metadata", "labels", "app") is None
    assert get_path(data, "metadata", "name", "first") is None


class TestApiErrorText:
    def test_status_message_causes_and_reason(self):
        exc = ApiException(status=422, reason="Unprocessable Entity")
        causes = [{"message": "first cause"}, "not an object", {"field": "spec.clusterIP"}, {"message": "second"}]
        exc.body = json.dumps({"kind": "Status", "message": "top", "details": {"causes": causes}})
        assert api_error_text(exc) == "top\nfirst cause\nsecond\nUnprocessable Entity"

    def test_body_that_is_not_a_status(self):
        raw = ApiException(status=500, reason="Internal Server Error")
        raw.body = b"upstream \xff failed"
        assert api_error_text(raw) == "upstream \ufffd failed\nInternal Server Error"
        listed = ApiException(status=500, reason="")
        listed.body = '["a"]'
        assert api_error_text(listed) == '["a"]'

    def test_nothing_to_say(self):
        assert api_error_text(ApiException()) == ""
