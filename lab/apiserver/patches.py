"""Patches as kube-apiserver applies them: JSON merge patch, strategic merge patch and JSON patch, and which
one a request's Content-Type asks for."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tether.lab.apiserver.errors import bad_request, error

# The list fields a strategic merge patch merges by key instead of replacing (their patchMergeKey in
# the API's schema). Container ports are keyed by containerPort, service ports by port.
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ports": ("containerPort", "port"),
}


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch (null deletes, lists replace); strategic=True also merges keyed lists.

    Strategic merge supports ``$patch: replace`` on maps and ``$patch: delete`` on list items; the
    other directives only order or prune and are ignored. The result shares no state with ``patch``.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif strategic and key in _MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _merge_keyed_list(old: list[Any], patch: list[Any], candidates: tuple[str, ...]) -> list[Any]:
    items = old + patch
    key = next(
        (k for k in candidates if all(isinstance(i, dict) and isinstance(i.get(k), str | int) for i in items)), None
    )
    if key is None:  # not a keyed list after all: replace it, as a merge patch would
        return copy.deepcopy(patch)
    merged = {item[key]: item for item in old}
    for item in patch:
        if item.get("$patch") == "delete":
            merged.pop(item[key], None)
        else:
            merged[item[key]] = merge_patch(merged.get(item[key]), item, strategic=True)
    return list(merged.values())


class JsonPatchError(ValueError):
    pass


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy of ``doc``."""
    if not isinstance(operations, list):
        raise JsonPatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise JsonPatchError(f"malformed operation: {op!r}")
        path = _pointer(op["path"])
        match op["op"]:
            case "add":
                doc = _pointer_apply(doc, path, "add", copy.deepcopy(_required(op, "value")))
            case "replace":
                doc = _pointer_apply(doc, path, "replace", copy.deepcopy(_required(op, "value")))
            case "remove":
                doc = _pointer_apply(doc, path, "remove")
            case "move" | "copy":
                source = _pointer(_required(op, "from"))
                value = copy.deepcopy(_pointer_apply(doc, source, "get"))
                if op["op"] == "move":
                    doc = _pointer_apply(doc, source, "remove")
                doc = _pointer_apply(doc, path, "add", value)
            case "test":
                if _pointer_apply(doc, path, "get") != _required(op, "value"):
                    raise JsonPatchError(f"test failed at {op['path']!r}")
            case other:
                raise JsonPatchError(f"unknown operation {other!r}")
    return doc


def _required(op: Mapping[str, Any], field: str) -> Any:
    if field not in op:
        raise JsonPatchError(f"operation {op['op']!r} needs {field!r}")
    return op[field]


def _pointer(path: Any) -> list[str]:
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _pointer_apply(doc: Any, path: list[str], action: str, value: Any = None) -> Any:
    """Get (returns the value) or add/replace/remove (returns the new document) at a JSON pointer."""
    if not path:
        if action == "get":
            return doc
        if action == "remove":
            raise JsonPatchError("cannot remove the whole document")
        return value
    parent = doc
    try:
        for token in path[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last: str | int = path[-1]
        if isinstance(parent, list):
            last = len(parent) if last == "-" and action == "add" else int(last)
            if not 0 <= last <= len(parent) - (action != "add"):
                raise IndexError(last)
        elif not isinstance(parent, dict):
            raise KeyError(last)
        if action == "get":
            return parent[last]
        if action == "add" and isinstance(parent, list):
            parent.insert(int(last), value)
        elif action == "remove":
            del parent[last]
        else:
            if action == "replace" and isinstance(parent, dict) and last not in parent:
                raise KeyError(last)
            parent[last] = value
    except (KeyError, IndexError, ValueError, TypeError):
        raise JsonPatchError(f"path {'/' + '/'.join(path)!r} does not exist") from None
    return doc


def apply_patch(doc: Any, patch: Any, content_type: str) -> Any:
    """``doc`` with ``patch`` applied in the format ``content_type`` names, or the API server's refusal:
    400 for a merge patch that is not an object, 415 for another format, 422 for a JSON patch that fails."""
    try:
        if content_type == "application/json-patch+json":
            return json_patch(doc, patch)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            return merge_patch(doc, patch, strategic=content_type.startswith("application/strategic"))
        raise error(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - "
            f"accepted media types include: application/json-patch+json, "
            f"application/merge-patch+json, application/strategic-merge-patch+json "
            f"(got {content_type!r})",
        )
    except JsonPatchError as e:
        raise error(422, "Invalid", f"the JSON patch could not be applied: {e}") from None
