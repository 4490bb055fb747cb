"""Label and field selectors: the ``labelSelector`` and ``fieldSelector`` query parameters as predicates."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tether.lab.apiserver.errors import bad_request
from tether.lab.apiserver.kinds import Obj

Matcher = Callable[[Obj], bool]

_LABEL_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<absent>!)\s*(?P<akey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels for ``a=b,c!=d,e,!f,g in (x,y),h notin (z)``; ValueError if malformed."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for requirement in re.split(r",(?![^(]*\))", text):  # commas inside "in (a,b)" do not split
        if not requirement.strip():
            continue
        m = _LABEL_REQUIREMENT.match(requirement)
        if m is None:
            raise ValueError(f"unable to parse requirement: {requirement.strip()!r}")
        if m["absent"]:
            checks.append(lambda labels, k=m["akey"]: k not in labels)
        elif m["op"] in ("=", "=="):
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) == v)
        elif m["op"] == "!=":  # also matches objects without the label, as in Kubernetes
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) != v)
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",")}
            if m["setop"] == "in":
                checks.append(lambda labels, k=m["key"], vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=m["key"], vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=m["key"]: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def selector_text(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object (matchLabels, matchExpressions) in its query form, e.g. ``app=web,tier in (a,b)``."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {str(op).lower()} ({','.join(sorted(values))})")
    return ",".join(parts)


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)  # unset fields compare as "", e.g. spec.nodeName=


def parse_field_selector(text: str) -> Matcher:
    """A predicate over objects for ``metadata.name=x,status.phase!=Running`` (any dotted path)."""
    checks: list[Matcher] = []
    for requirement in text.split(","):
        if not requirement.strip():
            continue
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", requirement)
        if m is None:
            raise ValueError(f"invalid field selector: {requirement.strip()!r}")
        path, op, expected = m.groups()
        if op == "!=":
            checks.append(lambda obj, p=path, v=expected: _field_value(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=expected: _field_value(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)


def selector(query: Mapping[str, str], name: str | None = None) -> Matcher:
    """What a list or watch request selects: its selectors and, for one named object, the name; 400 if malformed."""
    try:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
    except ValueError as e:
        raise bad_request(f"invalid selector: {e}") from None

    def match(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return (name is None or meta.get("name") == name) and labels(meta.get("labels") or {}) and fields(obj)

    return match
