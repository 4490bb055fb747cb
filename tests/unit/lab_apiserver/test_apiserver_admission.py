"""Admission: per-kind defaults and validation, refused as 422 Invalid the way kube-apiserver words it."""

import ipaddress

import pytest
from apiserver_support import CIDR, deployment, http
from kmock import KubernetesError
from kubernetes.client import ApiException

from tether.lab.apiserver.admission import Admission, check_name, check_type
from tether.lab.apiserver.kinds import KINDS_BY_TYPE


def test_pod_without_containers_is_invalid(server, v1, ns):
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": "empty"}, "spec": {}})
    assert code == 422
    assert body["message"] == 'Pod "empty" is invalid: spec.containers: Required value'
    assert not v1.list_namespaced_pod(ns).items


def test_objects_the_client_could_not_read_are_refused(server, v1, ns):
    # A container without a name would make V1Container fail in every later list; refuse it up front.
    pod_body = {"metadata": {"name": "bad"}, "spec": {"containers": [{"image": "x"}]}}
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/pods", pod_body)
    assert code == 422
    assert body["message"].startswith('Pod "bad" is invalid: V1Container.name')
    assert v1.list_namespaced_pod(ns).items == []


def test_deployment_selector_must_match_template(apps, ns):
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(ns, deployment("d", "a", "b", container="c", image="i"))
    assert exc.value.status == 422


# -- admission (pure) -----------------------------------------------------------------------------

ADMISSION = Admission(ipaddress.ip_network(CIDR), (30000, 32767), services=list)
POD, SERVICE, NAMESPACE, DEPLOYMENT, CONFIGMAP = (
    KINDS_BY_TYPE[t]
    for t in (("v1", "Pod"), ("v1", "Service"), ("v1", "Namespace"), ("apps/v1", "Deployment"), ("v1", "ConfigMap"))
)
ENDPOINT_SLICE = KINDS_BY_TYPE["discovery.k8s.io/v1", "EndpointSlice"]


def admitted(kind, body):
    obj = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": "x", "namespace": "default"}} | body
    ADMISSION.admit(kind, obj, None)
    return obj


def refusal(kind, body):
    with pytest.raises(KubernetesError) as exc:
        admitted(kind, body)
    assert exc.value.status == 422 and exc.value.reason == "Invalid"
    return exc.value.message


def test_service_defaults():
    svc = admitted(SERVICE, {"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": 5353}]}})
    assert svc["spec"] == {
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": 80},
            {"port": 53, "protocol": "UDP", "targetPort": 5353},
        ],
        "clusterIP": "10.96.0.1",
        "clusterIPs": ["10.96.0.1"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    assert svc["status"] == {"loadBalancer": {}}
    external = admitted(SERVICE, {"spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert "clusterIP" not in external["spec"]  # no address and no ports asked of an ExternalName


def test_service_without_ports_is_invalid_unless_headless():
    assert refusal(SERVICE, {"spec": {}}) == 'Service "x" is invalid: spec.ports: Required value'
    assert admitted(SERVICE, {"spec": {"clusterIP": "None"}})["spec"]["clusterIPs"] == ["None"]


def test_namespace_pod_and_deployment_defaults():
    namespace = admitted(NAMESPACE, {})
    assert namespace["spec"] == {"finalizers": ["kubernetes"]} and namespace["status"] == {"phase": "Active"}
    containers = {"containers": [{"name": "c", "image": "i"}]}
    pod_obj = admitted(POD, {"spec": containers, "status": {"podIP": "10.244.1.5", "hostIP": "172.30.0.1"}})
    assert pod_obj["status"] == {
        "podIP": "10.244.1.5",
        "hostIP": "172.30.0.1",
        "phase": "Pending",
        "podIPs": [{"ip": "10.244.1.5"}],
        "hostIPs": [{"ip": "172.30.0.1"}],
    }
    assert admitted(DEPLOYMENT, {"spec": deployment("x", "x", "x")["spec"]})["spec"]["replicas"] == 1


def test_every_refusal_is_reported_at_once():
    message = refusal(POD, {"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "i"}, {"name": "c"}]}})
    assert message == (
        'Pod "x" is invalid: [spec.containers[0].image: Required value, spec.containers[2].image: Required value]'
    )
    assert refusal(DEPLOYMENT, {"spec": {}}) == 'Deployment "x" is invalid: spec.selector: Required value'
    assert refusal(CONFIGMAP, {"spec": [1]}) == 'ConfigMap "x" is invalid: spec: Invalid value: [1]: must be an object'


def test_endpoint_slices_need_a_known_address_type_that_never_changes():
    assert refusal(ENDPOINT_SLICE, {"endpoints": []}) == 'EndpointSlice "x" is invalid: addressType: Required value'
    assert refusal(ENDPOINT_SLICE, {"addressType": "IPv5", "endpoints": []}) == (
        'EndpointSlice "x" is invalid: addressType: Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"'
    )
    old = admitted(ENDPOINT_SLICE, {"addressType": "IPv4", "endpoints": []})
    with pytest.raises(KubernetesError) as changed:
        ADMISSION.admit(ENDPOINT_SLICE, dict(old, addressType="IPv6"), old)
    assert changed.value.message == (
        'EndpointSlice "x" is invalid: addressType: Invalid value: "IPv6": field is immutable'
    )
    ADMISSION.admit(ENDPOINT_SLICE, dict(old, endpoints=[{"addresses": ["10.0.0.1"]}]), old)


def test_names_follow_the_rule_of_their_kind():
    check_name(CONFIGMAP, "a.b-c")
    with pytest.raises(KubernetesError) as service:
        check_name(SERVICE, "a.b")
    assert (
        service.value.message
        == 'Service "a.b" is invalid: metadata.name: Invalid value: "a.b": must be a DNS-1035 label'
    )
    with pytest.raises(KubernetesError) as leading_digit:
        check_name(SERVICE, "1web")
    assert leading_digit.value.status == 422
    check_name(NAMESPACE, "1web")
    with pytest.raises(KubernetesError) as dotted:
        check_name(NAMESPACE, "a.b")
    assert "must be a lowercase RFC 1123 label" in dotted.value.message
    with pytest.raises(KubernetesError) as empty:
        check_name(CONFIGMAP, "")
    assert "metadata.name: Required value: name or generateName is required" in empty.value.message


def test_type_is_filled_in_or_must_match_the_url():
    obj = {"metadata": {"name": "x"}}
    check_type(DEPLOYMENT, obj)
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    with pytest.raises(KubernetesError) as exc:
        check_type(POD, {"apiVersion": "v1", "kind": "Service"})
    assert exc.value.status == 400
    assert exc.value.message == "the kind of the object (Service) does not match the expected kind (Pod)"
