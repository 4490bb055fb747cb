"""OpenAPI v3 as kubectl reads it: the index, and PATCH operations that name their kind and take fieldValidation."""

from tether.lab.apiserver.openapi import group_version_document, index, openapi_document


def _patch_operations(document):
    return {path: ops["patch"] for path, ops in document["paths"].items() if "patch" in ops}


def test_index_points_at_each_group_version():
    paths = index()["paths"]
    assert set(paths) == {"api/v1", "apis/apps/v1", "apis/discovery.k8s.io/v1", "apis/rbac.authorization.k8s.io/v1"}
    assert paths["apis/apps/v1"]["serverRelativeURL"].startswith("/openapi/v3/apis/apps/v1?hash=")
    assert openapi_document("/openapi/v3") == index()


def test_patch_of_every_kind_takes_field_validation():
    patches = _patch_operations(group_version_document("apis/apps/v1"))
    operation = patches["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert operation["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}} in operation["parameters"]
    core = _patch_operations(group_version_document("api/v1"))
    assert "/api/v1/nodes/{name}" in core and "/api/v1/namespaces/{namespace}/pods/{name}" in core


def test_unserved_group_versions_are_none():
    assert openapi_document("/openapi/v3/apis/batch/v1") is None
    assert openapi_document("/api/v1") is None
