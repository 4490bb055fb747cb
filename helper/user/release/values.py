"""User-supplied chart values: ``--set key=value`` typed as Helm types them, ``--values FILE``, and their merge.

Pure. Errors are :class:`ValuesError` naming the flag and the value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_INT = re.compile(r"-?(0|[1-9][0-9]*)")


class ValuesError(ValueError):
    """A --set expression or a values file is not usable; the text names it."""


def typed(text: str) -> Any:
    """A --set value as Helm types it: true/false, null, whole numbers (int64; no leading zeros), else a string.
    Fractions stay strings, as with Helm."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if _INT.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return text


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside braces, honouring backslash escapes (kept for the next step)."""
    parts, current, depth, escaped = [], [], 0, False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "{":
            depth += 1
            current.append(char)
        elif char == "}":
            depth -= 1
            current.append(char)
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _value(text: str) -> Any:
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1]
        return [] if not inner else [typed(_unescape(item)) for item in _split(inner, ",")]
    return typed(_unescape(text))


def parse_set(expression: str) -> dict[str, Any]:
    """One --set argument (``a.b=1,c={x,y}``: several assignments split by commas) as nested values."""
    result: dict[str, Any] = {}
    for assignment in _split(expression, ","):
        key, equals, raw = assignment.partition("=")
        if not equals:
            raise ValuesError(f'--set "{expression}": "{assignment}" is not KEY=VALUE')
        if "[" in key:
            raise ValuesError(f'--set "{expression}": list indexes ("{key}") are not supported; write lists as {{a,b}}')
        path = [_unescape(part) for part in _split(key, ".")]
        if not all(path):
            raise ValuesError(f'--set "{expression}": "{key}" is not a key (an empty part)')
        merge_into(result, _nest(path, _value(raw)))
    return result


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return value


def merge_into(target: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``target`` (later wins; maps merge, everything else replaces)."""
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return target


def parse_values_file(text: str, name: str) -> dict[str, Any]:
    """A --values file's document (empty: no values)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValuesError(f"--values {name}: not valid YAML: {problem}{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValuesError(f"--values {name}: expected a mapping of values, got {type(doc).__name__}")
    return doc


def combine(files: Iterable[Mapping[str, Any]], sets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Values files in order, then --set in order, as Helm layers them."""
    result: dict[str, Any] = {}
    for layer in [*files, *sets]:
        merge_into(result, layer)
    return result
