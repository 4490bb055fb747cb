"""A stand-in for ``tether.helper.user.release.kube.Kube`` holding raw objects in memory: lists by kind (and
namespace), and records patches (merged into the objects as a merge patch would, list fields replaced)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class FakeReleaseKube:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.patches: list[tuple[str, str, str, dict[str, Any], str]] = []  # kind, namespace, name, patch, type

    def list(self, ref: Any) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for o in self.objects
            if o["kind"] == ref.kind and (not ref.namespace or o["metadata"]["namespace"] == ref.namespace)
        ]

    def patch(self, ref: Any, patch: Mapping[str, Any], kind: str = "merge") -> dict[str, Any]:
        self.patches.append((ref.kind, ref.namespace, ref.name, dict(patch), kind))
        return {}
