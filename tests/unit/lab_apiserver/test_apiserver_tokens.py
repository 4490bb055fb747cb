"""TokenReview in the emulator: tokens bound to pods, answered as kube-apiserver answers for projected tokens."""

import json

from apiserver_support import CIDR, http, pod

from tether.lab.apiserver.server import LabApiServerThread

AUDIENCE = "tether-manager"


def review(server, token, audiences=(AUDIENCE,)):
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    if audiences:
        body["spec"]["audiences"] = list(audiences)
    return http(server, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)


def test_a_token_bound_to_a_pod_reviews_as_its_service_account_with_the_pod(server, v1, ns):
    created = v1.create_namespaced_pod(ns, pod("web-0", ip="10.244.1.11"))
    token = server.call(server.emulator.issue_token, ns, "web-0", [AUDIENCE])
    code, answer = review(server, token)
    assert code == 201 and answer["kind"] == "TokenReview"
    status = answer["status"]
    assert status["authenticated"] is True and status["audiences"] == [AUDIENCE]
    assert status["user"]["username"] == f"system:serviceaccount:{ns}:default"
    assert f"system:serviceaccounts:{ns}" in status["user"]["groups"]
    assert status["user"]["extra"] == {
        "authentication.kubernetes.io/pod-name": ["web-0"],
        "authentication.kubernetes.io/pod-uid": [created.metadata.uid],
    }


def test_unknown_tokens_other_audiences_and_replaced_pods_are_not_authenticated(server, v1, ns):
    v1.create_namespaced_pod(ns, pod("web-0"))
    token = server.call(server.emulator.issue_token, ns, "web-0", [AUDIENCE])
    for candidate, audiences, error in (
        ("forged", (AUDIENCE,), "invalid bearer token"),
        (token, ("https://kubernetes.default.svc.cluster.local",), "audiences is invalid"),
        (token, (), "audiences is invalid"),  # no audience: the API server's own
    ):
        code, answer = review(server, candidate, audiences)
        assert code == 201 and answer["status"]["authenticated"] is False
        assert error in answer["status"]["error"]
    v1.delete_namespaced_pod("web-0", ns)
    v1.create_namespaced_pod(ns, pod("web-0"))
    code, answer = review(server, token)
    assert code == 201 and answer["status"] == {"authenticated": False, "user": {}, "error": answer["status"]["error"]}
    assert "was replaced" in answer["status"]["error"]


def test_a_bad_review_request_is_a_400_and_only_post_is_served(server):
    code, answer = http(server, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": 7}})
    assert code == 400 and "spec.token" in answer["message"]
    code, _ = http(server, "GET", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert code == 405


def test_tokens_from_a_file_bind_to_the_pod_they_first_find(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"token": "t0k3n", "namespace": "default", "pod": "web-0", "audiences": [AUDIENCE]}]))
    seed = [dict(pod("web-0"), apiVersion="v1", kind="Pod")]
    with LabApiServerThread(service_cidr=CIDR, seed=seed, token_file=path) as server:
        code, answer = review(server, "t0k3n")
        assert code == 201 and answer["status"]["authenticated"] is True
        assert answer["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["web-0"]
