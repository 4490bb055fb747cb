"""The lab's Kubernetes API server emulator, driven by the official client over loopback HTTP."""

import asyncio
import itertools
import json
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import aiohttp
import kubernetes
import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException
from kubernetes.stream import portforward

from tether.lab.apiserver import (
    LabApiServerThread,
    json_patch,
    kubeconfig_for,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
)

CIDR = "10.96.0.0/16"
MiB = 1 << 20
_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    with LabApiServerThread(service_cidr=CIDR) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_client(server):
    api = kubernetes.config.new_client_from_config_dict(server.kubeconfig())
    yield api
    api.close()


@pytest.fixture
def v1(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client):
    return client.AppsV1Api(api_client)


@pytest.fixture
def ns(v1):
    """A fresh namespace per test: the module shares one server."""
    name = f"test-{next(_namespaces)}"
    v1.create_namespace({"metadata": {"name": name}})
    yield name
    v1.delete_namespace(name)


def pod(name, ip=None, labels=None, phase="Running", node=None):
    body = {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "lab/app:1"}]},
        "status": {"phase": phase},
    }
    if ip:
        body["status"]["podIP"] = ip
    if node:
        body["spec"]["nodeName"] = node
    return body


def service(name, cluster_ip=None, port=80):
    spec = {"selector": {"app": name}, "ports": [{"port": port}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name}, "spec": spec}


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def http(server, method, path, body=None, content_type="application/json"):
    """A raw request, for what the official client refuses to send: returns (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Watcher:
    """Runs the official client's Watch in a thread and queues (type, name, object) tuples."""

    def __init__(self, func, *args, timeout=5, **kwargs):
        self.events = queue.Queue()
        self.error = None
        self._thread = threading.Thread(
            target=self._run, args=(func, args, dict(kwargs, timeout_seconds=timeout)), daemon=True
        )
        self._thread.start()

    def _run(self, func, args, kwargs):
        try:
            for event in watch.Watch().stream(func, *args, **kwargs):
                self.events.put((event["type"], event["object"].metadata.name, event["object"]))
        except Exception as e:
            self.error = e
        finally:
            self.events.put(None)

    def take(self, count, timeout=10):
        got = []
        while len(got) < count:
            item = self.events.get(timeout=timeout)
            assert item is not None, f"the watch ended after {got!r} (error: {self.error!r})"
            got.append(item)
        return got

    def rest(self, timeout=15):
        """Everything until the stream ends (it ends after its timeoutSeconds)."""
        got = []
        while (item := self.events.get(timeout=timeout)) is not None:
            got.append(item)
        return got


# -- discovery and version ------------------------------------------------------------------------


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


def test_kubeconfig_for_selects_the_namespace():
    config = kubeconfig_for("http://127.0.0.1:1234", name="lab", namespace="work")
    assert config["current-context"] == "lab"
    assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1234"
    assert config["contexts"][0]["context"] == {"cluster": "lab", "user": "lab", "namespace": "work"}


# -- objects --------------------------------------------------------------------------------------


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


def test_programmatic_object_api(server, v1, ns):
    # What the lab does before clients connect: objects straight into the store, on the server's loop.
    created = server.call(
        server.emulator.create_object,
        {"apiVersion": "v1", "kind": "Pod", **pod("direct")} | {"metadata": {"name": "direct", "namespace": ns}},
    )
    assert created["metadata"]["uid"] and created["status"]["phase"] == "Running"
    assert v1.read_namespaced_pod("direct", ns).metadata.uid == created["metadata"]["uid"]
    listed = server.call(server.emulator.list_objects, "v1", "Pod", ns)
    assert [p["metadata"]["name"] for p in listed] == ["direct"]
    server.call(server.emulator.delete_object, "v1", "Pod", "direct", ns)
    assert server.call(server.emulator.get_object, "v1", "Pod", "direct", ns) is None


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


def test_malformed_requests(server, ns):
    assert http(server, "GET", "/api/v1/widgets")[0] == 404
    assert http(server, "POST", "/api/v1/pods", {"metadata": {"name": "x"}})[0] == 405
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}})
    assert code == 422 and "metadata.name" in body["message"]
    code, body = http(
        server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x", "namespace": "other"}}
    )
    assert code == 400 and "does not match the namespace" in body["message"]
    code, body = http(
        server, "POST", f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": "s"}, "spec": {"type": "Odd"}}
    )
    assert code == 422 and 'spec.type: Unsupported value: "Odd"' in body["message"]
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "y"}, "spec": 5})
    assert code == 422 and "spec: Invalid value: 5: must be an object" in body["message"]
    code, body = http(server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {}, "application/apply-patch+yaml")
    assert code == 404  # nothing stored by the refused requests
    http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x"}})
    code, body = http(server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {}, "application/apply-patch+yaml")
    assert code == 415
    code, body = http(
        server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {"data": {"a": "b"}}, "application/merge-patch+json"
    )
    assert code == 200 and body["data"] == {"a": "b"}


def test_deployment_template_strategic_merge(apps, ns):
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            },
        },
    }
    created = apps.create_namespaced_deployment(ns, deployment)
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


def test_deployment_selector_must_match_template(apps, ns):
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "d"},
                "spec": {
                    "selector": {"matchLabels": {"app": "a"}},
                    "template": {
                        "metadata": {"labels": {"app": "b"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                },
            },
        )
    assert exc.value.status == 422


# -- selectors ------------------------------------------------------------------------------------


def test_label_and_field_selectors_on_list(v1, ns):
    v1.create_namespaced_pod(ns, pod("a", labels={"app": "web", "tier": "front"}, node="n1"))
    v1.create_namespaced_pod(ns, pod("b", labels={"app": "web"}, phase="Pending"))
    v1.create_namespaced_pod(ns, pod("c", labels={"app": "db"}, node="n1"))

    def names(**kwargs):
        return sorted(p.metadata.name for p in v1.list_namespaced_pod(ns, **kwargs).items)

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app=web,tier!=front") == ["b"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!tier") == ["b", "c"]
    assert names(label_selector="app in (db, web),app notin (web)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Running") == ["a", "c"]
    assert names(field_selector="spec.nodeName=n1,metadata.name!=a") == ["c"]
    assert names(field_selector="spec.nodeName=") == ["b"]
    everywhere = v1.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={ns}", label_selector="app=db")
    assert [p.metadata.name for p in everywhere.items] == ["c"]
    with pytest.raises(ApiException) as exc:
        v1.list_namespaced_pod(ns, label_selector="app in web")
    assert exc.value.status == 400


def test_selector_parsers():
    match = parse_label_selector("a=1, b!=2, c, !d, e in (x,y)")
    assert match({"a": "1", "c": "", "e": "y"})
    assert not match({"a": "1", "c": "", "e": "z"})
    assert not match({"a": "1", "b": "2", "c": "", "e": "x"})
    assert not match({"a": "1", "c": "", "d": "", "e": "x"})
    assert parse_field_selector("metadata.name==x")({"metadata": {"name": "x"}})
    assert not parse_field_selector("status.phase!=Running")({"status": {"phase": "Running"}})
    with pytest.raises(ValueError):
        parse_label_selector("a b")


# -- watch ----------------------------------------------------------------------------------------


def test_watch_added_modified_deleted(v1, ns):
    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    watcher = Watcher(v1.list_namespaced_pod, ns, resource_version=rv)
    v1.create_namespaced_pod(ns, pod("w1", labels={"v": "1"}))
    v1.patch_namespaced_pod("w1", ns, {"metadata": {"labels": {"v": "2"}}})
    v1.delete_namespaced_pod("w1", ns)
    events = watcher.take(3)
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    assert events[1][2].metadata.labels == {"v": "2"}
    assert isinstance(events[0][2], client.V1Pod)


def test_watch_starts_with_current_state_then_follows(v1, ns):
    v1.create_namespaced_pod(ns, pod("old"))
    watcher = Watcher(v1.list_namespaced_pod, ns, timeout=3)
    assert [(t, n) for t, n, _ in watcher.take(1)] == [("ADDED", "old")]
    v1.create_namespaced_pod(ns, pod("new"))
    assert [(t, n) for t, n, _ in watcher.take(1)] == [("ADDED", "new")]


def test_watch_all_namespaces(v1, ns):
    v1.create_namespace({"metadata": {"name": f"{ns}-b"}})
    try:
        rv = v1.list_pod_for_all_namespaces().metadata.resource_version
        watcher = Watcher(v1.list_pod_for_all_namespaces, resource_version=rv)
        v1.create_namespaced_pod(ns, pod("x"))
        v1.create_namespaced_pod(f"{ns}-b", pod("y"))
        events = watcher.take(2)
        assert [(t, o.metadata.namespace, n) for t, n, o in events] == [("ADDED", ns, "x"), ("ADDED", f"{ns}-b", "y")]
    finally:
        v1.delete_namespace(f"{ns}-b")


def test_watch_from_a_list_version_does_not_replay(v1, ns):
    v1.create_namespaced_pod(ns, pod("before"))
    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    v1.create_namespaced_pod(ns, pod("after"))
    events = Watcher(v1.list_namespaced_pod, ns, resource_version=rv, timeout=1).rest()
    assert [(t, n) for t, n, _ in events] == [("ADDED", "after")]


def test_watch_selectors_see_objects_enter_and_leave(v1, ns):
    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    watcher = Watcher(v1.list_namespaced_pod, ns, resource_version=rv, label_selector="app=web", timeout=2)
    v1.create_namespaced_pod(ns, pod("other", labels={"app": "db"}))
    v1.patch_namespaced_pod("other", ns, {"metadata": {"labels": {"app": "web"}}})  # enters the selection
    v1.patch_namespaced_pod("other", ns, {"metadata": {"labels": {"app": "db"}}})  # and leaves it
    v1.create_namespaced_pod(ns, pod("web", labels={"app": "web"}))
    assert [(t, n) for t, n, _ in watcher.rest()] == [("ADDED", "other"), ("DELETED", "other"), ("ADDED", "web")]

    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    watcher = Watcher(v1.list_namespaced_pod, ns, resource_version=rv, field_selector="metadata.name=web", timeout=1)
    v1.delete_namespaced_pod("other", ns)
    v1.delete_namespaced_pod("web", ns)
    assert [(t, n) for t, n, _ in watcher.rest()] == [("DELETED", "web")]


def test_watch_timeout_ends_the_stream(v1, ns):
    started = time.monotonic()
    assert Watcher(v1.list_namespaced_pod, ns, resource_version="1", timeout=1).rest() == []
    assert time.monotonic() - started < 5


def test_watch_from_an_expired_version_gets_410():
    with LabApiServerThread(service_cidr=CIDR, history_limit=5) as srv:
        api = kubernetes.config.new_client_from_config_dict(srv.kubeconfig())
        v1 = client.CoreV1Api(api)
        for i in range(10):
            v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        # The raw stream: one ERROR event carrying a 410 Status, then the end.
        url = f"{srv.url}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        assert len(lines) == 1
        event = json.loads(lines[0])
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
        # The official client turns it into an ApiException (it retries without timeoutSeconds).
        with pytest.raises(ApiException) as exc:
            list(
                watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version="2", timeout_seconds=2)
            )
        assert exc.value.status == 410
        # The recent past can still be resumed.
        recent = v1.list_namespaced_config_map("default").metadata.resource_version
        events = list(
            watch.Watch().stream(
                v1.list_namespaced_config_map, "default", resource_version=str(int(recent) - 2), timeout_seconds=1
            )
        )
        assert [e["object"].metadata.name for e in events] == ["c8", "c9"]
        api.close()


# -- services -------------------------------------------------------------------------------------


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


# -- patches (pure) -------------------------------------------------------------------------------


def test_merge_patch_rules():
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": 2}) == {"a": {"c": [3]}, "d": 1, "e": 2}
    assert doc == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # untouched
    containers = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    merged = merge_patch(containers, {"containers": [{"name": "b", "image": "2"}]}, strategic=True)
    assert merged == {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    assert merge_patch(containers, {"containers": [{"name": "b", "image": "2"}]}) == {
        "containers": [{"name": "b", "image": "2"}]
    }


def test_json_patch_operations():
    doc = {"a": [1, 2], "b": {"c": 1}}
    result = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "move", "from": "/b/c", "path": "/d"},
            {"op": "copy", "from": "/d", "path": "/e~1f"},
            {"op": "test", "path": "/d", "value": 1},
        ],
    )
    assert result == {"a": [0, 1, 2, 3], "b": {}, "d": 1, "e/f": 1}
    with pytest.raises(ValueError):
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    with pytest.raises(ValueError):
        json_patch(doc, [{"op": "replace", "path": "/missing", "value": 2}])


# -- port forwarding ------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(256 * 1024):
            self.request.sendall(data)


class _Greeter(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hello and goodbye")


def _tcp_server(handler):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def echo_port():
    server = _tcp_server(_Echo)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_portforward_with_the_official_client(v1, ns, echo_port):
    v1.create_namespaced_pod(ns, pod("echo", ip="127.0.0.1"))
    forward = portforward(v1.connect_get_namespaced_pod_portforward, "echo", ns, ports=str(echo_port))
    sock = forward.socket(echo_port)
    sock.settimeout(30)
    payload = os.urandom(MiB)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(256 * 1024)
        assert chunk, f"connection closed after {len(received)} bytes"
        received += chunk
    sender.join()
    assert bytes(received) == payload
    assert forward.error(echo_port) is None
    sock.close()


async def _aiohttp_forward(url, ns, name, port, payload):
    """What Tether's own client does: a raw websocket, channel byte first, the port announced first."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{url}/api/v1/namespaces/{ns}/pods/{name}/portforward?ports={port}",
            protocols=("v4.channel.k8s.io",),
            max_msg_size=0,
        ) as ws,
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        announced = [(await ws.receive_bytes(timeout=10)) for _ in range(2)]
        assert announced == [bytes([0]) + port.to_bytes(2, "little"), bytes([1]) + port.to_bytes(2, "little")]

        async def send():
            for i in range(0, len(payload), 64 * 1024):
                await ws.send_bytes(b"\x00" + payload[i : i + 64 * 1024])

        sender = asyncio.create_task(send())
        received, errors = bytearray(), bytearray()
        while len(received) < len(payload):
            message = await ws.receive(timeout=30)
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            (received if message.data[0] == 0 else errors).extend(message.data[1:])
        await sender
        return bytes(received), bytes(errors)


def test_portforward_with_raw_aiohttp(server, v1, ns, echo_port):
    v1.create_namespaced_pod(ns, pod("echo", ip="127.0.0.1"))
    payload = os.urandom(MiB)
    received, errors = asyncio.run(_aiohttp_forward(server.url, ns, "echo", echo_port, payload))
    assert errors == b""
    assert received == payload


def test_portforward_closes_when_the_pod_closes(server, v1, ns):
    greeter = _tcp_server(_Greeter)
    try:
        port = greeter.server_address[1]
        v1.create_namespaced_pod(ns, pod("greeter", ip="127.0.0.1"))

        async def run():
            async with aiohttp.ClientSession() as session:
                url = f"{server.url}/api/v1/namespaces/{ns}/pods/greeter/portforward?ports={port}"
                async with session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
                    frames = []
                    async for message in ws:
                        frames.append(message.data)
                    return frames, ws.closed

        frames, closed = asyncio.run(asyncio.wait_for(run(), 10))
        assert b"".join(f[1:] for f in frames[2:] if f[0] == 0) == b"hello and goodbye"
        assert closed
    finally:
        greeter.shutdown()
        greeter.server_close()


def test_portforward_dial_failure_is_reported_on_the_error_channel(server, v1, ns):
    port = _free_port()
    v1.create_namespaced_pod(ns, pod("dead", ip="127.0.0.1"))

    async def run():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/v1/namespaces/{ns}/pods/dead/portforward?ports={port}"
            async with session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
                return [message.data async for message in ws]

    frames = asyncio.run(asyncio.wait_for(run(), 10))
    errors = b"".join(f[1:] for f in frames[2:] if f[0] == 1).decode()
    assert f"error forwarding port {port} to pod {ns}/dead" in errors
    assert "refused" in errors.lower()


def test_portforward_needs_a_pod_with_an_ip(server, v1, ns):
    v1.create_namespaced_pod(ns, pod("pending", phase="Pending"))

    async def status(name):
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/v1/namespaces/{ns}/pods/{name}/portforward?ports=80"
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await session.ws_connect(url, protocols=("v4.channel.k8s.io",))
            return exc.value.status

    assert asyncio.run(status("missing")) == 404
    assert asyncio.run(status("pending")) == 400


# -- the runner -----------------------------------------------------------------------------------


def _start_runner(tmp_path, *extra):
    ready = tmp_path / "ready"
    command = [
        sys.executable,
        "-m",
        "tether.lab.apiserver",
        "--listen",
        "127.0.0.1:0",
        "--service-cidr",
        CIDR,
        "--ready-file",
        str(ready),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), ready


def test_runner_seeds_serves_and_exits_cleanly(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}},
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "lab"},
                    "spec": {"containers": [{"name": "web", "image": "web"}]},
                    "status": {"phase": "Running", "podIP": "10.1.0.2"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web", "namespace": "lab"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
                },
            ]
        )
    )
    proc, ready = _start_runner(tmp_path, "--seed", str(seed))
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the ready file never appeared"
            time.sleep(0.05)
        url = ready.read_text().strip()
        assert url.startswith("http://127.0.0.1:")
        api = kubernetes.config.new_client_from_config_dict(kubeconfig_for(url))
        v1 = client.CoreV1Api(api)
        assert [p.status.pod_ip for p in v1.list_namespaced_pod("lab").items] == ["10.1.0.2"]
        assert v1.read_namespaced_service("web", "lab").spec.cluster_ip == "10.96.0.10"
        # An open watch must not hold up the exit.
        watcher = Watcher(v1.list_namespaced_pod, "lab", timeout=60)
        watcher.take(1)
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not ready.exists()


def test_runner_rejects_a_bad_seed(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "x"},
                    "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 80}]},
                }
            ]
        )
    )
    proc, ready = _start_runner(tmp_path, "--seed", str(seed))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "seed object #0 (Service default/x)" in err and "The range of valid IPs is 10.96.0.0/16" in err
    assert "Traceback" not in err
    assert not ready.exists()
