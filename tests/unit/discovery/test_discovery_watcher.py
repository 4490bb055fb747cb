"""ClusterDiscovery's list/watch loop against a tiny in-process API server on 127.0.0.1.

No network beyond loopback: this checks the real client calls, 410 handling
and that stop() is prompt; richer I/O is covered by the integration tests
against the Kubernetes API emulator.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network as net
from urllib.parse import parse_qs, urlparse

import pytest
from discovery_support import ENV, Recorder
from kubernetes import client

from tether.manager.config import ManagerConfig
from tether.manager.discovery.tracker import ClusterNetwork
from tether.manager.discovery.watcher import ClusterDiscovery


class FakeApiServer:
    """Just enough of the Kubernetes API for ClusterDiscovery: list+watch nodes/pods, refuse ClusterIPs."""

    def __init__(self, service_cidr: str = "10.96.0.0/12") -> None:
        self.cond = threading.Condition()
        self.rv = 10
        self.objects: dict[str, dict[str, dict]] = {"nodes": {}, "pods": {}}
        self.log: dict[str, list[tuple[int, str, dict]]] = {"nodes": [], "pods": []}
        self.expired: set[str] = set()
        self.closing = False
        self.service_cidr = service_cidr
        self.requests: list[tuple[str, str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.requests.append(("GET", url.path, query))
                kind = {"/api/v1/nodes": "nodes", "/api/v1/pods": "pods"}.get(url.path)
                if kind is None:
                    return self._json(404, {"kind": "Status", "code": 404, "message": "not found"})
                if query.get("watch") == "true":
                    return self._watch(kind, query)
                with server.cond:
                    items = list(server.objects[kind].values())
                    rv = server.rv
                return self._json(
                    200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items}
                )

            def do_POST(self):
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(("POST", url.path, body))
                ip_ = body["spec"]["clusterIP"]
                if ":" in ip_:
                    message = f'Service "{body["metadata"]["name"]}" is invalid: IPv6 is not configured'
                else:
                    message = (
                        f'Service "{body["metadata"]["name"]}" is invalid: spec.clusterIPs: Invalid value: '
                        f'[]string{{"{ip_}"}}: failed to allocate IP {ip_}: the provided IP ({ip_}) is not in '
                        f"the valid range. The range of valid IPs is {server.service_cidr}"
                    )
                self._json(
                    422,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": message,
                        "reason": "Invalid",
                        "code": 422,
                    },
                )

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, kind, query):
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds", 60))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while time.monotonic() < deadline:
                        with server.cond:
                            if server.closing:
                                break
                            if kind in server.expired:
                                server.expired.discard(kind)
                                gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                                self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                                break
                            pending = [e for e in server.log[kind] if e[0] > since]
                            if not pending:
                                server.cond.wait(0.05)
                                continue
                        for rv, event_type, obj in pending:
                            self._chunk(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
                            since = rv
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def put(self, kind: str, obj: dict, *, event: str | None = "ADDED", silently: bool = False) -> None:
        with self.cond:
            self.rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            if event == "DELETED":
                self.objects[kind].pop(key, None)
            else:
                self.objects[kind][key] = obj
            if not silently:
                self.log[kind].append((self.rv, event, obj))
            self.cond.notify_all()

    def expire(self, kind: str) -> None:
        with self.cond:
            self.expired.add(kind)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def raw_node(name: str, cidr: str) -> dict:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}


def raw_pod(name: str, pod_ip: str, namespace: str = "default") -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]},
    }


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def api_client(api):
    configuration = client.Configuration(host=api.url)
    with client.ApiClient(configuration) as api_client:
        yield api_client


class TestClusterDiscoveryLoopback:
    @pytest.mark.timeout(30)
    def test_snapshot_changes_relist_and_prompt_stop(self, api, api_client):
        api.put("nodes", raw_node("n1", "10.244.0.0/24"))
        api.put("pods", raw_pod("tether-manager", "10.244.0.5", "tether"))
        rec = Recorder()
        lock = threading.Lock()

        def on_change(network):
            with lock:
                rec(network)

        discovery = ClusterDiscovery(
            api_client, ManagerConfig(), "tether", "10.244.0.5", on_change, watch_timeout=60, backoff_initial=0.1
        )
        discovery.start()
        try:
            assert discovery.wait_ready(5)
            first = discovery.snapshot()
            assert first == ClusterNetwork((net("10.96.0.0/12"),), (net("10.244.0.0/24"),))
            assert rec.calls == [first]
            probe = [r for r in api.requests if r[0] == "POST"]
            assert probe[0][1] == "/api/v1/namespaces/tether/services"
            assert probe[0][2]["spec"]["clusterIP"] == "1.1.1.1"
            assert probe[0][2]["metadata"]["name"] == "tether-service-cidr-probe"

            # A watched change is published once.
            api.put("nodes", raw_node("n2", "10.244.1.0/24"))
            assert wait_for(lambda: len(rec.calls) == 2)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24"]

            # A pod update that changes nothing is not published; the next real change is.
            api.put("pods", raw_pod("tether-manager", "10.244.0.5", "tether"), event="MODIFIED")
            api.put("nodes", raw_node("n3", "10.244.2.0/24"))
            assert wait_for(lambda: len(rec.calls) == 3)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]

            # A deletion the watch never saw is found by the relist after 410 Gone.
            api.put("nodes", raw_node("n3", "10.244.2.0/24"), event="DELETED", silently=True)
            api.expire("nodes")
            assert wait_for(lambda: len(rec.calls) == 4)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24"]
            lists = [r for r in api.requests if r[1] == "/api/v1/nodes" and r[2].get("watch") != "true"]
            assert len(lists) == 2
            watches = [r[2] for r in api.requests if r[1] == "/api/v1/nodes" and r[2].get("watch") == "true"]
            assert watches[0]["timeoutSeconds"] == "60"
            assert watches[0]["resourceVersion"] == "12"  # from the list, not from scratch
        finally:
            started = time.monotonic()
            discovery.stop()
            elapsed = time.monotonic() - started
        # The watches were open with timeoutSeconds=60; stop must not wait for them.
        assert elapsed < 2.0
        assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("tether-discovery"))
        calls = len(rec.calls)
        api.put("nodes", raw_node("n9", "10.9.0.0/24"))
        time.sleep(0.2)
        assert len(rec.calls) == calls

    @pytest.mark.timeout(30)
    def test_environment_strategy_reads_no_nodes_or_pods(self, api, api_client):
        config = ManagerConfig(
            pod_cidr_strategy=ENV, pod_cidrs=(net("10.244.0.0/16"),), service_cidr=net("10.43.0.0/16")
        )
        rec = Recorder()
        discovery = ClusterDiscovery(api_client, config, "tether", None, rec)
        discovery.start()
        try:
            assert discovery.wait_ready(5)
            assert rec.calls == [ClusterNetwork((net("10.43.0.0/16"),), (net("10.244.0.0/16"),))]
        finally:
            discovery.stop()
        assert api.requests == []

    @pytest.mark.timeout(30)
    def test_unreachable_api_is_retried_and_stop_still_prompt(self):
        configuration = client.Configuration(host="http://127.0.0.1:9")  # discard port: refused
        configuration.retries = False
        with client.ApiClient(configuration) as dead:
            discovery = ClusterDiscovery(dead, ManagerConfig(), "tether", None, Recorder(), backoff_initial=0.05)
            discovery.start()
            assert not discovery.wait_ready(0.5)
            assert discovery.snapshot() is None
            started = time.monotonic()
            discovery.stop()
            assert time.monotonic() - started < 2.0
