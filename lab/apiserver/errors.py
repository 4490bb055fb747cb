"""Refusals shaped like kube-apiserver's: Status objects, the errors that carry them, and their rendering.

Clients parse these texts (Tether learns the service CIDR from a 422's message), so the wording follows
the API server's, not ours.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp.web
import kmock
from kmock import KubernetesError

from tether.lab.apiserver.kinds import Kind, Obj

# The name the emulator has always logged under, whichever of its modules speaks.
log = logging.getLogger("tether.lab.apiserver")


def status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def error(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> KubernetesError:
    return KubernetesError(status=code, reason=reason, message=message, details=details)


def url_not_found() -> KubernetesError:
    return error(404, "NotFound", "the server could not find the requested resource")


def details(kind: Kind, name: str) -> Obj:
    found = {"name": name, "group": kind.group, "kind": kind.plural}
    return found if kind.group else {"name": name, "kind": kind.plural}


def not_found(kind: Kind, name: str) -> KubernetesError:
    return error(404, "NotFound", f'{kind.plural} "{name}" not found', details(kind, name))


def conflict(kind: Kind, name: str) -> KubernetesError:
    return error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        details(kind, name),
    )


def bad_request(message: str) -> KubernetesError:
    return error(400, "BadRequest", message)


def method_not_allowed() -> KubernetesError:
    return error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One cause of a 422 Invalid, e.g. ``spec.clusterIPs[0]: Invalid value: "1.1.1.1": ...``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        return cls(field, f"Invalid value: {json.dumps(value)}: {detail}")

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        return cls(field, "Required value" + (f": {detail}" if detail else ""), "FieldValueRequired")


def brief(value: Any) -> Any:
    """A value short enough to quote in an error message."""
    text = json.dumps(value, default=str)
    return value if len(text) <= 80 else text[:77] + "..."


def invalid(kind: Kind, name: str, errors: Sequence[FieldError]) -> KubernetesError:
    texts = [f"{e.field}: {e.message}" for e in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    found = {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes}
    return error(422, "Invalid", f'{kind.kind} "{name}" is invalid: {summary}', found)


def error_response(exc: Exception) -> aiohttp.web.Response:
    """The Status response for anything raised while serving a request."""
    if type(exc) is KubernetesError:  # ours, already worded like the API server
        body = status(exc.status, exc.reason or "", exc.message or "", exc.details)
    elif isinstance(exc, kmock.KubernetesNotFoundError):  # kmock's discovery 404s mention its DSL
        body = status(404, "NotFound", "the server could not find the requested resource")
    else:
        log.error("internal error serving a request", exc_info=exc)
        body = status(500, "InternalError", f"Internal error occurred: {exc!r}")
    return aiohttp.web.json_response(body, status=body["code"])
