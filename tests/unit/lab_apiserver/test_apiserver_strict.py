"""Strict field validation: unknown fields named by their path, patch directives left alone, and the
refusal a request with fieldValidation=Strict gets."""

import pytest
from apiserver_support import http
from kmock import KubernetesError

from tether.lab.apiserver.kinds import KINDS_BY_TYPE
from tether.lab.apiserver.strict import check_strict, unknown_fields

CONFIGMAP = KINDS_BY_TYPE["v1", "ConfigMap"]


def test_unknown_fields_are_named_by_path():
    body = {
        "metadata": {"name": "x", "labels": {"any": "label"}, "bogus": 1},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "a", "imag": "x"}], "$setElementOrder/containers": []}},
        },
    }
    assert unknown_fields("V1Deployment", body) == ["metadata.bogus", "spec.template.spec.containers[0].imag"]
    assert unknown_fields("V1Service", {"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}) == []
    assert unknown_fields("CoreV1Event", {"involvedObject": {"name": "p"}, "x": 1}) == ["x"]


def test_only_strict_refuses():
    body = {"metadata": {"name": "c"}, "dta": {}}
    with pytest.raises(KubernetesError, match='unknown field "dta"'):
        check_strict(CONFIGMAP, body, "Strict")
    check_strict(CONFIGMAP, body, "Ignore")
    check_strict(CONFIGMAP, body, None)
    with pytest.raises(KubernetesError, match='"Loose"'):
        check_strict(CONFIGMAP, body, "Loose")


def test_strict_create_is_refused_and_nothing_stored(server, v1, ns):
    code, body = http(
        server,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict",
        {"metadata": {"name": "c"}, "dta": {}},
    )
    assert code == 400 and body["message"] == 'strict decoding error: unknown field "dta"'
    assert v1.list_namespaced_config_map(ns).items == []
