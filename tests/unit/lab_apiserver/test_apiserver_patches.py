"""Merge, strategic merge and JSON patches (pure)."""

import pytest

from tether.lab.apiserver.patches import json_patch, merge_patch


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
