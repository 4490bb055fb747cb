"""Merge, strategic merge and JSON patches (pure)."""

import pytest
from kmock import KubernetesError

from tether.lab.apiserver.patches import apply_patch, json_patch, merge_patch


def test_merge_patch_rules():
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": 2}) == {"a": {"c": [3]}, "d": 1, "e": 2}
    assert doc == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # untouched
    containers = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    merged = merge_patch(containers, {"containers": [{"name": "b", "image": "2"}]}, strategic=True)
    assert merged == {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    assert merge_patch(containers, {"containers": [{"name": "b", "image": "2"}]}) == {
        "containers": [{"name": "b", "image": "2"}]
    }


def test_json_patch_operations():
    doc = {"a": [1, 2], "b": {"c": 1}}
    result = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "move", "from": "/b/c", "path": "/d"},
            {"op": "copy", "from": "/d", "path": "/e~1f"},
            {"op": "test", "path": "/d", "value": 1},
        ],
    )
    assert result == {"a": [0, 1, 2, 3], "b": {}, "d": 1, "e/f": 1}
    with pytest.raises(ValueError):
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    with pytest.raises(ValueError):
        json_patch(doc, [{"op": "replace", "path": "/missing", "value": 2}])


def test_strategic_merge_replace_and_keyed_lists():
    doc = {"spec": {"a": 1, "b": 2}, "ports": [{"containerPort": 80, "name": "http"}]}
    assert merge_patch(doc, {"spec": {"$patch": "replace", "c": 3}}, strategic=True)["spec"] == {"c": 3}
    merged = merge_patch(doc, {"ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81}]}, strategic=True)
    assert merged["ports"] == [{"containerPort": 80, "name": "web"}, {"containerPort": 81}]
    # A list whose items lack every merge key is replaced, as a plain merge patch would.
    assert merge_patch({"ports": [{"x": 1}]}, {"ports": [{"x": 2}]}, strategic=True) == {"ports": [{"x": 2}]}


def test_apply_patch_by_content_type():
    doc = {"data": {"a": "1"}}
    assert apply_patch(doc, {"data": {"b": "2"}}, "application/merge-patch+json") == {"data": {"a": "1", "b": "2"}}
    assert apply_patch(doc, [{"op": "remove", "path": "/data/a"}], "application/json-patch+json") == {"data": {}}
    with pytest.raises(KubernetesError) as not_an_object:
        apply_patch(doc, [], "application/strategic-merge-patch+json")
    assert not_an_object.value.status == 400
    with pytest.raises(KubernetesError) as failed:
        apply_patch(doc, [{"op": "remove", "path": "/data/z"}], "application/json-patch+json")
    assert failed.value.status == 422
    assert failed.value.message == "the JSON patch could not be applied: path '/data/z' does not exist"
    with pytest.raises(KubernetesError) as unsupported:
        apply_patch(doc, {}, "application/apply-patch+yaml")
    assert unsupported.value.status == 415 and unsupported.value.reason == "UnsupportedMediaType"
    assert unsupported.value.message.endswith("(got 'application/apply-patch+yaml')")
