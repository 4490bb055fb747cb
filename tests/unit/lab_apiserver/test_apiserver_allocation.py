"""Service ClusterIP and NodePort allocation, and the API server's refusals Tether parses."""

import pytest
from apiserver_support import service, status_of
from kubernetes.client import ApiException


def test_service_outside_the_range_is_rejected_like_the_api_server(v1, ns):
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_service(ns, service("bad", "1.1.1.1"))
    assert exc.value.status == 422
    body = status_of(exc.value)
    assert body["message"] == (
        'Service "bad" is invalid: spec.clusterIPs[0]: Invalid value: "1.1.1.1": failed to allocate IP 1.1.1.1: '
        "the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/16"
    )
    assert "The range of valid IPs is 10.96.0.0/16" in body["message"]
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["details"]["name"] == "bad"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.clusterIPs[0]",
            "message": 'Invalid value: "1.1.1.1": failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in '
            "the valid range. The range of valid IPs is 10.96.0.0/16",
        }
    ]
    assert v1.list_namespaced_service(ns).items == []
    with pytest.raises(ApiException) as missing:
        v1.read_namespaced_service("bad", ns)
    assert missing.value.status == 404


def test_service_cluster_ips_are_allocated_and_unique(v1, ns):
    first = v1.create_namespaced_service(ns, service("one"))
    second = v1.create_namespaced_service(ns, service("two", ""))
    ips = [first.spec.cluster_ip, second.spec.cluster_ip]
    assert ips[0] != ips[1]
    for svc in (first, second):
        assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
        assert svc.spec.cluster_ip.startswith("10.96.")
        assert svc.spec.type == "ClusterIP"
        assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 80

    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_service(ns, service("three", first.spec.cluster_ip))
    assert exc.value.status == 422
    assert status_of(exc.value)["message"].endswith(
        f"failed to allocate IP {first.spec.cluster_ip}: provided IP is already allocated"
    )
    assert sorted(s.metadata.name for s in v1.list_namespaced_service(ns).items) == ["one", "two"]

    # A released address can be asked for again; an explicit in-range address is honoured.
    v1.delete_namespaced_service("one", ns)
    again = v1.create_namespaced_service(ns, service("three", first.spec.cluster_ip))
    assert again.spec.cluster_ip == first.spec.cluster_ip
    # The address cannot change on update, and an update that omits it keeps it.
    with pytest.raises(ApiException) as immutable:
        v1.patch_namespaced_service("three", ns, {"spec": {"clusterIP": "10.96.200.200"}})
    assert immutable.value.status == 422
    kept = v1.replace_namespaced_service("three", ns, service("three", port=8080))
    assert kept.spec.cluster_ip == first.spec.cluster_ip and kept.spec.ports[0].port == 8080


def test_headless_and_node_port_services(v1, ns):
    headless = v1.create_namespaced_service(ns, service("headless", "None"))
    assert headless.spec.cluster_ip == "None" and headless.spec.cluster_ips == ["None"]
    body = service("np")
    body["spec"]["type"] = "NodePort"
    node_port = v1.create_namespaced_service(ns, body).spec.ports[0].node_port
    assert 30000 <= node_port <= 32767


def test_invalid_cluster_ip_text(v1, ns):
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_service(ns, service("bad", "not-an-ip"))
    assert exc.value.status == 422
    assert "must be a valid IP address" in status_of(exc.value)["message"]
