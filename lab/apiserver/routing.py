"""Where a request or an object leads: a resource URL to its Kind, namespace, name and subresource, and an
object's apiVersion and kind to its Kind."""

from __future__ import annotations

import dataclasses
import re

from tether.lab.apiserver.errors import error, url_not_found
from tether.lab.apiserver.kinds import KINDS_BY_TYPE, KINDS_BY_URL, Kind


def kind_of(api_version: str, kind: str) -> Kind:
    """The served Kind for an object's apiVersion and kind, or a 400 error naming them."""
    try:
        return KINDS_BY_TYPE[api_version, kind]
    except KeyError:
        raise error(400, "BadRequest", f'no kind "{kind}" is registered for version "{api_version}"') from None


@dataclasses.dataclass(frozen=True)
class Route:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


_RESOURCE_PATH = re.compile(r"^/(?:api/(?P<core>[^/]+)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/(?P<rest>.+?)/?$")


def parse_route(path: str) -> Route | None:
    """Split a resource URL; None for everything else (discovery, /version), which kmock serves."""
    match = _RESOURCE_PATH.match(path)
    if match is None:
        return None
    group, version = ("", match["core"]) if match["core"] else (match["group"], match["version"])
    parts: list[str | None] = list(match["rest"].split("/"))
    namespace = None
    # /namespaces/NS/pods/... addresses pods in NS; /namespaces/NS/status is the Namespace's own status.
    if parts[0] == "namespaces" and len(parts) >= 3 and not (len(parts) == 3 and parts[2] in ("status", "finalize")):
        namespace, parts = parts[1], parts[2:]
    if len(parts) > 3:
        raise url_not_found()
    plural, name, subresource = parts + [None] * (3 - len(parts))
    kind = KINDS_BY_URL.get((group, version, plural or ""))
    if kind is None or (namespace is not None and not kind.namespaced):
        raise url_not_found()
    if subresource is not None and subresource not in kind.subresources:
        raise url_not_found()
    return Route(kind, namespace, name, subresource)
