"""Strict field validation (``fieldValidation=Strict``, what kubectl sends with ``apply`` and ``create``):
the fields of a body that its kind's schema does not have, found through the official client's models.
Patch directives (``$patch``, ``$setElementOrder/...``) are not fields. Pure."""

from __future__ import annotations

import re
from typing import Any

import kubernetes.client

from tether.lab.apiserver.errors import bad_request
from tether.lab.apiserver.kinds import Kind

_CONTAINER = re.compile(r"^(?:List\[(?P<item>.+)\]|Dict\[str, (?P<value>.+)\])$")


def unknown_fields(type_name: str, value: Any, path: str = "") -> list[str]:
    """The dotted paths of the keys in ``value`` that the model ``type_name`` (e.g. ``V1Pod``) does not know."""
    container = _CONTAINER.match(type_name)
    if container and container["item"] and isinstance(value, list):
        return [f for i, item in enumerate(value) for f in unknown_fields(container["item"], item, f"{path}[{i}]")]
    if container and container["value"] and isinstance(value, dict):
        return [f for k, v in value.items() for f in unknown_fields(container["value"], v, f"{path}.{k}")]
    model = getattr(kubernetes.client, type_name, None)
    if model is None or not isinstance(value, dict) or not isinstance(getattr(model, "attribute_map", None), dict):
        return []  # a scalar, a free-form object, or a type the client does not model
    fields = {json_name: model.openapi_types[attr] for attr, json_name in model.attribute_map.items()}
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key.startswith("$"):
            continue
        if key not in fields:
            found.append(where)
        else:
            found += unknown_fields(fields[key], item, where)
    return found


def check_strict(kind: Kind, body: Any, mode: str | None) -> None:
    """Refuse a body with unknown fields when the request asks for ``fieldValidation=Strict``, as
    kube-apiserver does; other modes (Warn, Ignore, none) accept it."""
    if mode is not None and mode not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f'fieldValidation "{mode}" is not supported: use one of Strict, Warn, Ignore')
    if mode != "Strict" or not isinstance(body, dict):
        return
    unknown = unknown_fields(kind.model().__name__, body)
    if unknown:
        raise bad_request("strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown))
