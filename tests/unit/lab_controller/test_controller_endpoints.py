"""Endpoints and kube-proxy entries from Services and pods."""

from tether.lab.controller.endpoints import endpoints_object, proxy_entries


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
