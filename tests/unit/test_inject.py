"""Agent injection against the lab's Kubernetes API emulator, through the official client over HTTP."""

import asyncio
import json

import kubernetes
import pytest

from tether.lab.apiserver.server import LabApiServerThread
from tether.manager.inject import (
    ANNOTATION,
    SIDECAR_NAME,
    AgentInjector,
    InjectionError,
    SidecarConfig,
    UnknownWorkloadError,
    inject,
    manager_address,
    sidecar_container,
    uninject,
)

CONFIG = SidecarConfig(image="tether-agent:test", manager=manager_address("tether", "cluster.local", 8081))


def deployment(name: str = "web", namespace: str = "default") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": f"{name}:1", "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


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
    container = sidecar_container(("StatefulSet", "db"), CONFIG)
    model = kubernetes.client.V1Container.from_dict(container)
    assert model.name == SIDECAR_NAME and model.env[2].value_from.field_ref.field_path == "status.podIP"


def test_the_managers_injector_injects_once_and_explains(api):
    async def scenario() -> None:
        injector = AgentInjector(api, CONFIG, enabled=True)
        answers = await asyncio.gather(*(injector.explain_missing(("default", "web", "")) for _ in range(5)))
        assert len(set(answers)) == 1
        assert answers[0].startswith("injected the tether-agent sidecar into Deployment default/web")
        missing = await injector.explain_missing(("default", "nope", ""))
        assert missing == 'no Deployment, StatefulSet or ReplicaSet named "nope" in namespace "default"'
        later = AgentInjector(api, CONFIG, enabled=True)
        again = await later.explain_missing(("default", "web", "Deployment"))
        assert "has the tether-agent sidecar, but no agent of it has arrived" in again
        off = AgentInjector(api, CONFIG, enabled=False)
        assert "agent injection is off" in await off.explain_missing(("default", "echo", ""))

    asyncio.run(scenario())
    assert [c["name"] for c in containers(read(api))] == ["web", SIDECAR_NAME]
    assert [c["name"] for c in containers(read(api, "echo"))] == ["echo"]
