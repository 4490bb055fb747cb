"""The kubelet's pure decisions: addresses, processes (downward API, mounted volumes), readiness and status."""

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tether.lab.controller.images import ImageError
from tether.lab.controller.podspec import allocate_ip, missing_images, processes, readiness, status, veth_name
from tether.manager.api.sidecar import SidecarConfig, sidecar_container, token_volume


def agent_pod():
    sidecar = sidecar_container("Deployment", "echo", SidecarConfig(image="tether-manager:0.1.0", manager="m:8081"))
    return {
        "metadata": {"name": "echo-abc-x", "namespace": "default", "uid": "u1"},
        "spec": {"nodeName": "lab-node-1", "containers": [sidecar], "volumes": [token_volume(SidecarConfig())]},
        "status": {"podIP": "10.244.1.14"},
    }


def test_addresses_come_from_the_node_range_skipping_used_ones():
    cidr = IPv4Network("10.244.1.0/24")
    assert str(allocate_ip(cidr, [])) == "10.244.1.10"
    assert str(allocate_ip(cidr, ["10.244.1.10", "10.244.1.11"])) == "10.244.1.12"
    assert len(veth_name("a-long-namespace", "a-very-long-pod-name-abcde")) <= 15


def test_the_agent_sidecar_runs_with_its_downward_env_and_its_token_at_the_host_directory():
    [agent] = processes(agent_pod(), "/py", "10.250.0.11", {"tether-agent-token": Path("/run/t/vol")}, {"K": "v"})
    assert agent.container == "tether-agent" and "tether.manager.agent.main" in agent.argv[2]
    args = list(agent.argv[3:])
    assert args[args.index("--token-file") + 1] == "/run/t/vol/token"
    env = dict(agent.env)
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["POD_IP"], env["K"]) == (
        "echo-abc-x",
        "default",
        "10.244.1.14",
        "v",
    )
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_unknown_images_and_unresolvable_env_are_named():
    pod = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
    assert missing_images(pod) == ["c"]
    with pytest.raises(ImageError, match="image 'nginx:1' not found"):
        processes(pod, "/py", "", {}, {})
    secret = {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    pod["spec"]["containers"][0] = {"name": "c", "image": "tether-manager", "env": [secret]}
    with pytest.raises(ImageError, match="env S"):
        processes(pod, "/py", "", {}, {})


def test_readiness_follows_the_probe_else_the_tcp_ports():
    assert [
        (c.kind, c.port, c.path) for c in readiness({"readinessProbe": {"httpGet": {"path": "/h", "port": 81}}})
    ] == [("http", 81, "/h")]
    named = {"ports": [{"name": "grpc", "containerPort": 8081}], "readinessProbe": {"tcpSocket": {"port": "grpc"}}}
    assert [(c.kind, c.port) for c in readiness(named)] == [("tcp", 8081)]
    ports = {"ports": [{"containerPort": 7}, {"containerPort": 7, "protocol": "UDP"}]}
    assert [(c.kind, c.port) for c in readiness(ports)] == [("tcp", 7)]
    assert readiness({}) == []


def test_status_reports_image_pull_back_off_and_ready_containers():
    pod = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "nginx"}]}}
    common = {"ip": "", "host_ip": "10.250.0.11", "netns": "ns", "started": "t", "restarts": {}}
    waiting = status(
        pod, ready={}, waiting={"b": ("ImagePullBackOff", "Back-off"), "a": ("PodInitializing", "")}, **common
    )
    assert waiting["phase"] == "Pending" and "podIP" not in waiting
    assert waiting["containerStatuses"][1]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    running = status(pod, ready={"a": True, "b": True}, waiting={}, **{**common, "ip": "10.244.1.10"})
    assert running["phase"] == "Running" and running["podIP"] == "10.244.1.10"
    assert {c["type"]: c["status"] for c in running["conditions"]}["Ready"] == "True"
    assert running["containerStatuses"][0]["containerID"] == "netns://ns/a"
