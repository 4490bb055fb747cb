"""Endpoints, EndpointSlices, the writes that bring the stored ones up to date, and kube-proxy entries from
Services and pods."""

from tether.lab.controller.endpoints import (
    Changes,
    endpoint_slices,
    endpoints_changes,
    endpoints_object,
    proxy_entries,
    slice_changes,
)


def service(selector=None, target=8080, name="web", ns="default", cluster_ip="10.96.1.10"):
    spec = {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"}]}
    if selector:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def pod(name, ip, ready=True, labels=None, ns="default"):
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_ready_pods_are_addresses_and_the_others_not_ready_addresses():
    pods = [pod("a", "10.244.1.10"), pod("b", "10.244.2.10", ready=False), pod("c", "10.244.1.11", labels={"x": "y"})]
    eps = endpoints_object(service({"app": "web"}), pods)
    [subset] = eps["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.244.1.10"]
    assert [a["targetRef"]["name"] for a in subset["notReadyAddresses"]] == ["b"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_named_target_ports_resolve_per_pod_and_other_namespaces_are_ignored():
    pods = [pod("a", "10.244.1.10"), pod("d", "10.244.1.12", ns="other")]
    [subset] = endpoints_object(service({"app": "web"}, target="web"), pods)["subsets"]
    assert subset["ports"][0]["port"] == 8080 and [a["ip"] for a in subset["addresses"]] == ["10.244.1.10"]


def test_a_service_without_selector_gets_no_endpoints_from_the_controller():
    assert endpoints_object(service(), [pod("a", "10.244.1.10")]) is None


def test_proxy_entries_lead_to_ready_pods_only_and_kubernetes_to_the_api_server():
    pods = [pod("a", "10.244.1.10"), pod("b", "10.244.2.10", ready=False)]
    kube = service(name="kubernetes", cluster_ip="10.96.0.1")
    entries = proxy_entries([service({"app": "web"}), kube], pods)
    web, api = entries
    assert [(str(e.ip), e.port) for e in web.endpoints] == [("10.244.1.10", 8080)]
    assert (str(web.service.cluster_ip), web.port.port) == ("10.96.1.10", 80)
    assert [(str(e.ip), e.port) for e in api.endpoints] == [("172.30.0.1", 6443)]


# -- EndpointSlices --------------------------------------------------------------------------------


def owned_service(selector=None, target=8080, labels=None):
    svc = service(selector, target)
    svc["metadata"] |= {"uid": "svc-uid", "labels": labels or {}}
    return svc


def named_port_pod(name, ip, number, ready=True):
    found = pod(name, ip, ready)
    found["spec"]["containers"][0]["ports"][0]["containerPort"] = number
    return found


def test_a_slice_lists_every_selected_pod_with_its_conditions():
    pods = [pod("a", "10.244.1.10"), pod("b", "10.244.2.10", ready=False), pod("c", "10.244.1.11", labels={"x": "y"})]
    [found] = endpoint_slices(owned_service({"app": "web"}, labels={"tier": "front"}), pods)
    assert found["apiVersion"] == "discovery.k8s.io/v1" and found["addressType"] == "IPv4"
    assert found["metadata"]["labels"] == {
        "tier": "front",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert found["metadata"]["name"].startswith("web-") and found["metadata"]["namespace"] == "default"
    [owner] = found["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Service", "web", "svc-uid", True)
    assert found["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    a, b = found["endpoints"]
    assert a == {
        "addresses": ["10.244.1.10"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"},
        "nodeName": "n1",
    }
    assert (b["addresses"], b["conditions"]) == (
        ["10.244.2.10"],
        {"ready": False, "serving": False, "terminating": False},
    )


def test_terminating_and_finished_pods():
    leaving, done = pod("a", "10.244.1.10"), pod("b", "10.244.1.11")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    done["status"]["phase"] = "Succeeded"
    [found] = endpoint_slices(owned_service({"app": "web"}), [leaving, done])
    assert [e["conditions"] for e in found["endpoints"]] == [{"ready": False, "serving": True, "terminating": True}]
    published = owned_service({"app": "web"})
    published["spec"]["publishNotReadyAddresses"] = True
    [found] = endpoint_slices(published, [leaving, pod("c", "10.244.1.12", ready=False)])
    assert [e["conditions"]["ready"] for e in found["endpoints"]] == [True, True]


def test_pods_resolving_a_named_port_differently_get_one_slice_per_port_set():
    pods = [named_port_pod("a", "10.244.1.10", 8080), named_port_pod("b", "10.244.2.10", 9090)]
    pods.append(named_port_pod("c", "10.244.1.11", 8080))
    slices = endpoint_slices(owned_service({"app": "web"}, target="web"), pods)
    found = {s["ports"][0]["port"]: [e["targetRef"]["name"] for e in s["endpoints"]] for s in slices}
    assert found == {8080: ["a", "c"], 9090: ["b"]}
    assert len({s["metadata"]["name"] for s in slices}) == 2
    # a slice keeps its name while its pods change
    again = endpoint_slices(owned_service({"app": "web"}, target="web"), pods[:2])
    assert {s["metadata"]["name"] for s in again} == {s["metadata"]["name"] for s in slices}


def test_a_pod_without_the_named_port_is_listed_without_ports_and_no_pods_leave_a_placeholder():
    bare = pod("a", "10.244.1.10")
    bare["spec"]["containers"][0]["ports"] = []
    [found] = endpoint_slices(owned_service({"app": "web"}, target="web"), [bare])
    assert found["ports"] == [] and [e["addresses"] for e in found["endpoints"]] == [["10.244.1.10"]]
    [placeholder] = endpoint_slices(owned_service({"app": "web"}), [])
    assert placeholder["ports"] == [] and placeholder["endpoints"] == []


def test_a_service_without_selector_gets_no_slices_and_a_headless_one_is_labelled():
    assert endpoint_slices(service(), [pod("a", "10.244.1.10")]) is None
    headless = service({"app": "web"}, cluster_ip="None")
    [found] = endpoint_slices(headless, [pod("a", "10.244.1.10")])
    assert found["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert "ownerReferences" not in found["metadata"]  # a Service not yet stored has no uid to own it by


def stored(obj, version="7"):
    return obj | {"metadata": obj["metadata"] | {"resourceVersion": version}}


def test_slice_changes_create_replace_and_delete():
    web = owned_service({"app": "web"})
    [first] = endpoint_slices(web, [pod("a", "10.244.1.10")])
    assert slice_changes([web], [pod("a", "10.244.1.10")], []) == Changes(create=(first,))
    assert slice_changes([web], [pod("a", "10.244.1.10")], [stored(first)]) == Changes()

    changed = slice_changes([web], [pod("a", "10.244.1.10", ready=False)], [stored(first)])
    [replacement] = changed.replace
    assert replacement["metadata"]["resourceVersion"] == "7" and not changed.create and not changed.delete
    assert replacement["endpoints"][0]["conditions"]["ready"] is False

    moved = slice_changes(
        [owned_service({"app": "web"}, target="web")], [named_port_pod("a", "10.244.1.10", 9090)], [stored(first)]
    )
    assert [s["ports"][0]["port"] for s in moved.create] == [9090]
    assert moved.delete == (("default", first["metadata"]["name"]),)


def test_slices_of_a_deleted_service_go_and_others_slices_stay():
    [mine] = endpoint_slices(owned_service({"app": "web"}), [pod("a", "10.244.1.10")])
    foreign = {
        "metadata": {"name": "web-manual", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}}
    }
    assert slice_changes([], [], [stored(mine), foreign]).delete == (("default", mine["metadata"]["name"]),)
    # a Service that lost its selector keeps them, as with the endpointslice controller
    assert slice_changes([service()], [], [stored(mine)]) == Changes()


def test_endpoints_changes_create_replace_and_delete_those_of_deleted_services():
    web = service({"app": "web"})
    wanted = endpoints_object(web, [pod("a", "10.244.1.10")])
    assert endpoints_changes([web], [pod("a", "10.244.1.10")], []) == Changes(create=(wanted,))
    assert endpoints_changes([web], [pod("a", "10.244.1.10")], [stored(wanted)]) == Changes()
    [replacement] = endpoints_changes([web], [pod("a", "10.244.1.10", ready=False)], [stored(wanted)]).replace
    assert replacement["metadata"]["resourceVersion"] == "7" and "notReadyAddresses" in replacement["subsets"][0]
    outside = {"metadata": {"name": "outside", "namespace": "default"}, "subsets": []}
    kept = service(name="outside")  # no selector: its Endpoints are someone else's
    assert endpoints_changes([kept], [], [outside]) == Changes()
    assert endpoints_changes([], [], [stored(wanted), outside]).delete == (("default", "outside"), ("default", "web"))
