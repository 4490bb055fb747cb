"""Agent injection with the user's own credentials, against the lab's Kubernetes API emulator through the
official client over HTTP: what the helper does for a --proxy-via workload without an agent."""

import json

import kubernetes
import pytest

from tests.doubles.kubeobjects import deployment as kube_deployment
from tether.helper.root.kube.inject import (
    InjectionError,
    InjectionForbiddenError,
    UnknownWorkloadError,
    ensure_agents,
    inject,
    sidecar_config,
    uninject,
)
from tether.lab.apiserver.authz import Authorizer
from tether.lab.apiserver.server import LabApiServerThread
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.sidecar import ANNOTATION, SIDECAR_NAME, SidecarConfig, manager_address, sidecar_container

CONFIG = SidecarConfig(image="tether-agent:test", manager=manager_address("tether", "cluster.local", 8081))


def deployment(name: str = "web", namespace: str = "default") -> dict:
    container = {"name": name, "image": f"{name}:1", "ports": [{"containerPort": 8080}]}
    return kube_deployment(name, namespace, replicas=2, containers=[container])


@pytest.fixture
def api():
    with LabApiServerThread(seed=[deployment("web"), deployment("echo")]) as server:
        configuration = kubernetes.client.Configuration()
        configuration.host = server.url
        with kubernetes.client.ApiClient(configuration) as client:
            yield client


def read(api, name: str = "web", namespace: str = "default") -> dict:
    response = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(name, namespace, _preload_content=False)
    return json.loads(response.data)


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_inject_twice_gives_one_sidecar_with_the_downward_api_and_an_annotation(api):
    first = inject(api, "default", "web", "", CONFIG)
    assert first.changed and first.workload.kind == "Deployment"
    generation = read(api)["metadata"]["generation"]
    second = inject(api, "default", "web", "Deployment", CONFIG)
    assert not second.changed
    obj = read(api)
    assert obj["metadata"]["generation"] == generation, "a second injection must not touch the object"
    names = [c["name"] for c in containers(obj)]
    assert names == ["web", SIDECAR_NAME]
    sidecar = containers(obj)[1]
    assert sidecar["image"] == "tether-agent:test"
    assert sidecar["command"] == ["tether-agent"]
    args = sidecar["args"]
    assert args[args.index("--manager") + 1] == "tether-manager.tether.svc.cluster.local:8081"
    assert args[args.index("--workload") + 1] == "web" and args[args.index("--kind") + 1] == "Deployment"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in sidecar["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}
    # The agent proves its pod with a projected service-account token for the manager's audience.
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/tether/token"
    assert sidecar["volumeMounts"] == [
        {"name": "tether-agent-token", "mountPath": "/var/run/secrets/tether", "readOnly": True}
    ]
    assert obj["spec"]["template"]["spec"]["volumes"] == [
        {
            "name": "tether-agent-token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": "tether-manager", "expirationSeconds": 3600, "path": "token"}}
                ]
            },
        }
    ]
    recorded = json.loads(obj["spec"]["template"]["metadata"]["annotations"][ANNOTATION])
    assert recorded["image"] == "tether-agent:test"
    assert containers(read(api, "echo")) == containers(deployment("echo"))  # nothing else touched


def test_a_new_image_updates_the_sidecar_in_place(api):
    inject(api, "default", "web", "", CONFIG)
    newer = SidecarConfig(image="tether-agent:newer", manager=CONFIG.manager)
    assert inject(api, "default", "web", "", newer).changed
    sidecars = [c for c in containers(read(api)) if c["name"] == SIDECAR_NAME]
    assert [c["image"] for c in sidecars] == ["tether-agent:newer"]


def test_uninject_removes_the_sidecar_and_the_annotation(api):
    inject(api, "default", "web", "", CONFIG)
    assert uninject(api, "default", "web").changed
    obj = read(api)
    assert [c["name"] for c in containers(obj)] == ["web"]
    assert not obj["spec"]["template"]["spec"].get("volumes"), "the token volume goes with the sidecar"
    assert ANNOTATION not in (obj["spec"]["template"]["metadata"].get("annotations") or {})
    assert not uninject(api, "default", "web").changed


def test_unknown_workload_and_bad_names_are_named_in_the_error(api):
    with pytest.raises(UnknownWorkloadError, match='no Deployment, StatefulSet or ReplicaSet named "nope"'):
        inject(api, "default", "nope", "", CONFIG)
    with pytest.raises(UnknownWorkloadError, match='"web" in namespace "shop"'):
        inject(api, "shop", "web", "", CONFIG)
    with pytest.raises(UnknownWorkloadError, match='no StatefulSet named "web"'):
        inject(api, "default", "web", "StatefulSet", CONFIG)
    with pytest.raises(InjectionError, match='"Web_1"'):
        inject(api, "default", "Web_1", "", CONFIG)
    with pytest.raises(InjectionError, match='namespace "Default"'):
        uninject(api, "Default", "web")
    with pytest.raises(InjectionError, match='kind "Pod"'):
        inject(api, "default", "web", "Pod", CONFIG)


def test_sidecar_container_is_accepted_by_the_official_model():
    container = sidecar_container("StatefulSet", "db", CONFIG)
    model = kubernetes.client.V1Container.from_dict(container)
    assert model.name == SIDECAR_NAME and model.env[2].value_from.field_ref.field_path == "status.podIP"


# --- with a user's own credentials: the API server decides ------------------------------------------------

# alice may read workloads but not patch them; bob may do both.
AUTHORIZER = Authorizer(
    tokens={"alice-token": "alice", "bob-token": "bob"},
    allowed={
        "alice": frozenset({"get deployments"}),
        "bob": frozenset({"get deployments", "patch deployments"}),
    },
)


@pytest.fixture
def users():
    """The API server with per-user rights; a factory of the official client's configuration for a token."""
    with LabApiServerThread(seed=[deployment("web"), deployment("echo")], authorizer=AUTHORIZER) as server:

        def configuration(token: str) -> kubernetes.client.Configuration:
            config = kubernetes.client.Configuration()
            config.host = server.url
            config.api_key = {"authorization": token}
            config.api_key_prefix = {"authorization": "Bearer"}
            return config

        yield server, configuration


def stored_containers(server, name: str) -> list[str]:
    obj = server.call(server.emulator.get_object, "apps/v1", "Deployment", name, "default")
    return [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]


def test_a_user_who_may_not_patch_the_workload_gets_a_clear_error_and_nothing_is_patched(users):
    server, configuration = users
    with pytest.raises(InjectionForbiddenError) as refused:
        ensure_agents(configuration("alice-token"), [("default", "echo", "Deployment")], CONFIG)
    message = str(refused.value)
    assert message.startswith("injecting the tether-agent into Deployment default/echo needs permission to patch ")
    assert 'deployments.apps in namespace "default"' in message
    assert 'User "alice" cannot patch resource "deployments"' in message
    assert stored_containers(server, "echo") == ["echo"]


def test_a_user_who_may_patch_injects_once_and_an_existing_sidecar_is_left_alone(users):
    server, configuration = users
    lines = ensure_agents(configuration("bob-token"), [("default", "echo", "Deployment")] * 2, CONFIG)
    assert lines == [
        "injected the tether-agent sidecar into Deployment default/echo with your credentials; "
        "its agent arrives as its pods restart"
    ]
    assert stored_containers(server, "echo") == ["echo", SIDECAR_NAME]
    # Already there (even with another image): alice, who may only read, connects through it.
    other = SidecarConfig(image="tether-agent:other", manager=CONFIG.manager)
    assert ensure_agents(configuration("alice-token"), [("default", "echo", "")], other) == []


def test_an_unknown_token_is_unauthorized(users):
    _, configuration = users
    with pytest.raises(InjectionError, match="401"):
        ensure_agents(configuration("mallory"), [("default", "echo", "Deployment")], CONFIG)


def test_the_sidecar_comes_from_the_managers_cluster_info_with_defaults():
    info = mpb.ClusterInfo(manager_port=8081, dns=mpb.DNSConfig(cluster_domain="example.internal."))
    assert sidecar_config(info, "tether-system").manager == "tether-manager.tether-system.svc.example.internal:8081"
    info.agent_sidecar.CopyFrom(mpb.AgentSidecar(image="registry/agent:1", manager_address="10.96.1.2:8081"))
    assert sidecar_config(info, "tether") == SidecarConfig(image="registry/agent:1", manager="10.96.1.2:8081")


def test_a_refusal_midway_takes_back_what_the_same_connect_injected(users):
    """Nothing half-applied: the first workload was patched, the second does not exist."""
    server, configuration = users
    with pytest.raises(UnknownWorkloadError):
        ensure_agents(
            configuration("bob-token"), [("default", "echo", "Deployment"), ("default", "gone", "Deployment")], CONFIG
        )
    assert stored_containers(server, "echo") == ["echo"]
    assert ANNOTATION not in (
        server.call(server.emulator.get_object, "apps/v1", "Deployment", "echo", "default")["spec"]["template"][
            "metadata"
        ].get("annotations")
        or {}
    )
