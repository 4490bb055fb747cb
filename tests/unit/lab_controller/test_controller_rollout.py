"""The deployment controller's decisions: pods to make and remove, rolling updates, new pods, status."""

from tether.lab.controller.rollout import HASH_LABEL, new_pod, orphans, pick_node, plan, template_hash

TEMPLATE = {"metadata": {"labels": {"app": "demo"}}, "spec": {"containers": [{"name": "demo", "image": "x:1"}]}}


def deployment(replicas=1, template=TEMPLATE):
    return {
        "metadata": {"name": "demo", "namespace": "ns", "uid": "d-uid", "generation": 3},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "demo"}}, "template": template},
    }


def pod(name, template=TEMPLATE, ready=True, owner="d-uid", created="2024-01-01T00:00:00Z"):
    created_pod = new_pod(deployment(template=template), name, "node-1")
    created_pod["metadata"]["ownerReferences"][0]["uid"] = owner
    created_pod["metadata"]["creationTimestamp"] = created
    created_pod["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return created_pod


def test_scaling_up_creates_the_missing_pods_and_down_removes_not_ready_first():
    assert plan(deployment(replicas=2), [pod("a")]).create == 1
    newest = "2024-01-02T00:00:00Z"
    decision = plan(deployment(replicas=1), [pod("a"), pod("b", ready=False), pod("c", created=newest)])
    assert decision.create == 0 and decision.delete == ("b", "c")


def test_pods_of_other_owners_are_not_counted():
    other = pod("other", owner="someone-else")
    other["metadata"]["ownerReferences"][0]["name"] = "another"
    decision = plan(deployment(replicas=1), [other])
    assert decision.create == 1 and decision.delete == ()


def test_a_changed_template_makes_new_pods_and_keeps_the_old_until_they_are_ready():
    changed = {**TEMPLATE, "spec": {"containers": [{"name": "demo", "image": "x:2"}]}}
    old = pod("old")
    first = plan(deployment(template=changed), [old])
    assert first.create == 1 and first.delete == ()
    starting = plan(deployment(template=changed), [old, pod("new", template=changed, ready=False)])
    assert starting.create == 0 and starting.delete == ()
    assert starting.status["updatedReplicas"] == 1 and starting.status["replicas"] == 2
    done = plan(deployment(template=changed), [old, pod("new", template=changed)])
    assert done.delete == ("old",)


def test_new_pods_carry_the_template_hash_owner_and_node():
    created = new_pod(deployment(), "demo-abc-xyz", "node-2")
    assert created["metadata"]["labels"] == {"app": "demo", HASH_LABEL: template_hash(TEMPLATE)}
    [owner] = created["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Deployment", "demo", "d-uid", True)
    assert created["spec"]["nodeName"] == "node-2" and created["spec"]["containers"] == TEMPLATE["spec"]["containers"]
    assert template_hash(TEMPLATE) != template_hash({**TEMPLATE, "metadata": {"labels": {"app": "other"}}})


def test_a_seeded_pod_without_a_hash_is_adopted_by_name_and_current_while_its_containers_match():
    seeded = pod("demo-0", owner="uid-before-the-api-server-gave-one")
    del seeded["metadata"]["labels"][HASH_LABEL]
    assert plan(deployment(), [seeded]).create == 0
    changed = {**TEMPLATE, "spec": {"containers": [{"name": "demo", "image": "x:2"}]}}
    assert plan(deployment(template=changed), [seeded]).create == 1


def test_status_counts_ready_and_updated_pods():
    status = plan(deployment(replicas=2), [pod("a"), pod("b", ready=False)]).status
    assert (status["replicas"], status["readyReplicas"], status["unavailableReplicas"]) == (2, 1, 1)
    assert status["observedGeneration"] == 3
    assert [c["status"] for c in status["conditions"]] == ["False", "True"]


def test_pods_whose_deployment_is_gone_are_orphans():
    assert orphans([deployment()], [pod("a")]) == []
    lost = pod("b")
    lost["metadata"]["ownerReferences"][0].update(name="gone", uid="gone-uid")
    assert orphans([deployment()], [pod("a"), lost]) == [lost]


def test_the_scheduler_picks_the_least_loaded_node():
    pods = [{"spec": {"nodeName": "n1"}}, {"spec": {"nodeName": "n1"}}, {"spec": {"nodeName": "n2"}}]
    assert pick_node(["n1", "n2"], pods) == "n2" and pick_node(["n1", "n2"], []) == "n1"
