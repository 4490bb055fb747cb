"""Refusals (pure): Status bodies and the 422 Invalid summary, worded as kube-apiserver words them."""

import json

from kmock import KubernetesError, KubernetesNotFoundError

from tether.lab.apiserver.errors import FieldError, brief, conflict, error_response, invalid, not_found
from tether.lab.apiserver.kinds import KINDS_BY_TYPE

POD, DEPLOYMENT = KINDS_BY_TYPE["v1", "Pod"], KINDS_BY_TYPE["apps/v1", "Deployment"]


def body_of(exc):
    response = error_response(exc)
    return response.status, json.loads(response.body)


def test_a_refusal_renders_as_a_status():
    status, body = body_of(not_found(DEPLOYMENT, "web"))
    assert status == 404
    assert body == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments "web" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
    }
    assert body_of(conflict(POD, "p"))[1]["details"] == {"name": "p", "kind": "pods"}  # the core group is left out


def test_anything_else_is_a_404_from_kmock_or_a_500():
    assert body_of(KubernetesNotFoundError("kmock's own words"))[1]["message"] == (
        "the server could not find the requested resource"
    )
    status, body = body_of(RuntimeError("boom"))
    assert status == 500 and body["reason"] == "InternalError"
    assert body["message"] == "Internal error occurred: RuntimeError('boom')"


def test_invalid_lists_several_causes_in_brackets():
    errors = [FieldError.required("spec.selector"), FieldError.invalid("spec.replicas", -1, "must be >= 0")]
    exc = invalid(DEPLOYMENT, "web", errors)
    assert isinstance(exc, KubernetesError) and exc.status == 422
    assert exc.message == (
        'Deployment "web" is invalid: [spec.selector: Required value, spec.replicas: Invalid value: -1: must be >= 0]'
    )
    assert exc.details["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"},
        {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be >= 0", "field": "spec.replicas"},
    ]


def test_long_values_are_quoted_briefly():
    assert brief({"a": 1}) == {"a": 1}
    long = brief(["x" * 100])
    assert len(long) == 80 and long.endswith("...")
