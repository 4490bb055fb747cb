"""Content negotiation: which representation an ``Accept`` header asks for (a Table, aggregated discovery)
among the ones kube-apiserver offers beside plain JSON."""

from __future__ import annotations

from collections.abc import Mapping

TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
AGGREGATED_DISCOVERY_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """``Accept`` split into (type, parameters) in the client's order of preference; quality is ignored as
    kube-apiserver's clients list what they prefer first."""
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        params = {}
        for field in fields[1:]:
            key, _, value = field.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append((fields[0].lower(), params))
    return ranges


def _first_json(accept: str) -> Mapping[str, str] | None:
    """The parameters of the first JSON range the client takes, or None when it takes no JSON."""
    for media_type, params in media_ranges(accept):
        if media_type in ("application/json", "application/*", "*/*"):
            return params
    return None


def wants_table(accept: str) -> bool:
    """Whether the client's first choice is a meta.k8s.io/v1 Table (kubectl get asks for one)."""
    params = _first_json(accept) or {}
    return params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") == "v1"


def wants_aggregated_discovery(accept: str) -> bool:
    """Whether the client's first choice is apidiscovery.k8s.io/v2 (kubectl asks for it on /api and /apis)."""
    params = _first_json(accept) or {}
    return (
        params.get("as") == "APIGroupDiscoveryList"
        and params.get("g") == "apidiscovery.k8s.io"
        and params.get("v") == "v2"
    )
