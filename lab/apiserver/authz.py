"""A minimal authorization hook for the emulator: bearer tokens that name users, and what each user may do.

The lab's own kubeconfig carries no token and stays all-powerful (the lab's admin), as before. A request
with a bearer token is the user the token names, allowed only the (verb, resource) pairs listed for them,
and refused with a 403 worded like kube-apiserver's RBAC refusal; an unknown token gets a 401. That is
enough to show that what a client does with its user's own credentials is bounded by that user's rights
(agent injection), without pretending to be RBAC (no roles, bindings or namespaces in the rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kmock import KubernetesError

from tether.lab.apiserver.errors import error
from tether.lab.apiserver.kinds import Kind

# An HTTP method to the RBAC verb it stands for (a GET on a collection lists, with watch=1 watches).
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def verb_of(method: str, named: bool, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else ("get" if named else "list")
    return _VERBS.get(method, method.lower())


@dataclass(frozen=True)
class Authorizer:
    """``tokens``: bearer token -> user name; ``allowed``: user name -> the ``"verb resource"`` pairs they may
    do, a resource written as ``plural`` or ``plural/subresource`` (e.g. ``"get deployments"``)."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def check(
        self, authorization: str, verb: str, kind: Kind, namespace: str | None, name: str | None, sub: str | None
    ) -> None:
        """Return when the request may go on; else raise the API server's 401 or 403."""
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            return  # the lab's admin kubeconfig
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise error(401, "Unauthorized", "Unauthorized")
        resource = f"{kind.plural}/{sub}" if sub else kind.plural
        if f"{verb} {resource}" in self.allowed.get(user, frozenset()):
            return
        raise forbidden(user, verb, kind, resource, namespace, name)


def forbidden(
    user: str, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
) -> KubernetesError:
    what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    subject = f'{what} "{name}"' if name else what
    group = f'in API group "{kind.group}"'
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" {group}{where}'
    details = {"name": name or "", "group": kind.group, "kind": kind.plural}
    return error(403, "Forbidden", message, details)
