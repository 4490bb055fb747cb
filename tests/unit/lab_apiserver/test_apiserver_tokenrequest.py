"""TokenRequest in the emulator: the kubelet's way to a pod-bound token, which TokenReview then accepts."""

import json

import kubernetes
import pytest
from apiserver_support import pod
from test_apiserver_tokens import AUDIENCE, review


def _request(name, uid=None):
    ref = {"kind": "Pod", "apiVersion": "v1", "name": name, **({"uid": uid} if uid else {})}
    return {"spec": {"audiences": [AUDIENCE], "expirationSeconds": 600, "boundObjectRef": ref}}


def test_a_requested_token_is_bound_to_the_pod_and_reviews_as_it(server, v1, ns):
    created = v1.create_namespaced_pod(ns, pod("web-0"))
    answer = v1.create_namespaced_service_account_token("default", ns, _request("web-0", created.metadata.uid))
    code, reviewed = review(server, answer.status.token)
    assert code == 201 and reviewed["status"]["authenticated"] is True
    assert reviewed["status"]["user"]["extra"]["authentication.kubernetes.io/pod-uid"] == [created.metadata.uid]
    v1.delete_namespaced_pod("web-0", ns)
    v1.create_namespaced_pod(ns, pod("web-0"))  # same name, new uid: the old token no longer proves it
    assert "replaced" in review(server, answer.status.token)[1]["status"]["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_request("nosuchpod"), 404, 'pods "nosuchpod" not found'),
        ({"spec": {"audiences": [AUDIENCE]}}, 400, "boundObjectRef must name a Pod"),
        (_request("web-0", "not-its-uid"), 409, "does not match"),
    ],
)
def test_bad_token_requests_are_refused_naming_why(server, v1, ns, body, status, words):
    v1.create_namespaced_pod(ns, pod("web-0"))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        v1.create_namespaced_service_account_token("default", ns, body)
    assert caught.value.status == status and words in json.loads(caught.value.body)["message"]
