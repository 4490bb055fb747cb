"""Discovery and /version, as the official client reads them."""

import pytest
from kmock import KubernetesError
from kubernetes import client

from tether.lab.apiserver.discovery import discovery_document, resource_list


def test_version_via_official_client(api_client):
    info = client.VersionApi(api_client).get_code()  # GET /version/
    assert info.major == "1"
    assert info.git_version.startswith("v1.")
    assert info.platform and info.go_version and info.build_date


def test_discovery(api_client):
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    core = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert core["pods"].kind == "Pod" and core["pods"].namespaced is True
    assert core["nodes"].namespaced is False
    assert {"pods/portforward", "services", "configmaps", "endpoints", "namespaces"} <= set(core)
    assert "apps" in [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
    apps = {r.name: r for r in client.AppsV1Api(api_client).get_api_resources().resources}
    assert apps["deployments"].kind == "Deployment"
    assert client.AppsApi(api_client).get_api_group().preferred_version.group_version == "apps/v1"


KUBECTL_DISCOVERY_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


def test_legacy_list_gives_short_names_to_resources_only():
    # kubectl warns 'short name "po" could also match lower priority resource pods/status' otherwise.
    core = {r["name"]: r for r in resource_list("", "v1")["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["categories"] == ["all"]
    assert "shortNames" not in core["pods/status"] and core["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert core["pods/portforward"]["singularName"] == ""
    assert resource_list("apps", "v2") is None


def test_aggregated_discovery_nests_subresources():
    body, content_type = discovery_document("/api", KUBECTL_DISCOVERY_ACCEPT, "h")
    assert content_type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    (core,) = body["items"]
    (v1,) = core["versions"]
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["scope"] == "Namespaced" and pods["shortNames"] == ["po"]
    assert [s["subresource"] for s in pods["subresources"]] == ["status", "portforward"]
    assert all(r["resource"].count("/") == 0 for r in v1["resources"])
    apis, _ = discovery_document("/apis", KUBECTL_DISCOVERY_ACCEPT, "h")
    assert [g["metadata"]["name"] for g in apis["items"]] == ["apps", "discovery.k8s.io", "rbac.authorization.k8s.io"]


def test_endpoint_slices_are_served_in_discovery_k8s_io_without_a_short_name(api_client):
    found = {r.name: r for r in client.DiscoveryV1Api(api_client).get_api_resources().resources}
    assert set(found) == {"endpointslices"}  # no status subresource, as in kube-apiserver
    slices = found["endpointslices"]
    assert (slices.kind, slices.namespaced, slices.singular_name, slices.short_names) == (
        "EndpointSlice", True, "endpointslice", [],
    )  # fmt: skip
    apis, _ = discovery_document("/apis", KUBECTL_DISCOVERY_ACCEPT, "h")
    [group] = [g for g in apis["items"] if g["metadata"]["name"] == "discovery.k8s.io"]
    [resource] = group["versions"][0]["resources"]
    assert resource["resource"] == "endpointslices" and "shortNames" not in resource


def test_plain_json_clients_get_legacy_documents():
    body, content_type = discovery_document("/api", "application/json", "10.0.0.1")
    assert body["kind"] == "APIVersions" and content_type == "application/json"
    assert discovery_document("/apis", "", "h")[0]["kind"] == "APIGroupList"
    assert discovery_document("/api/v1/pods", "", "h") is None
    with pytest.raises(KubernetesError):
        discovery_document("/apis/batch", "", "h")
