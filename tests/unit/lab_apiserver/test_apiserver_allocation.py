"""Service ClusterIP and NodePort allocation, and the API server's refusals Tether parses."""

import ipaddress

import pytest
from apiserver_support import CIDR, service, status_of
from kmock import KubernetesError
from kubernetes.client import ApiException

from tether.lab.apiserver.allocation import assign_cluster_ip, assign_node_ports


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


# -- allocation (pure) ----------------------------------------------------------------------------

NETWORK = ipaddress.ip_network(CIDR)


def svc_with(cluster_ip=None, node_ports=()):
    spec = {"ports": [{"port": 80 + i, "protocol": "TCP", "nodePort": p} for i, p in enumerate(node_ports)]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": "s", "uid": "u"}, "spec": spec}


def allocate_ip(requested, others=(), old=None, cidr=NETWORK):
    spec, errors = {} if requested is None else {"clusterIP": requested}, []
    assign_cluster_ip(spec, old, list(others), cidr, errors)
    return spec.get("clusterIP"), [f"{e.field}: {e.message}" for e in errors]


def test_the_first_free_address_is_given():
    assert allocate_ip(None) == ("10.96.0.1", [])
    assert allocate_ip(None, [svc_with("10.96.0.1"), svc_with("None")]) == ("10.96.0.2", [])


def test_the_range_edges_are_outside_the_range():
    for edge in ("10.96.0.0", "10.96.255.255", "10.97.0.1"):
        assert allocate_ip(edge)[1] == [
            f'spec.clusterIPs[0]: Invalid value: "{edge}": failed to allocate IP {edge}: the provided IP ({edge}) '
            "is not in the valid range. The range of valid IPs is 10.96.0.0/16"
        ]
    assert allocate_ip("10.96.255.254") == ("10.96.255.254", [])


def test_an_update_keeps_the_address():
    old = svc_with("10.96.0.7")
    assert allocate_ip(None, old=old) == ("10.96.0.7", [])
    assert allocate_ip("10.96.0.8", old=old)[1] == [
        'spec.clusterIPs[0]: Invalid value: ["10.96.0.8"]: may not change once set'
    ]


def test_a_full_service_range_is_an_internal_error():
    with pytest.raises(KubernetesError) as exc:
        allocate_ip(None, [svc_with("10.0.0.1"), svc_with("10.0.0.2")], cidr=ipaddress.ip_network("10.0.0.0/30"))
    assert exc.value.status == 500
    assert exc.value.message == "Internal error occurred: failed to allocate a serviceIP: range is full"


def allocate_ports(ports, others=(), old=None, port_range=(30000, 30002)):
    errors = []
    assign_node_ports(ports, old, list(others), port_range, errors)
    return [p.get("nodePort") for p in ports], [f"{e.field}: {e.message}" for e in errors]


def test_node_ports_are_allocated_kept_and_checked():
    assert allocate_ports([{"port": 80}, {"port": 81}], [svc_with(node_ports=[30000])]) == ([30001, 30002], [])
    assert allocate_ports([{"port": 80, "nodePort": 40000}])[1] == [
        "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. "
        "The range of valid ports is 30000-30002"
    ]
    assert allocate_ports([{"port": 80, "nodePort": 30001}], [svc_with(node_ports=[30001])])[1] == [
        "spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"
    ]
    with pytest.raises(KubernetesError) as full:
        allocate_ports([{"port": 80}], [svc_with(node_ports=[30000, 30001, 30002])])
    assert full.value.status == 500
