"""meta.k8s.io/v1 Tables: a list or one object as the rows ``kubectl get`` prints, each carrying the object
as ``includeObject`` asks (``Metadata``, the default: PartialObjectMetadata; ``Object``; ``None``). Pure."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from tether.lab.apiserver.errors import bad_request
from tether.lab.apiserver.kinds import Kind, Obj
from tether.lab.apiserver.printers import printer_of

INCLUDE_OBJECT = ("None", "Metadata", "Object")


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "Object":
        return obj
    if include == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}
    return None


def table(
    kind: Kind,
    objects: Sequence[Obj],
    *,
    resource_version: str,
    include_object: str | None = None,
    now: datetime.datetime | None = None,
) -> Obj:
    """The Table of ``objects`` (all of ``kind``); a 400 naming ``include_object`` if it is not a known one."""
    include = include_object or "Metadata"
    if include not in INCLUDE_OBJECT:
        raise bad_request(f'includeObject "{include}" is not supported: use one of {", ".join(INCLUDE_OBJECT)}')
    now = now or datetime.datetime.now(datetime.UTC)
    columns, cells = printer_of(kind.kind)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj, now)}
        row_object = _row_object(obj, include)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [c.definition() for c in columns],
        "rows": rows,
    }
