"""Watches: the event stream, selectors entering and leaving, timeouts and 410 for expired versions."""

import json
import time
import urllib.request

import kubernetes
import pytest
from apiserver_support import CIDR, Watcher, pod
from kubernetes import client, watch
from kubernetes.client import ApiException

from tether.lab.apiserver.server import LabApiServerThread


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
