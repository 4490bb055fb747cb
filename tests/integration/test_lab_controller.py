"""The lab's controller (tether.lab.controller) through the API, as a user of a real cluster sees it: a
Deployment's pods are made from its template, scaled, replaced when the template changes, each in its own
namespace with an address from its node's pod range; the Service's Endpoints and ClusterIP follow the ready
pods, its EndpointSlices every pod with its readiness, and both go with the Service; an image no registry has
leaves the pod in ImagePullBackOff."""

import ipaddress
import socket
import subprocess
import time

import kubernetes
import pytest

NS = "ctrl-test"
NODE_CIDRS = {"lab-node-1": ipaddress.ip_network("10.244.1.0/24"), "lab-node-2": ipaddress.ip_network("10.244.2.0/24")}
ECHO = {
    "name": "echo",
    "image": "tether-lab/echo:latest",
    "args": ["echo", "--port", "7"],
    "ports": [{"name": "echo", "containerPort": 7, "protocol": "TCP"}],
}


def deployment(name, container, replicas=1):
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


@pytest.fixture
def api(lab, workstation):
    client = kubernetes.config.new_client_from_config(config_file=str(lab.kubeconfig), context="tether-lab")
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    with workstation():
        core.create_namespace({"metadata": {"name": NS}})
        try:
            yield core, apps
        finally:
            core.delete_namespace(NS)
            wait(lambda: not _pod_namespaces(), "the test's pods to be removed")
            client.close()


def _pod_namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"tether-lab-pod-{NS}-")]


def wait(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready_pods(core, app):
    pods = core.list_namespaced_pod(NS, label_selector=f"app={app}").items
    return [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def addresses(core, name):
    try:
        eps = core.read_namespaced_endpoints(name, NS)
    except kubernetes.client.ApiException:
        return []
    return sorted(a.ip for s in eps.subsets or [] for a in s.addresses or [])


def slice_endpoints(discovery, service):
    """(ip, ready, serving) of every endpoint of the Service's slices, and the port numbers they list."""
    slices = discovery.list_namespaced_endpoint_slice(NS, label_selector=f"kubernetes.io/service-name={service}").items
    found = sorted(
        (e.addresses[0], e.conditions.ready, e.conditions.serving) for s in slices for e in s.endpoints or []
    )
    return found, sorted({p.port for s in slices if s.endpoints for p in s.ports or []})


def echo_through(netns_name, ip, port=7):
    """An echo through ip:port from inside a pod; kube-proxy's rules follow the endpoints within seconds."""
    from tether.lab.netns import call_in

    def attempt():
        with socket.create_connection((ip, port), timeout=2) as s:
            s.sendall(b"ping")
            return s.recv(16)

    deadline = time.monotonic() + 10
    while True:
        try:
            return call_in(netns_name, attempt)
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no echo through {ip}:{port} from {netns_name}: {exc}") from exc


def test_scaling_a_deployment_adds_a_pod_on_the_node_range_and_to_the_endpoints(api, lab):
    core, apps = api
    apps.create_namespaced_deployment(NS, deployment("demo", ECHO))
    service = {
        "metadata": {"name": "demo"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"port": 7, "targetPort": "echo"}]},
    }
    cluster_ip = core.create_namespaced_service(NS, service).spec.cluster_ip
    # a pod the Service selects that never gets ready: nothing listens where its probe looks
    limp = deployment("limp", dict(ECHO, readinessProbe={"tcpSocket": {"port": 9}}))
    limp["spec"]["template"]["metadata"]["labels"]["app"] = "demo"
    limp["spec"]["selector"]["matchLabels"] = {"track": "limp"}
    limp["spec"]["template"]["metadata"]["labels"]["track"] = "limp"
    apps.create_namespaced_deployment(NS, limp)
    [first] = wait(lambda: ready_pods(core, "demo"), "the first pod")
    assert wait(lambda: addresses(core, "demo"), "endpoints") == [first.status.pod_ip]
    discovery = kubernetes.client.DiscoveryV1Api(core.api_client)

    def limp_ip():
        pods = core.list_namespaced_pod(NS, label_selector="track=limp").items
        return pods and pods[0].status.pod_ip

    limp_at = wait(limp_ip, "the pod that never gets ready to have an address")
    want = sorted([(first.status.pod_ip, True, True), (limp_at, False, False)])
    assert wait(lambda: slice_endpoints(discovery, "demo") == (want, [7]), "both pods in the slices")

    apps.patch_namespaced_deployment("demo", NS, {"spec": {"replicas": 2}})
    pods = wait(lambda: (len(found := ready_pods(core, "demo")) == 2) and found, "a second ready pod")
    for pod in pods:
        assert ipaddress.ip_address(pod.status.pod_ip) in NODE_CIDRS[pod.spec.node_name]
        assert pod.metadata.owner_references[0].kind == "Deployment"
        assert pod.metadata.labels["pod-template-hash"]
    ips = sorted(p.status.pod_ip for p in pods)
    assert wait(lambda: addresses(core, "demo") == ips, "both pods in the endpoints")
    want = sorted([*((ip, True, True) for ip in ips), (limp_at, False, False)])
    assert wait(lambda: slice_endpoints(discovery, "demo") == (want, [7]), "the new pod in the slices")
    # kube-proxy follows: the ClusterIP answers, from a pod of the test, with both pods behind it
    netns = f"tether-lab-pod-{NS}-{pods[0].metadata.name}"
    assert all(echo_through(netns, cluster_ip) == b"ping" for _ in range(4))  # round-robin: both pods answer
    rules = subprocess.run(
        ["ip", "netns", "exec", "tether-lab-router", "nft", "list", "table", "ip", "tether_lab_kubeproxy"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert all(f"dnat to {ip}:7" in rules for ip in ips)
    status = wait(lambda: (d := apps.read_namespaced_deployment("demo", NS).status).ready_replicas == 2 and d, "status")
    assert status.updated_replicas == 2 and status.replicas == 2

    core.delete_namespaced_service("demo", NS)
    assert wait(lambda: not addresses(core, "demo") and slice_endpoints(discovery, "demo") == ([], []), "cleanup")
    with pytest.raises(kubernetes.client.ApiException) as gone:
        core.read_namespaced_endpoints("demo", NS)
    assert gone.value.status == 404


def test_a_changed_template_replaces_the_pods(api):
    core, apps = api
    apps.create_namespaced_deployment(NS, deployment("demo", ECHO))
    [old] = wait(lambda: ready_pods(core, "demo"), "the first pod")
    env = [{"name": "GREETING", "value": "changed"}]
    apps.patch_namespaced_deployment(
        "demo", NS, {"spec": {"template": {"spec": {"containers": [{**ECHO, "env": env}]}}}}
    )

    def replaced():
        pods = core.list_namespaced_pod(NS, label_selector="app=demo").items
        names = [p.metadata.name for p in pods]
        return pods if old.metadata.name not in names and len(ready_pods(core, "demo")) == 1 else None

    [new] = wait(replaced, "the pod to be replaced")
    assert new.metadata.labels["pod-template-hash"] != old.metadata.labels["pod-template-hash"]
    assert new.spec.containers[0].env[0].value == "changed"
    assert wait(lambda: f"tether-lab-pod-{NS}-{old.metadata.name}" not in _pod_namespaces(), "the old sandbox gone")


def test_an_unknown_image_leaves_the_pod_in_image_pull_back_off(api):
    core, apps = api
    apps.create_namespaced_deployment(NS, deployment("ghost", {"name": "ghost", "image": "registry.test/no/such:1"}))

    def waiting_reason():
        for pod in core.list_namespaced_pod(NS, label_selector="app=ghost").items:
            for status in pod.status.container_statuses or []:
                if status.state.waiting is not None and status.state.waiting.reason == "ImagePullBackOff":
                    return pod
        return None

    pod = wait(waiting_reason, "ImagePullBackOff")
    assert (
        pod.status.phase == "Pending"
        and "registry.test/no/such:1" in pod.status.container_statuses[0].state.waiting.message
    )
    assert apps.read_namespaced_deployment("ghost", NS).status.ready_replicas in (None, 0)


def test_injecting_the_agent_restarts_the_pods_with_a_sidecar_that_arrives_at_the_manager(api, lab):
    """What `tether connect --proxy-via` does to a workload without an agent: the helper patches the template
    (with the user's credentials), and the controller replaces the pods with ones that run the sidecar,
    whose projected token the manager accepts."""
    from tether.helper.root.kube.inject import inject, uninject
    from tether.lab.objects import agent_sidecar_config

    core, apps = api
    apps.create_namespaced_deployment(NS, deployment("demo", ECHO))
    [old] = wait(lambda: ready_pods(core, "demo"), "the first pod")
    assert inject(core.api_client, NS, "demo", "Deployment", agent_sidecar_config(lab.plan)).changed

    def with_agent():
        pods = ready_pods(core, "demo")
        return pods if len(pods) == 1 and len(pods[0].spec.containers) == 2 else None

    [new] = wait(with_agent, "a pod with the sidecar")
    assert new.metadata.name != old.metadata.name and new.status.container_statuses[1].name == "tether-agent"
    log = lab.paths.logs / f"{NS}_{new.metadata.name}_tether-agent.log"
    assert wait(lambda: log.exists() and "arrived at the manager" in log.read_text(), "the agent to arrive")
    assert uninject(core.api_client, NS, "demo", "Deployment").changed
    wait(lambda: (pods := ready_pods(core, "demo")) and len(pods[0].spec.containers) == 1, "a pod without it")
