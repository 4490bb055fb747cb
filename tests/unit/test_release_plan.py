"""The release's pure planning (tether.helper.user.release.plan): manifests, the record, upgrade plans, merge
patches, and which injected agents belong to a manager."""

from __future__ import annotations

import json

import pytest

from tether.helper.user.release.plan import (
    ObjectRef,
    PlanError,
    Release,
    merge_patch,
    objects_from_manifests,
    plan_upgrade,
    record_configmap,
    release_from_configmap,
    serves_manager,
)
from tether.manager.api.sidecar import ANNOTATION, SidecarConfig, annotation_value, manager_address


def cm(name, data, ns="t"):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def test_manifests_in_install_order_and_checked():
    manifests = {
        "a.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: t}\n",
        "b.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s, namespace: t}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c}\n",
    }
    assert [o["kind"] for o in objects_from_manifests(manifests, "t")] == [
        "ServiceAccount",
        "ClusterRole",
        "Deployment",
    ]
    with pytest.raises(PlanError, match="not in namespace other"):
        objects_from_manifests(manifests, "other")
    with pytest.raises(PlanError, match="Secret"):
        objects_from_manifests({"x.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: t}\n"}, "t")


def test_refs():
    ref = ObjectRef("apps/v1", "Deployment", "tether-manager", "t")
    assert ref.path() == "/apis/apps/v1/namespaces/t/deployments/tether-manager"
    assert ref.resource == "deployments.apps"
    assert ObjectRef("v1", "Namespace", "t").path() == "/api/v1/namespaces/t"
    cluster = ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "c")
    assert cluster.path(named=False) == "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    assert str(cluster) == "ClusterRole c" and str(ref) == "Deployment t/tether-manager"


def test_record_round_trip():
    release = Release("t", 3, "0.1.0", "0.1.0", {"a": 1}, [cm("x", {"k": "v"})], "upgrading",
                      [ObjectRef("v1", "Service", "s", "t")])  # fmt: skip
    back = release_from_configmap(record_configmap(release))
    assert back == release
    assert back.objects == [ObjectRef("v1", "ConfigMap", "x", "t"), ObjectRef("v1", "Service", "s", "t")]
    with pytest.raises(PlanError, match="not a release record"):
        release_from_configmap(cm("tether-manager-release", {"release.json": "{"}))


def test_upgrade_plan():
    old = [cm("keep", {"a": "1"}), cm("same", {"a": "1"}), cm("gone", {})]
    new = [cm("keep", {"a": "2"}), cm("same", {"a": "1"}), cm("new", {})]
    plan = plan_upgrade(old, new)
    assert [o["metadata"]["name"] for o in plan.create] == ["new"]
    assert [(o["metadata"]["name"], p) for o, p in plan.patch] == [("keep", {"data": {"a": "2"}})]
    assert plan.delete == [ObjectRef("v1", "ConfigMap", "gone", "t")]


def test_merge_patch_removes_what_the_chart_stopped_setting():
    old = {"spec": {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}}
    new = {"spec": {"a": 1, "b": {"c": 2}, "l": [1], "e": "x"}}
    assert merge_patch(old, new) == {"spec": {"b": {"d": None}, "l": [1], "e": "x"}}
    assert merge_patch(new, new) == {}


def workload(manager: str | None):
    annotations = {ANNOTATION: annotation_value(SidecarConfig(manager=manager))} if manager else {}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def test_serves_manager():
    assert serves_manager(workload(manager_address("tether")), "tether")
    assert serves_manager(workload(manager_address("ops", "corp.example", 9000)), "ops")
    assert not serves_manager(workload(manager_address("tether")), "other")
    assert not serves_manager(workload(None), "tether")
    broken = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION: "{"}}}}}
    assert not serves_manager(broken, "tether")
    assert json.loads(annotation_value(SidecarConfig()))["manager"].startswith("tether-manager.tether.svc")
