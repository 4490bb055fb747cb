"""`tether manager uninstall` takes each injected agent out and gives Services that an intercept pointed at
the agent their original targetPort back (Services of other workloads and untouched ones stay as they are)."""

from __future__ import annotations

from tests.doubles.fake_release_kube import FakeReleaseKube
from tether.helper.user.release.ops import remove_agents
from tether.manager.api import sidecar
from tether.manager.api.sidecar import SidecarConfig


def _deployment(name: str, injected: bool) -> dict:
    annotations = {sidecar.ANNOTATION: sidecar.annotation_value(SidecarConfig())} if injected else {}
    template = {"metadata": {"labels": {"app": name}, "annotations": annotations}, "spec": {"containers": []}}
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "default"}, "spec": {"template": template}}


def _service(name: str, target: int, original: str | None) -> dict:
    annotations = {sidecar.INTERCEPT_ANNOTATION: original} if original else {}
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": target}]},
    }


def test_uninstall_gives_intercepted_services_their_target_port_back() -> None:
    kube = FakeReleaseKube([
        _deployment("web", injected=True), _deployment("echo", injected=False),
        _service("web", 9900, '{"80": 8080}'), _service("echo", 9900, '{"80": 7}'), _service("plain", 80, None),
    ])  # fmt: skip
    said: list[str] = []
    assert remove_agents(kube, "tether", said.append) == ["Deployment default/web"]  # type: ignore[arg-type]
    services = [(p[2], p[3]["spec"]["ports"][0]["targetPort"]) for p in kube.patches if p[0] == "Service"]
    assert services == [("web", 8080)]  # echo has no agent of this manager; plain was never changed
    assert [p[0] for p in kube.patches] == ["Service", "Deployment"]  # the Service first, then the agent goes
    assert "gave Service default/web its targetPort back" in said
