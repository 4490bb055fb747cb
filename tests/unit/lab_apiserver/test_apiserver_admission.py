"""Admission: per-kind defaults and validation, refused as 422 Invalid the way kube-apiserver words it."""

import pytest
from apiserver_support import deployment, http
from kubernetes.client import ApiException


def test_pod_without_containers_is_invalid(server, v1, ns):
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": "empty"}, "spec": {}})
    assert code == 422
    assert body["message"] == 'Pod "empty" is invalid: spec.containers: Required value'
    assert not v1.list_namespaced_pod(ns).items


def test_objects_the_client_could_not_read_are_refused(server, v1, ns):
    # A container without a name would make V1Container fail in every later list; refuse it up front.
    pod_body = {"metadata": {"name": "bad"}, "spec": {"containers": [{"image": "x"}]}}
    code, body = http(server, "POST", f"/api/v1/namespaces/{ns}/pods", pod_body)
    assert code == 422
    assert body["message"].startswith('Pod "bad" is invalid: V1Container.name')
    assert v1.list_namespaced_pod(ns).items == []


def test_deployment_selector_must_match_template(apps, ns):
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(ns, deployment("d", "a", "b", container="c", image="i"))
    assert exc.value.status == 422
