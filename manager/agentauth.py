"""Who a tether-agent is: its pod's service-account token, checked against the pod it claims to run in.

An agent sends a projected service-account token (audience :data:`AGENT_TOKEN_AUDIENCE` by default) as
``authorization: Bearer <token>`` metadata on every Agents call. :class:`AgentAuthenticator` asks the API
server who the token belongs to (a TokenReview, through a :class:`TokenReviewer`), reads the pod the
token is bound to (through a :class:`PodReader`) and lets the call through only when the token, the pod
and the agent's claim agree (:func:`check_claim`): the same namespace, pod name and uid, the claimed pod
IP among the pod's IPs, and the claimed workload on the pod's controller chain (ReplicaSet ->
Deployment, or StatefulSet). Successful checks are remembered briefly, so a flow costs no API call;
refusals are remembered for a shorter while, and only a few reviews run at once, so a caller repeating a
bad token cannot turn each of its calls into work for the API server.

Without this, anything that reaches the manager's pod could arrive as any workload's agent and be handed
other users' ``--proxy-via`` flows.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tether.manager.api.sidecar import AGENT_TOKEN_AUDIENCE
from tether.manager.api.wire import IPAddress

#: The gRPC metadata key the token travels in (lower case, as gRPC requires).
TOKEN_METADATA_KEY = "authorization"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class AgentAuthError(Exception):
    """An agent's call is refused; the text says why (it goes back to the agent)."""


class AgentUnauthenticatedError(AgentAuthError):
    """No token, or one the API server does not accept."""


class AgentDeniedError(AgentAuthError):
    """A valid token, but for another pod than the one the agent claims."""


class AgentAuthUnavailableError(AgentAuthError):
    """The token could not be checked now (the API server did not answer); the agent should retry."""


@dataclass(frozen=True)
class AgentClaim:
    """What an agent says it is."""

    namespace: str
    workload: str
    kind: str
    pod_name: str
    pod_ip: IPAddress | None

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.workload} (pod {self.pod_name})"


@dataclass(frozen=True)
class TokenIdentity:
    """A TokenReview's answer."""

    authenticated: bool
    username: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)
    audiences: Sequence[str] = ()
    error: str = ""

    def first(self, key: str) -> str:
        values = self.extra.get(key) or ()
        return values[0] if values else ""


@dataclass(frozen=True)
class PodFacts:
    """What the API server says about a pod."""

    namespace: str
    name: str
    uid: str
    service_account: str
    ips: frozenset[str]
    #: (kind, name) of the pod's controller, its controller's controller, ...: ReplicaSet then Deployment
    owners: tuple[tuple[str, str], ...]


class TokenReviewer(Protocol):
    async def review(self, token: str, audiences: Sequence[str]) -> TokenIdentity:
        """The token's identity; raises AgentAuthUnavailableError when the API server cannot answer."""
        ...


class PodReader(Protocol):
    async def pod(self, namespace: str, name: str) -> PodFacts | None:
        """The pod (None when there is none); raises AgentAuthUnavailableError when the API cannot answer."""
        ...


def check_claim(identity: TokenIdentity, pod: PodFacts | None, claim: AgentClaim) -> None:
    """Raise AgentDeniedError unless the token's identity is the pod the agent claims and the pod is
    the claimed workload's."""
    prefix, _, rest = identity.username.partition(_SA_PREFIX)
    namespace, _, account = rest.partition(":")
    if prefix or not namespace or not account:
        raise AgentDeniedError(f'the token is not a service account\'s (user "{identity.username}")')
    if namespace != claim.namespace:
        raise AgentDeniedError(f'the token is for namespace "{namespace}", the agent claims {claim.describe()}')
    token_pod, token_uid = identity.first(POD_NAME_EXTRA), identity.first(POD_UID_EXTRA)
    if not token_pod or not token_uid:
        raise AgentDeniedError("the token is not bound to a pod: mount a projected service-account token")
    if token_pod != claim.pod_name:
        raise AgentDeniedError(f'the token is for pod "{token_pod}", the agent claims {claim.describe()}')
    if pod is None:
        raise AgentDeniedError(f"pod {claim.namespace}/{claim.pod_name} does not exist")
    if pod.uid != token_uid:
        raise AgentDeniedError(f"the token is for an earlier pod named {claim.namespace}/{claim.pod_name}")
    if pod.service_account != account:
        raise AgentDeniedError(
            f'the token is for service account "{account}", pod {pod.name} runs as "{pod.service_account}"'
        )
    if claim.pod_ip is not None and str(claim.pod_ip) not in pod.ips:
        have = ", ".join(sorted(pod.ips)) or "none"
        raise AgentDeniedError(f"the agent claims pod IP {claim.pod_ip}, pod {pod.name} has {have}")
    if (claim.kind, claim.workload) not in pod.owners:
        chain = " -> ".join(f"{kind} {name}" for kind, name in pod.owners) or "no controller"
        raise AgentDeniedError(f"pod {pod.name} is not {claim.describe()}'s: its owners are {chain}")


_Key = tuple[bytes, AgentClaim]
_V = TypeVar("_V")


class AgentAuthenticator:
    """Checks an agent's token against its claim, remembering successes for ``ttl`` seconds and refusals
    for ``refused_ttl`` seconds, with at most ``concurrent_reviews`` checks with the API server at a time."""

    def __init__(
        self,
        reviewer: TokenReviewer,
        pods: PodReader,
        audience: str = AGENT_TOKEN_AUDIENCE,
        *,
        ttl: float = 30.0,
        refused_ttl: float = 5.0,
        max_remembered: int = 4096,
        concurrent_reviews: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reviewer = reviewer
        self.pods = pods
        self.audience = audience
        self.ttl = ttl
        self.refused_ttl = refused_ttl
        self.max_remembered = max_remembered
        self._clock = clock
        self._good: OrderedDict[_Key, float] = OrderedDict()
        # A refusal is not retried at once: a valid agent whose pod was not yet visible retries on its own.
        self._refused: OrderedDict[_Key, tuple[float, AgentAuthError]] = OrderedDict()
        self._reviewing = asyncio.Semaphore(concurrent_reviews)
        self.reviews = 0  # TokenReviews asked for, for tests and logs

    def missing_token(self) -> str:
        return (
            f"no service-account token: a tether-agent sends its pod's token (audience {self.audience}) "
            f"as {TOKEN_METADATA_KEY} metadata"
        )

    async def verify(self, token: str, claim: AgentClaim) -> None:
        if not token:
            raise AgentUnauthenticatedError(self.missing_token())
        # Only a digest is kept: the cache must not become a store of live credentials.
        key = (hashlib.sha256(token.encode()).digest(), claim)
        now = self._clock()
        until = self._good.get(key)
        if until is not None and now < until:
            return
        self._good.pop(key, None)
        refused = self._refused.get(key)
        if refused is not None and now < refused[0]:
            raise refused[1]
        self._refused.pop(key, None)
        async with self._reviewing:
            try:
                await self._review(token, claim)
            except (AgentUnauthenticatedError, AgentDeniedError) as exc:
                _remember(self._refused, key, (self._clock() + self.refused_ttl, exc), self.max_remembered)
                raise
        _remember(self._good, key, self._clock() + self.ttl, self.max_remembered)

    async def _review(self, token: str, claim: AgentClaim) -> None:
        self.reviews += 1
        identity = await self.reviewer.review(token, [self.audience])
        if not identity.authenticated:
            why = f": {identity.error}" if identity.error else ""
            raise AgentUnauthenticatedError(f"the API server did not accept the token for {self.audience}{why}")
        if identity.audiences and self.audience not in identity.audiences:
            raise AgentUnauthenticatedError(f"the token is not for audience {self.audience}")
        check_claim(identity, await self.pods.pod(claim.namespace, claim.pod_name), claim)


def _remember(memory: OrderedDict[_Key, _V], key: _Key, value: _V, limit: int) -> None:
    memory[key] = value
    while len(memory) > limit:
        memory.popitem(last=False)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token in ``authorization: Bearer <token>`` metadata; "" when there is none."""
    for key, value in metadata or ():
        if key.lower() == TOKEN_METADATA_KEY and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
