"""The cells kube-apiserver prints for each kind, from objects to rows."""

import datetime

import pytest

from tether.lab.apiserver.printers import (
    POD_COLUMNS,
    SERVICE_COLUMNS,
    configmap_cells,
    deployment_cells,
    endpoint_slice_cells,
    endpoints_text,
    human_duration,
    namespace_cells,
    node_cells,
    pod_cells,
    pod_status_text,
    printer_of,
    service_cells,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
CREATED = "2026-01-01T11:55:00Z"  # five minutes before NOW


def _meta(name, **extra):
    return {"name": name, "creationTimestamp": CREATED, **extra}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (240, "4m"),
        (900, "15m"),
        (5 * 3600 + 600, "5h10m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (30 * 86400, "30d"),
        (800 * 86400, "2y70d"),
        (3000 * 86400, "8y"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def _pod(**status):
    return {
        "metadata": _meta("web-0"),
        "spec": {"containers": [{"name": "web"}, {"name": "agent"}], "nodeName": "lab-node-1"},
        "status": {"phase": "Running", "podIP": "10.244.1.5", **status},
    }


def test_pod_row_counts_ready_containers_and_restarts():
    running = {"running": {"startedAt": CREATED}}
    pod = _pod(
        containerStatuses=[
            {"name": "web", "ready": True, "restartCount": 2, "state": running},
            {"name": "agent", "ready": False, "restartCount": 1, "state": running},
        ]
    )
    assert pod_cells(pod, NOW) == ["web-0", "1/2", "Running", "3", "5m", "10.244.1.5", "lab-node-1", "<none>", "<none>"]
    assert [c.name for c in POD_COLUMNS if c.priority == 0] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert [c.name for c in POD_COLUMNS if c.priority == 1][:2] == ["IP", "Node"]


def test_pod_status_shows_what_keeps_it_from_running():
    waiting = _pod(phase="Pending", containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff"}}}])
    assert pod_status_text(waiting) == "ImagePullBackOff"
    crashed = _pod(containerStatuses=[{"state": {"terminated": {"exitCode": 3}}}])
    assert pod_status_text(crashed) == "ExitCode:3"
    init = _pod(phase="Pending", initContainerStatuses=[{"state": {"running": {}}}])
    init["spec"]["initContainers"] = [{"name": "setup"}]
    assert pod_status_text(init) == "Init:0/1"
    going = _pod()
    going["metadata"]["deletionTimestamp"] = CREATED
    assert pod_status_text(going) == "Terminating"
    assert pod_cells({"metadata": {"name": "p"}, "spec": {}, "status": {}}, NOW)[1:6] == [
        "0/0",
        "Unknown",
        "0",
        "<unknown>",
        "<none>",
    ]


def test_service_row():
    svc = {
        "metadata": _meta("web"),
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.1.10",
            "selector": {"tier": "front", "app": "web"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        },
    }
    assert service_cells(svc, NOW) == [
        "web",
        "NodePort",
        "10.96.1.10",
        "<none>",
        "80:30080/TCP,53/UDP",
        "5m",
        "app=web,tier=front",
    ]
    assert [c.name for c in SERVICE_COLUMNS] == [
        "Name",
        "Type",
        "Cluster-IP",
        "External-IP",
        "Port(s)",
        "Age",
        "Selector",
    ]
    lb = {"metadata": _meta("lb"), "spec": {"type": "LoadBalancer", "clusterIP": "None"}, "status": {}}
    assert service_cells(lb, NOW)[2:5] == ["None", "<pending>", "<none>"]
    external = {"metadata": _meta("x"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert service_cells(external, NOW)[3] == "db.example.com"


def test_deployment_row():
    deploy = {
        "metadata": _meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
            },
            "template": {"spec": {"containers": [{"name": "web", "image": "w:1"}, {"name": "a", "image": "a:2"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert deployment_cells(deploy, NOW) == ["web", "2/3", 3, 2, "5m", "web,a", "w:1,a:2", "app=web,tier in (a,b)"]
    assert deployment_cells({"metadata": _meta("new"), "spec": {"replicas": 1}}, NOW)[1:4] == ["0/1", 0, 0]


def test_endpoints_text_lists_three_then_counts():
    assert endpoints_text({"metadata": _meta("e")}) == "<none>"
    one = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]}
    assert endpoints_text(one) == "10.0.0.1:80,10.0.0.2:80"
    many = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 81}]}]}
    assert endpoints_text(many) == "10.0.0.1:80,10.0.0.2:80,10.0.0.1:81 + 1 more..."
    assert endpoints_text({"subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]}) == "10.0.0.9"


def test_endpoint_slice_row_lists_every_address_ready_or_not_and_the_port_numbers():
    columns, cells = printer_of("EndpointSlice")
    assert [c.name for c in columns] == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    endpoints = [
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
    ]
    two = {
        "metadata": _meta("web-abc"),
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 80}],
        "endpoints": endpoints,
    }
    assert cells(two, NOW) == ["web-abc", "IPv4", "80", "10.0.0.1,10.0.0.2", "5m"]
    more = dict(
        two,
        endpoints=[*endpoints, {"addresses": ["10.0.0.3", "10.0.0.4"]}],
        ports=[{"port": 1}, {"name": "dns"}, {}, {"port": 4}],
    )
    assert endpoint_slice_cells(more, NOW)[2:4] == ["1,dns,* + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."]
    placeholder = {"metadata": _meta("web-xyz"), "addressType": "IPv4", "ports": [], "endpoints": []}
    assert endpoint_slice_cells(placeholder, NOW)[2:4] == ["<unset>", "<unset>"]


def test_namespace_configmap_and_node_rows():
    assert namespace_cells({"metadata": _meta("ns"), "status": {"phase": "Terminating"}}, NOW) == [
        "ns",
        "Terminating",
        "5m",
    ]
    assert configmap_cells({"metadata": _meta("cm"), "data": {"a": "1"}, "binaryData": {"b": ""}}, NOW)[1] == 2
    node = {
        "metadata": _meta("n1", labels={"node-role.kubernetes.io/control-plane": ""}),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.250.0.11"}],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0",
                "osImage": "os",
                "kernelVersion": "6",
                "containerRuntimeVersion": "rt",
            },
        },
    }
    assert node_cells(node, NOW) == [
        "n1",
        "NotReady,SchedulingDisabled",
        "control-plane",
        "5m",
        "v1.31.0",
        "10.250.0.11",
        "<none>",
        "os",
        "6",
        "rt",
    ]


def test_kinds_without_a_printer_get_name_and_creation_time():
    columns, cells = printer_of("Event")
    assert [c.name for c in columns] == ["Name", "Created At"]
    assert cells({"metadata": _meta("e")}, NOW) == ["e", CREATED]
