"""What kmock serves for the emulator: API discovery (``/api``, ``/apis/...``) and ``/version``, completed
for the served kinds and for the official client's strict models, and errors rendered as Status objects."""

from __future__ import annotations

from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock import KubernetesEmulator

from tether.lab.apiserver.errors import error_response
from tether.lab.apiserver.kinds import KINDS

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0+tether.lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
    "emulationMajor": "1",
    "emulationMinor": "31",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "30",
}
_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@attrs.define(kw_only=True)
class DiscoveryEmulator(KubernetesEmulator):
    """kmock's emulator reporting the served kinds; the resource URLs themselves are a subclass's to serve."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in KINDS:  # what kmock's discovery endpoints report
            self.resources[kind.resource] = kmock.ResourceInfo(
                kind=kind.kind,
                namespaced=kind.namespaced,
                singular=kind.kind.lower(),
                verbs=_VERBS,
                shortnames=kind.short_names,
                subresources=kind.subresources,
            )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.rel_url.path
        if path != "/" and path.endswith("/"):  # the official client asks for /api/, /apis/, /version/
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(path.rstrip("/")))
        try:
            return await super().__call__(raw_request)
        finally:
            # kmock records every request and error for test assertions; keep a long-running server small.
            del self._requests[:-100]
            if self._errors:
                del self._errors[-1][:-100]

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        return error_response(exc)

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return dict(SERVER_VERSION)

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return {
            "apiVersion": "v1",
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or ""}],
        }

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        payload: Any = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        return payload
