"""Watches: the event stream, selectors entering and leaving, timeouts and 410 for expired versions."""

import asyncio
import json
import time
import urllib.request

import kubernetes
import pytest
from apiserver_support import CIDR, Watcher, pod
from kubernetes import client, watch
from kubernetes.client import ApiException

from tether.lab.apiserver.history import Event, Expired, History
from tether.lab.apiserver.kinds import KINDS_BY_TYPE
from tether.lab.apiserver.routing import Route
from tether.lab.apiserver.selectors import selector
from tether.lab.apiserver.server import LabApiServerThread
from tether.lab.apiserver.watch import translate


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


# -- history and translation (pure) ---------------------------------------------------------------

POD, CONFIGMAP = KINDS_BY_TYPE["v1", "Pod"], KINDS_BY_TYPE["v1", "ConfigMap"]


def pod_in(namespace, app, name="p"):
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"app": app}}}


def test_translate_follows_objects_into_and_out_of_a_selection():
    route = Route(POD, "web", None, None)
    web = selector({"labelSelector": "app=web"})

    def seen(event_type, obj, old=None, kind=POD):
        return translate(Event(1, kind, event_type, obj, old), route, web)

    assert seen("ADDED", pod_in("web", "web")) == ("ADDED", pod_in("web", "web"))
    assert seen("ADDED", pod_in("web", "db")) is None
    assert seen("ADDED", pod_in("other", "web")) is None
    assert seen("ADDED", pod_in("web", "web"), kind=CONFIGMAP) is None
    assert seen("MODIFIED", pod_in("web", "web"), pod_in("web", "db")) == ("ADDED", pod_in("web", "web"))
    assert seen("MODIFIED", pod_in("web", "db"), pod_in("web", "web")) == ("DELETED", pod_in("web", "db"))
    assert seen("MODIFIED", pod_in("web", "web"), pod_in("web", "web")) == ("MODIFIED", pod_in("web", "web"))
    assert seen("MODIFIED", pod_in("web", "db"), pod_in("web", "db")) is None
    assert seen("DELETED", pod_in("web", "web")) == ("DELETED", pod_in("web", "web"))


def test_history_resumes_within_its_limit_and_expires_beyond_it():
    async def run():
        history = History(limit=2)
        for rv in (1, 2, 3):
            history.append(Event(rv, POD, "ADDED", pod_in("web", "web", f"p{rv}"), None))
        assert history.floor == 1
        closing = asyncio.Event()
        seen = []
        async for event in history.after(1, closing):
            seen.append(event.rv)
            if event.rv == 3:
                break
        with pytest.raises(Expired):
            await anext(history.after(0, closing))

        # A reader waiting for news ends once closing is set and notified.
        waiting = asyncio.ensure_future(anext(history.after(3, closing)))
        await asyncio.sleep(0)
        closing.set()
        history.notify()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        return seen

    assert asyncio.run(run()) == [2, 3]


def test_streaming_list_ends_its_initial_events_with_a_bookmark(server, v1, ns):
    # kubectl's informers (rollout status, delete --wait) ask for this and wait for the bookmark.
    v1.create_namespaced_pod(ns, pod("s1"))
    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    query = f"watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}&timeoutSeconds=1"
    with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/{ns}/pods?{query}", timeout=5) as response:
        events = [json.loads(line) for line in response.read().splitlines()]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [("ADDED", "s1"), ("BOOKMARK", None)]
    bookmark = events[1]["object"]
    assert bookmark["kind"] == "Pod" and bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(rv)
