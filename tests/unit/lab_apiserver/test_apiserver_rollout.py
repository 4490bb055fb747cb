"""A Deployment's status from its pods (pure), and the store keeping it up to date as pods come and go."""

import copy

from apiserver_support import deployment, pod

from tether.lab.apiserver.rollout import deployment_status, max_unavailable, selected_pods

NOW = "2026-01-01T00:00:00Z"


def _deployment(replicas=2, image="web:1", generation=3):
    d = deployment("web", "web", "web", container="web", image=image)
    d["metadata"].update(namespace="default", generation=generation)
    d["spec"]["replicas"] = replicas
    return d


def _pod(name, image="web:1", ready=True, namespace="default", labels=None):
    p = pod(name, labels=labels or {"app": "web"})
    p["metadata"]["namespace"] = namespace
    p["spec"]["containers"] = [{"name": "web", "image": image}]
    p["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return p


def test_rolled_out_when_every_replica_is_updated_and_ready():
    status = deployment_status(_deployment(), [_pod("a"), _pod("b")], NOW)
    assert status["observedGeneration"] == 3
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == (
        2,
        2,
        2,
        2,
    )
    assert "unavailableReplicas" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"


def test_pods_of_an_old_template_or_not_ready_hold_the_rollout():
    status = deployment_status(_deployment(image="web:2"), [_pod("a"), _pod("b", image="web:2", ready=False)], NOW)
    assert status["updatedReplicas"] == 1 and status["readyReplicas"] == 1 and status["unavailableReplicas"] == 1
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Progressing"] == "ReplicaSetUpdated"
    none = deployment_status(_deployment(), [], NOW)
    assert "replicas" not in none and "updatedReplicas" not in none and none["unavailableReplicas"] == 2
    assert {c["type"]: c["status"] for c in none["conditions"]}["Available"] == "False"


def test_only_the_selected_pods_of_its_namespace_count():
    others = [_pod("x", namespace="other"), _pod("y", labels={"app": "db"})]
    going = _pod("z")
    going["metadata"]["deletionTimestamp"] = NOW
    assert [p["metadata"]["name"] for p in selected_pods(_deployment(), [_pod("a"), going, *others])] == ["a"]


def test_condition_times_stay_while_the_condition_holds():
    d = _deployment()
    d["status"] = deployment_status(d, [_pod("a"), _pod("b")], NOW)
    again = deployment_status(d, [_pod("a"), _pod("b")], "2026-02-02T00:00:00Z")
    assert again == d["status"]


def test_max_unavailable():
    d = _deployment()
    assert max_unavailable(d, 4) == 1  # 25% by default
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}
    assert max_unavailable(d, 4) == 2
    d["spec"]["strategy"] = {"type": "Recreate"}
    assert max_unavailable(d, 4) == 4


def test_store_follows_pods_and_generation(apps, v1, ns):
    apps.create_namespaced_deployment(ns, _deployment(replicas=1) | {"metadata": {"name": "web"}})
    assert apps.read_namespaced_deployment("web", ns).status.unavailable_replicas == 1
    v1.create_namespaced_pod(
        ns, copy.deepcopy(_pod("web-a")) | {"metadata": {"name": "web-a", "labels": {"app": "web"}}}
    )
    status = apps.read_namespaced_deployment("web", ns).status
    assert (status.updated_replicas, status.available_replicas, status.observed_generation) == (1, 1, 1)
    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}
    )
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.generation == 2 and after.status.observed_generation == 2
    assert after.status.updated_replicas is None  # the pod still runs web:1
    v1.delete_namespaced_pod("web-a", ns)
    assert apps.read_namespaced_deployment("web", ns).status.replicas is None


def test_a_controller_that_writes_the_status_owns_it(apps, v1, ns):
    """The lab's controller writes Deployments' status: the store must not overwrite it from the pods (the
    two would answer each other's writes forever)."""
    apps.create_namespaced_deployment(ns, _deployment(replicas=1) | {"metadata": {"name": "web"}})
    body = apps.read_namespaced_deployment("web", ns).to_dict()
    body["status"] = {"observedGeneration": 1, "replicas": 7}
    apps.replace_namespaced_deployment_status("web", ns, body)
    v1.create_namespaced_pod(
        ns, copy.deepcopy(_pod("web-a")) | {"metadata": {"name": "web-a", "labels": {"app": "web"}}}
    )
    assert apps.read_namespaced_deployment("web", ns).status.replicas == 7
    # A new Deployment of the same name starts out derived again.
    apps.delete_namespaced_deployment("web", ns)
    apps.create_namespaced_deployment(ns, _deployment(replicas=1) | {"metadata": {"name": "web"}})
    assert apps.read_namespaced_deployment("web", ns).status.replicas == 1
