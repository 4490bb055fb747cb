"""Listing the workloads a --proxy-via can name: the filter, and the real client against the lab's API server."""

import socket
from types import SimpleNamespace

import kubernetes.client as k8s
import pytest
import yaml

from tests.doubles.fake_workloads import FakeWorkloadSource
from tests.doubles.kubeobjects import deployment as kube_deployment
from tether.gui.workloads import KubeWorkloadSource, WorkloadError, workload_names
from tether.lab.apiserver.server import LabApiServerThread


def obj(namespace, name, owner_kind=""):
    """Stands in for a client model: the filter reads only metadata (the strict models want full specs)."""
    owners = [k8s.V1OwnerReference(api_version="apps/v1", kind=owner_kind, name="x", uid="1")] if owner_kind else None
    return SimpleNamespace(metadata=k8s.V1ObjectMeta(namespace=namespace, name=name, owner_references=owners))


def test_replica_sets_of_deployments_are_left_out_and_the_rest_sorted():
    deployments = [obj("shop", "web"), obj("default", "echo")]
    stateful = [obj("db", "postgres")]
    replica_sets = [obj("shop", "web-5d8f", "Deployment"), obj("legacy", "batch")]
    assert workload_names(deployments, stateful, replica_sets) == [
        "db/postgres",
        "default/echo",
        "legacy/batch",
        "shop/web",
    ]


def deployment(name, namespace="default"):
    return kube_deployment(name, namespace, containers=[{"name": "c", "image": "x"}])


@pytest.fixture(scope="module")
def lab():
    seed = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, deployment("echo")]
    seed.append(deployment("web", "shop"))
    with LabApiServerThread(seed=seed) as server:
        yield server


def test_lists_deployments_from_the_users_kubeconfig(lab, tmp_path):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(lab.kubeconfig()))
    assert KubeWorkloadSource(kubeconfig=path).list_workloads("tether-lab") == ["default/echo", "shop/web"]
    # The same through $KUBECONFIG, as kubectl would find it.
    source = KubeWorkloadSource(environ={"KUBECONFIG": str(path)})
    assert source.list_workloads("tether-lab") == ["default/echo", "shop/web"]


def test_lists_deployments_from_in_memory_kubeconfig_text(lab, tmp_path):
    text = yaml.safe_dump(lab.kubeconfig(name="added"))
    source = KubeWorkloadSource(
        kubeconfig_text_for=lambda context: text if context == "added" else None,
        environ={"KUBECONFIG": str(tmp_path / "absent")},
    )
    assert source.list_workloads("added") == ["default/echo", "shop/web"]


def test_errors_name_the_context(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "gone", "user": {"token": "do-not-show"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    source = KubeWorkloadSource(kubeconfig=path, timeout=2)
    with pytest.raises(WorkloadError) as caught:
        source.list_workloads("gone")
    assert str(caught.value).startswith('cannot list the workloads of "gone"')
    assert "do-not-show" not in str(caught.value)
    with pytest.raises(WorkloadError, match='context "other" not found'):
        source.list_workloads("other")


def test_fake_source_records_calls_and_fails_on_request():
    fake = FakeWorkloadSource({"lab": ["default/web", "default/echo"]})
    assert fake.list_workloads("lab") == ["default/echo", "default/web"]
    assert fake.calls == [("lab", True)]
    with pytest.raises(WorkloadError, match="forbidden"):
        FakeWorkloadSource(error="forbidden").list_workloads("lab")
