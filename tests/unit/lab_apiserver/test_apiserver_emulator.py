"""The HTTP face: requests routed to the store, refused with the right status, and the in-process object API."""

from apiserver_support import http, pod


def test_malformed_requests(server, ns):
    assert http(server, "GET", "/api/v1/widgets")[0] == 404
    assert http(server, "POST", "/api/v1/pods", {"metadata": {"name": "x"}})[0] == 405
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}})
    assert code == 422 and "metadata.name" in body["message"]
    code, body = http(
        server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x", "namespace": "other"}}
    )
    assert code == 400 and "does not match the namespace" in body["message"]
    code, body = http(
        server, "POST", f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": "s"}, "spec": {"type": "Odd"}}
    )
    assert code == 422 and 'spec.type: Unsupported value: "Odd"' in body["message"]
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "y"}, "spec": 5})
    assert code == 422 and "spec: Invalid value: 5: must be an object" in body["message"]
    code, body = http(server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {}, "application/apply-patch+yaml")
    assert code == 404  # nothing stored by the refused requests
    http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x"}})
    code, body = http(server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {}, "application/apply-patch+yaml")
    assert code == 415
    code, body = http(
        server, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", {"data": {"a": "b"}}, "application/merge-patch+json"
    )
    assert code == 200 and body["data"] == {"a": "b"}


def test_programmatic_object_api(server, v1, ns):
    # What the lab does before clients connect: objects straight into the store, on the server's loop.
    created = server.call(
        server.emulator.create_object,
        {"apiVersion": "v1", "kind": "Pod", **pod("direct")} | {"metadata": {"name": "direct", "namespace": ns}},
    )
    assert created["metadata"]["uid"] and created["status"]["phase"] == "Running"
    assert v1.read_namespaced_pod("direct", ns).metadata.uid == created["metadata"]["uid"]
    listed = server.call(server.emulator.list_objects, "v1", "Pod", ns)
    assert [p["metadata"]["name"] for p in listed] == ["direct"]
    server.call(server.emulator.delete_object, "v1", "Pod", "direct", ns)
    assert server.call(server.emulator.get_object, "v1", "Pod", "direct", ns) is None


def test_delete_answers_with_the_object_or_a_status_by_kind(server, ns):
    code, created = http(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}})
    assert code == 201
    code, body = http(server, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/c")
    assert code == 200
    assert body == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "details": {"name": "c", "kind": "configmaps", "uid": created["metadata"]["uid"]},
    }
    pod_body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert http(server, "POST", f"/api/v1/namespaces/{ns}/pods", pod_body)[0] == 201
    code, body = http(server, "DELETE", f"/api/v1/namespaces/{ns}/pods/p")
    assert code == 200 and body["kind"] == "Pod" and body["metadata"]["name"] == "p"
    # Subresources and watches of one object take only the methods that make sense for them.
    assert http(server, "DELETE", f"/api/v1/namespaces/{ns}/pods/p/status")[0] == 405
    assert http(server, "POST", f"/api/v1/namespaces/{ns}/pods/p/portforward")[0] == 405


def test_trailing_slashes_and_discovery_reach_kmock(server):
    assert http(server, "GET", "/version/")[1]["gitVersion"].startswith("v1.")
    assert http(server, "GET", "/api/v1")[1]["groupVersion"] == "v1"
    assert http(server, "GET", "/apis/nothing.example/v1")[0] == 404
