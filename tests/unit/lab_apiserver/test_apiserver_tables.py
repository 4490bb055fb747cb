"""Tables: rows with the object as includeObject asks, and the Table kubectl gets over HTTP."""

import datetime

import pytest
import requests
from kmock import KubernetesError
from kubernetes import client

from tether.lab.apiserver.kinds import KINDS_BY_URL
from tether.lab.apiserver.tables import table

PODS = KINDS_BY_URL["", "v1", "pods"]
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {}, "status": {}}
KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def test_rows_carry_partial_metadata_by_default():
    found = table(PODS, [POD], resource_version="7", now=NOW)
    assert found["apiVersion"] == "meta.k8s.io/v1" and found["kind"] == "Table"
    assert found["metadata"] == {"resourceVersion": "7"}
    assert found["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "",
        "priority": 0,
    }
    (row,) = found["rows"]
    assert row["cells"][0] == "p"
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": POD["metadata"],
    }


def test_include_object_and_none():
    assert table(PODS, [POD], resource_version="1", include_object="Object")["rows"][0]["object"] is POD
    assert "object" not in table(PODS, [POD], resource_version="1", include_object="None")["rows"][0]
    with pytest.raises(KubernetesError, match="Everything"):
        table(PODS, [POD], resource_version="1", include_object="Everything")


def test_server_answers_kubectl_with_a_table(server, v1, ns):
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}})
    url = f"{server.url}/api/v1/namespaces/{ns}/configmaps"
    listed = requests.get(url, headers={"Accept": KUBECTL_ACCEPT}, timeout=5)
    assert listed.headers["Content-Type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    assert [c["name"] for c in listed.json()["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert [r["cells"][:2] for r in listed.json()["rows"]] == [["settings", 2]]
    one = requests.get(url + "/settings?includeObject=Object", headers={"Accept": KUBECTL_ACCEPT}, timeout=5).json()
    assert one["rows"][0]["object"]["data"] == {"a": "1", "b": "2"}
    plain = requests.get(url + "/settings", headers={"Accept": "application/json"}, timeout=5).json()
    assert plain["kind"] == "ConfigMap"


def test_endpoint_slices_get_the_servers_columns(server, api_client, ns):
    body = {"metadata": {"name": "web-x"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}]}
    client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(ns, dict(body, ports=[{"port": 8080}]))
    url = f"{server.url}/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    listed = requests.get(url, headers={"Accept": KUBECTL_ACCEPT}, timeout=5).json()
    assert [c["name"] for c in listed["columnDefinitions"]] == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert [r["cells"][:4] for r in listed["rows"]] == [["web-x", "IPv4", "8080", "10.244.1.5"]]
