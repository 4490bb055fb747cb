"""The traffic-manager's Helm chart (packaging/helm/tether-manager), linted and rendered by real Helm
(helm-python-sdk), every object checked against the Kubernetes schemas of two versions, and its values kept in
step with what the manager reads (manager/config.py)."""

from __future__ import annotations

import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tether.helper.cluster.manager_dial import GRPC_PORT_NAME, MANAGER_SERVICE
from tether.helper.user.release.chart import CHART_DIR, semver_of
from tether.manager.api.sidecar import AGENT_TOKEN_AUDIENCE, DEFAULT_AGENT_IMAGE, DEFAULT_MANAGER_PORT
from tether.manager.api.version import __version__
from tether.manager.config import (
    HELM_KEYS,
    TEST_HOOK_KEYS,
    VALUES_YAML_KEY,
    ManagerConfig,
    PodCIDRStrategy,
    load_config,
)

KUBE_VERSIONS = ("1.28.0", "1.37.0")
# The chart's values that say how the manager runs rather than what it does (not manager/config.py keys).
RUNTIME_VALUES = {
    "image", "agent", "logLevel", "logFormat", "env", "resources", "podSecurityContext", "securityContext",
    "readinessProbe", "livenessProbe", "podAnnotations", "podLabels", "nodeSelector", "tolerations", "affinity",
    "priorityClassName",
}  # fmt: skip

NON_DEFAULT = {
    "client": {
        "routing": {
            "alsoProxySubnets": ["192.168.7.0/24"],
            "neverProxySubnets": ["10.1.2.0/24"],
            "allowConflictingSubnets": ["10.96.0.0/16"],
        },
        "dns": {"includeSuffixes": [".corp.example"], "excludeSuffixes": [".com"]},
    },
    "podCIDRStrategy": "environment",
    "podCIDRs": ["10.244.0.0/16"],
    "serviceCIDR": "10.96.0.0/12",
    "clusterDomain": "cluster.example",
    "tunnelMuxPort": 0,
    "tunnel": {"allowDestinations": ["169.254.169.254/32"]},
    "limits": {"flowsPerSession": 100, "sessionsPerAddress": 3, "udpIdleTimeoutMax": 30},
    "image": {"repository": "registry.example/tether/manager", "tag": "9.9.9", "pullPolicy": "Always",
              "pullSecrets": ["regcred"]},
    "agent": {"tokenAudience": "other-audience"},
    "env": {"EXTRA": 5},
}  # fmt: skip


def render(values: dict | None = None, namespace: str = "tether") -> dict[tuple[str, str], dict]:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values, name="tether-manager", namespace=namespace)
    objects = {}
    for text in manifests.values():
        for obj in yaml.safe_load_all(text):
            if obj:
                objects[obj["kind"], obj["metadata"]["name"]] = obj
    return objects


@pytest.fixture(scope="module")
def default() -> dict[tuple[str, str], dict]:
    return render()


@pytest.fixture(scope="module")
def custom() -> dict[tuple[str, str], dict]:
    return render(NON_DEFAULT, namespace="tools")


def rules(obj: dict) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [
        (r["apiGroups"][0], r["resources"][0], tuple(r["verbs"]), tuple(r.get("resourceNames", ())))
        for r in obj["rules"]
    ]


def container(objects: dict) -> dict:
    [only] = objects["Deployment", "tether-manager"]["spec"]["template"]["spec"]["containers"]
    return only


def env_of(objects: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def test_chart_version_is_tethers_version_as_semver():
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert meta["version"] == semver_of(__version__)
    assert meta["appVersion"] == __version__


@pytest.mark.parametrize(
    ("pep440", "semver"),
    [
        ("0.1.0", "0.1.0"),
        ("1.2", "1.2.0"),
        ("1.2rc1", "1.2.0-rc.1"),
        ("0.1.0.dev3+g1a2b3c", "0.1.0-dev.3+g1a2b3c"),
        ("2.0.0.post1", "2.0.0-post.1"),
        ("0.0.0+source", "0.0.0+source"),
    ],
)
def test_semver_of(pep440, semver):
    assert semver_of(pep440) == semver


def test_semver_of_refuses_what_it_cannot_map():
    with pytest.raises(ValueError, match=re.escape('"1.2.3.4"')):
        semver_of("1.2.3.4")
    with pytest.raises(ValueError, match='"banana"'):
        semver_of("banana")


def test_lint_is_clean():
    report = helm.lint(CHART_DIR, strict=True)
    assert report["errors"] == []
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


def test_default_objects(default):
    assert set(default) == {
        ("ConfigMap", "tether-manager"),
        ("Deployment", "tether-manager"),
        ("Service", "tether-manager"),
        ("ServiceAccount", "tether-manager"),
        ("Role", "tether-manager"),
        ("RoleBinding", "tether-manager"),
        ("ClusterRole", "tether-manager-tether"),
        ("ClusterRoleBinding", "tether-manager-tether"),
    }
    namespaced = [obj for (kind, _), obj in default.items() if not kind.startswith("Cluster")]
    assert {obj["metadata"]["namespace"] for obj in namespaced} == {"tether"}


def test_default_rbac_is_exactly_what_the_manager_calls(default):
    assert rules(default["Role", "tether-manager"]) == [
        ("", "configmaps", ("get",), ("tether-manager",)),
        ("", "services", ("create",), ()),
        ("", "services", ("delete",), ("tether-service-cidr-probe",)),
    ]
    assert rules(default["ClusterRole", "tether-manager-tether"]) == [
        ("", "nodes", ("list", "watch"), ()),
        ("", "pods", ("list", "watch"), ()),
        ("", "pods", ("get",), ()),
        ("apps", "replicasets", ("get",), ()),
        ("", "services", ("list",), ()),
        ("authentication.k8s.io", "tokenreviews", ("create",), ()),
    ]
    subject = {"kind": "ServiceAccount", "name": "tether-manager", "namespace": "tether"}
    assert default["RoleBinding", "tether-manager"]["subjects"] == [subject]
    assert default["ClusterRoleBinding", "tether-manager-tether"]["subjects"] == [subject]
    assert default["ClusterRoleBinding", "tether-manager-tether"]["roleRef"]["name"] == "tether-manager-tether"


def test_rbac_follows_the_settings(custom):
    # serviceCIDR set: no probe Service, no ClusterIP guess; environment strategy: no nodes or pods watched.
    assert rules(custom["Role", "tether-manager"]) == [("", "configmaps", ("get",), ("tether-manager",))]
    assert rules(custom["ClusterRole", "tether-manager-tools"]) == [
        ("", "pods", ("get",), ()),
        ("apps", "replicasets", ("get",), ()),
        ("authentication.k8s.io", "tokenreviews", ("create",), ()),
    ]


@pytest.mark.parametrize(("strategy", "nodes", "pods"), [("nodePodCIDRs", True, False), ("coverPodIPs", False, True)])
def test_discovery_rights_follow_the_strategy(strategy, nodes, pods):
    objects = render({"podCIDRStrategy": strategy})
    watched = {r[1] for r in rules(objects["ClusterRole", "tether-manager-tether"]) if "watch" in r[2]}
    assert watched == {name for name, wanted in (("nodes", nodes), ("pods", pods)) if wanted}


def test_default_configmap_gives_the_managers_defaults(default):
    data = default["ConfigMap", "tether-manager"]["data"]
    assert set(data) == {VALUES_YAML_KEY}
    config = load_config({}, data)
    assert config == ManagerConfig()
    chart_sources = {source for key, source in config.sources.items() if key not in TEST_HOOK_KEYS}
    assert chart_sources == {"ConfigMap tether-manager key values.yaml"}


def test_non_default_settings_reach_the_manager(custom):
    config = load_config({}, custom["ConfigMap", "tether-manager"]["data"])
    assert [str(n) for n in config.also_proxy_subnets] == ["192.168.7.0/24"]
    assert [str(n) for n in config.never_proxy_subnets] == ["10.1.2.0/24"]
    assert [str(n) for n in config.allow_conflicting_subnets] == ["10.96.0.0/16"]
    assert config.dns_include_suffixes == (".corp.example",)
    assert config.dns_exclude_suffixes == (".com",)
    assert config.pod_cidr_strategy is PodCIDRStrategy.ENVIRONMENT
    assert [str(n) for n in config.pod_cidrs] == ["10.244.0.0/16"]
    assert str(config.service_cidr) == "10.96.0.0/12"
    assert config.cluster_domain == "cluster.example"
    assert config.tunnel_mux_port == 0
    assert [str(n) for n in config.tunnel_allow_destinations] == ["169.254.169.254/32"]
    assert (config.flows_per_session, config.sessions_per_address, config.max_udp_idle_timeout) == (100, 3, 30)


def test_default_deployment(default):
    spec = default["Deployment", "tether-manager"]["spec"]
    c = container(default)
    assert c["name"] == "tether-manager"
    assert c["image"] == DEFAULT_AGENT_IMAGE == f"tether-manager:{__version__}"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {GRPC_PORT_NAME: DEFAULT_MANAGER_PORT, "mux": 8082}
    # the client API listens on the pod's loopback: probes go to the agent API on the pod IP
    assert c["readinessProbe"]["tcpSocket"] == {"port": GRPC_PORT_NAME}
    assert c["livenessProbe"]["tcpSocket"] == {"port": GRPC_PORT_NAME}
    assert c["resources"]["limits"]["memory"] == "1Gi"
    env = env_of(default)
    assert env["AGENT_IMAGE"] == DEFAULT_AGENT_IMAGE
    assert env["AGENT_TOKEN_AUDIENCE"] == AGENT_TOKEN_AUDIENCE
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MANAGER_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert spec["template"]["spec"]["serviceAccountName"] == "tether-manager"
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]


def test_non_default_deployment(custom, default):
    c = container(custom)
    assert c["image"] == "registry.example/tether/manager:9.9.9"
    assert c["imagePullPolicy"] == "Always"
    assert custom["Deployment", "tether-manager"]["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    assert [p["name"] for p in c["ports"]] == ["grpc"]  # tunnelMuxPort 0: no mux
    env = env_of(custom)
    assert env["AGENT_IMAGE"] == "registry.example/tether/manager:9.9.9"
    assert env["AGENT_TOKEN_AUDIENCE"] == "other-audience"
    assert env["EXTRA"] == "5"
    annotation = "checksum/config"
    templates = [o["Deployment", "tether-manager"]["spec"]["template"]["metadata"] for o in (custom, default)]
    assert templates[0]["annotations"][annotation] != templates[1]["annotations"][annotation]


def test_service_is_where_clients_and_agents_look(default, custom):
    svc = default["Service", MANAGER_SERVICE]["spec"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["ports"]] == [
        (GRPC_PORT_NAME, DEFAULT_MANAGER_PORT, DEFAULT_MANAGER_PORT),
        ("mux", 8082, 8082),
    ]
    pod_labels = default["Deployment", "tether-manager"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items()
    assert [p["name"] for p in custom["Service", MANAGER_SERVICE]["spec"]["ports"]] == [GRPC_PORT_NAME]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(default, custom, version):
    for objects in (default, custom):
        for obj in objects.values():
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_refuses_unknown_and_mistyped_values():
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmValuesError, match="routng"):
            chart.validate_schema({"client": {"routng": {}}})
        with pytest.raises(helm.HelmValuesError, match="tunnelMuxPort"):
            chart.validate_schema({"tunnelMuxPort": "x"})
        with pytest.raises(helm.HelmValuesError, match="podCIDRStrategy"):
            chart.validate_schema({"podCIDRStrategy": "guess"})


def leaves(values: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in values.items():
        path = prefix + key
        found |= leaves(value, path + ".") if isinstance(value, dict) and value else {path}
    return found


def test_chart_settings_are_exactly_the_managers_keys():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    settings = {k: v for k, v in values.items() if k not in RUNTIME_VALUES}
    assert leaves(settings) == set(HELM_KEYS) - set(TEST_HOOK_KEYS)  # test hooks are not chart values
    assert values["agent"]["tokenAudience"] == AGENT_TOKEN_AUDIENCE
