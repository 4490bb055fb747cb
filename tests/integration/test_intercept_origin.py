"""Connection origin while intercepting, in the lab: with an intercept of web active, the workstation's new flows to
the cluster are dialed by web's agent (the lab's whoami service sees a web pod's IP, not the manager's), and
cluster names resolve as inside web's pod (a single label is a service of web's namespace); after `tether leave`
both go back to the manager.

The workstation connects with namespace webshop, so that web's namespace (default) differs from its own: a short
name then shows whose view answers. Driven through the real CLI and helper, the real manager and the agents the
lab's controller runs in the re-created web pods.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import kubernetes
import pytest
from helper_fixture import RunningHelper, running_helper
from manager_client import kube_configuration, manager_pod
from test_intercept import cli_ok, local_server

from tether.lab.netns import call_in
from tether.lab.topology import WS_NS

pytestmark = [pytest.mark.lab, pytest.mark.rewrites_workloads]

WHOAMI_IP = "10.96.1.15"  # webshop/whoami's ClusterIP (lab/topology.py): answers "<peer ip> <peer port>"
ECHO_IP = "10.96.1.11"  # default/echo's
CATALOG_IP = "10.96.1.14"  # webshop/catalog's
ASK_WHOAMI = (
    "import socket, sys; s = socket.create_connection((sys.argv[1], 80), 5); s.settimeout(5); "
    "print(s.makefile().readline().split()[0])"
)


@pytest.fixture(scope="module")
def helper(lab, tmp_path_factory) -> Iterator[RunningHelper]:
    original = call_in(WS_NS, lambda: _apps(lab).read_namespaced_deployment("web", "default"))
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path_factory.mktemp("origin")) as running:
        running.start()
        running.connect("--namespace", "webshop")
        yield running
        running.cli("uninstall", "--agent", "web", "--namespace", "default")
        running.disconnect()

    def put_back() -> None:
        # As the lab made it (its own agent sidecar, for the other modules' proxy-via tests).
        apps = _apps(lab)
        original.metadata.resource_version = apps.read_namespaced_deployment("web", "default").metadata.resource_version
        apps.replace_namespaced_deployment("web", "default", original)

    call_in(WS_NS, put_back)
    # Let the controller finish rolling web's pods: a lab brought down mid-rollout may leave a pod's namespace.
    deadline = time.monotonic() + 120
    while not (_rolled_out(lab) and len(web_pod_ips(lab, ready=True)) == original.spec.replicas):
        assert time.monotonic() < deadline, "web's pods did not come back after the test"
        time.sleep(0.5)


def _rolled_out(lab) -> bool:
    web = call_in(WS_NS, lambda: _apps(lab).read_namespaced_deployment("web", "default"))
    status, wanted = web.status, web.spec.replicas
    return (status.observed_generation or 0) >= (web.metadata.generation or 0) and (
        status.updated_replicas == status.ready_replicas == status.replicas == wanted
    )


def _apps(lab) -> kubernetes.client.AppsV1Api:
    """The lab's API server, reached from the workstation namespace (call in it)."""
    return kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)))


def peer_of_workstation_flow(lab_run) -> str:
    """The source address whoami saw for a new connection from the workstation."""
    done = lab_run(sys.executable, "-c", ASK_WHOAMI, WHOAMI_IP, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def resolve(lab_run, name: str) -> str | None:
    """The address the workstation's resolver gives for ``name``; None when it has none."""
    done = lab_run("getent", "hosts", name)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


def web_pod_ips(lab, ready: bool = False) -> set[str]:
    """The addresses of web's pods (not being deleted); with ``ready``, only if no other pod of web is left."""

    def read() -> list[kubernetes.client.V1Pod]:
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)))
        return core.list_namespaced_pod("default", label_selector="app=web").items

    pods = call_in(WS_NS, read)
    live = {p.status.pod_ip for p in pods if p.metadata.deletion_timestamp is None and p.status.pod_ip}
    if ready and (len(live) != len(pods) or not all(_ready(p) for p in pods)):
        return set()
    return live


def _ready(pod: kubernetes.client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def test_without_an_intercept_the_manager_dials_and_resolves(helper, lab, lab_run):
    assert helper.status()["origin"] is None
    assert peer_of_workstation_flow(lab_run) == manager_pod(lab).status.pod_ip
    assert resolve(lab_run, "whoami") == WHOAMI_IP  # the connection's namespace, webshop
    assert resolve(lab_run, "echo") is None  # default's echo is not a short name in webshop


def test_an_intercept_of_web_makes_the_machine_speak_as_webs_pod(helper, lab, lab_run, tmp_path):
    manager_ip = manager_pod(lab).status.pod_ip
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        cli_ok(helper, "intercept", "web", "--namespace", "default", "--port", "8080")
        status = helper.status()
        assert status["origin"] == "default/web"
        text = cli_ok(helper, "status")
        assert "cluster flows and names go through the pod of default/web (intercepted)" in text
        peer = peer_of_workstation_flow(lab_run)
        assert peer != manager_ip
        assert peer in web_pod_ips(lab)
        # names as web's pod resolves them: its namespace first, then its search path
        assert resolve(lab_run, "echo") == ECHO_IP
        assert resolve(lab_run, "whoami") is None
        assert resolve(lab_run, "catalog.webshop") == CATALOG_IP
        cli_ok(helper, "leave", "web", "--namespace", "default")
    assert helper.status()["origin"] is None
    assert peer_of_workstation_flow(lab_run) == manager_ip
    assert resolve(lab_run, "whoami") == WHOAMI_IP
    assert resolve(lab_run, "echo") is None
