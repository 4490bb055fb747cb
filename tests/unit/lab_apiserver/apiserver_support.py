"""Shared pieces for the API server emulator's tests: object bodies, raw HTTP requests, a watch in a thread.

A plain module (not conftest.py) so the tests can import its helpers by a name no other folder uses.
"""

import json
import queue
import threading
import urllib.error
import urllib.request

from kubernetes import watch
from kubernetes.client import ApiException

CIDR = "10.96.0.0/16"
MiB = 1 << 20


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


def deployment(name, selected, labelled, container="app", image="web:1"):
    """A Deployment selecting pods labelled app=`selected` whose template labels them app=`labelled`."""
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": selected}},
            "template": {
                "metadata": {"labels": {"app": labelled}},
                "spec": {"containers": [{"name": container, "image": image}]},
            },
        },
    }


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
