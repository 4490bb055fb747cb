"""The object store through the official client: server-owned metadata, create / read / replace / patch /
delete, the status subresource, namespaces and what deleting one takes along."""

import pytest
from apiserver_support import deployment, pod, status_of
from kubernetes import client
from kubernetes.client import ApiException


def test_fresh_cluster_has_the_usual_namespaces(v1):
    names = {n.metadata.name for n in v1.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert v1.read_namespace("default").status.phase == "Active"


def test_nodes_are_cluster_scoped(v1):
    v1.create_node(
        {"metadata": {"name": "lab-node-1", "labels": {"role": "worker"}}, "spec": {"podCIDR": "10.244.1.0/24"}}
    )
    try:
        nodes = v1.list_node(label_selector="role=worker").items
        assert [n.metadata.name for n in nodes] == ["lab-node-1"]
        assert nodes[0].spec.pod_cidr == "10.244.1.0/24"
        assert nodes[0].metadata.namespace is None
    finally:
        v1.delete_node("lab-node-1")
    assert not v1.list_node(label_selector="role=worker").items


def test_generated_metadata_and_list_resource_version(v1, ns):
    before = int(v1.list_namespaced_config_map(ns).metadata.resource_version)
    first = v1.create_namespaced_config_map(ns, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    second = v1.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert first.metadata.namespace == ns  # taken from the URL
    assert before < int(first.metadata.resource_version) < int(second.metadata.resource_version)
    listed = v1.list_namespaced_config_map(ns)
    assert int(listed.metadata.resource_version) == int(second.metadata.resource_version)
    assert [c.metadata.name for c in listed.items] == ["a", "b"]


def test_create_read_replace_patch_delete(v1, ns):
    created = v1.create_namespaced_config_map(
        ns, {"metadata": {"name": "cfg", "labels": {"x": "1"}}, "data": {"a": "1"}}
    )
    read = v1.read_namespaced_config_map("cfg", ns)
    assert read.data == {"a": "1"} and read.metadata.uid == created.metadata.uid

    read.data = {"b": "2"}
    replaced = v1.replace_namespaced_config_map("cfg", ns, read)
    assert replaced.data == {"b": "2"}
    assert replaced.metadata.uid == created.metadata.uid
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    # A replace based on a stale resourceVersion is a conflict, as with a real API server.
    with pytest.raises(ApiException) as stale:
        v1.replace_namespaced_config_map(
            "cfg", ns, {"metadata": {"name": "cfg", "resourceVersion": created.metadata.resource_version}}
        )
    assert stale.value.status == 409

    patched = v1.patch_namespaced_config_map("cfg", ns, {"data": {"c": "3"}, "metadata": {"labels": {"x": None}}})
    assert patched.data == {"b": "2", "c": "3"}
    assert not patched.metadata.labels
    patched = v1.patch_namespaced_config_map(
        "cfg", ns, [{"op": "replace", "path": "/data/b", "value": "20"}, {"op": "remove", "path": "/data/c"}]
    )
    assert patched.data == {"b": "20"}

    v1.delete_namespaced_config_map("cfg", ns)
    with pytest.raises(ApiException) as gone:
        v1.read_namespaced_config_map("cfg", ns)
    assert gone.value.status == 404
    assert status_of(gone.value)["message"] == 'configmaps "cfg" not found'


def test_generate_name(v1, ns):
    first = v1.create_namespaced_config_map(ns, {"metadata": {"generateName": "cfg-"}})
    second = v1.create_namespaced_config_map(ns, {"metadata": {"generateName": "cfg-"}})
    assert first.metadata.name.startswith("cfg-") and len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name


def test_endpoints_round_trip(v1, ns):
    subsets = [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    v1.create_namespaced_endpoints(ns, {"metadata": {"name": "web"}, "subsets": subsets})
    read = v1.read_namespaced_endpoints("web", ns)
    assert read.subsets[0].addresses[0].ip == "10.244.1.5" and read.subsets[0].ports[0].port == 8080
    assert [e.metadata.name for e in v1.list_endpoints_for_all_namespaces().items if e.metadata.namespace == ns] == [
        "web"
    ]


def test_endpoint_slices_round_trip_through_the_discovery_api(api_client, ns):
    discovery = client.DiscoveryV1Api(api_client)
    endpoint = {"addresses": ["10.244.1.5"], "conditions": {"ready": True, "serving": True, "terminating": False}}
    body = {
        "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [endpoint],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    created = discovery.create_namespaced_endpoint_slice(ns, body)
    assert created.api_version == "discovery.k8s.io/v1" and created.kind == "EndpointSlice"
    listed = discovery.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=web").items
    assert [(s.metadata.name, s.endpoints[0].addresses, s.endpoints[0].conditions.ready) for s in listed] == [
        ("web-x", ["10.244.1.5"], True)
    ]
    assert listed[0].ports[0].port == 8080
    discovery.delete_namespaced_endpoint_slice("web-x", ns)
    assert discovery.list_namespaced_endpoint_slice(ns).items == []


def test_duplicate_name_is_a_conflict(v1, ns):
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "same"}})
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "same"}})
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "AlreadyExists"


def test_namespace_must_exist(v1):
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == 'namespaces "nowhere" not found'


def test_deleting_a_namespace_deletes_its_objects(v1):
    v1.create_namespace({"metadata": {"name": "doomed"}})
    v1.create_namespaced_pod("doomed", pod("p"))
    deleted = v1.delete_namespace("doomed")
    assert deleted["metadata"]["name"] == "doomed"
    assert not [p for p in v1.list_pod_for_all_namespaces().items if p.metadata.namespace == "doomed"]


def test_pod_status_is_kept_and_completed(v1, ns):
    created = v1.create_namespaced_pod(ns, pod("web", ip="10.244.1.5", node="lab-node-1"))
    assert created.status.phase == "Running"
    assert created.status.pod_ip == "10.244.1.5"
    assert [p.ip for p in created.status.pod_ips] == ["10.244.1.5"]
    # The status subresource changes the status only.
    updated = v1.patch_namespaced_pod_status(
        "web", ns, {"status": {"podIP": "10.244.1.6"}, "spec": {"nodeName": "elsewhere"}}
    )
    assert [p.ip for p in updated.status.pod_ips] == ["10.244.1.6"]
    assert updated.spec.node_name == "lab-node-1"
    deleted = v1.delete_namespaced_pod("web", ns)
    assert deleted.metadata.name == "web"


def test_deployment_template_strategic_merge(apps, ns):
    created = apps.create_namespaced_deployment(ns, deployment("web", "web", "web"))
    assert created.spec.replicas == 1 and created.metadata.generation == 1
    # A dict body is sent as a strategic merge patch: containers merge by name.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}}
    patched = apps.patch_namespaced_deployment("web", ns, patch)
    assert [c.name for c in patched.spec.template.spec.containers] == ["app", "agent"]
    assert patched.metadata.generation == 2
    patched = apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "agent", "$patch": "delete"}]}}}}
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["app"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment(ns).items] == ["web"]
    apps.delete_namespaced_deployment("web", ns)
    assert apps.list_namespaced_deployment(ns).items == []


def _owned_pod(name, owner):
    body = pod(name, labels={"app": "other"})
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.metadata.name, "uid": owner.metadata.uid}
    ]
    return body


def test_deleting_an_owner_deletes_its_dependents_unless_orphaned(apps, v1, ns):
    for name in ("gone", "kept"):
        owner = apps.create_namespaced_deployment(ns, deployment(name, name, name))
        v1.create_namespaced_pod(ns, _owned_pod(f"{name}-0", owner))
    apps.delete_namespaced_deployment("gone", ns, propagation_policy="Background")
    apps.delete_namespaced_deployment("kept", ns, body={"propagationPolicy": "Orphan"})
    (left,) = v1.list_namespaced_pod(ns).items
    assert left.metadata.name == "kept-0" and left.metadata.owner_references is None


def test_unknown_propagation_policy_is_refused_and_nothing_deleted(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("d", "d", "d"))
    with pytest.raises(ApiException) as refused:
        apps.delete_namespaced_deployment("d", ns, propagation_policy="Sometimes")
    assert refused.value.status == 400 and '"Sometimes"' in status_of(refused.value)["message"]
    assert apps.read_namespaced_deployment("d", ns).metadata.name == "d"
