"""A stand-in for the API server in agent authentication: a ``TokenReviewer`` and a ``PodReader``
(``tether.manager.agentauth``) over pods and tokens a test declares."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence

from tether.manager.agentauth import (
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    AgentAuthUnavailableError,
    PodFacts,
    TokenIdentity,
)


class FakeCluster:
    """Pods (with their controller chain) and projected tokens bound to them, as TokenReview would see them."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], PodFacts] = {}
        self.tokens: dict[str, tuple[str, str, str, tuple[str, ...]]] = {}  # token -> namespace, pod, uid, audiences
        self.reviews: list[str] = []
        self.down = False  # the API server does not answer
        self.delay = 0.0  # seconds each review takes
        self.in_flight = 0
        self.most_in_flight = 0

    def add_pod(
        self,
        namespace: str,
        name: str,
        ip: str,
        owners: Sequence[tuple[str, str]] = (("Deployment", "web"),),
        service_account: str = "default",
    ) -> PodFacts:
        pod = PodFacts(namespace, name, str(uuid.uuid4()), service_account, frozenset({ip}), tuple(owners))
        self.pods[namespace, name] = pod
        return pod

    def issue(self, namespace: str, pod: str, audiences: Sequence[str] = ("tether-manager",)) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (namespace, pod, self.pods[namespace, pod].uid, tuple(audiences))
        return token

    async def review(self, token: str, audiences: Sequence[str]) -> TokenIdentity:
        self.reviews.append(token)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.down:
            raise AgentAuthUnavailableError("TokenReview failed: connection refused")
        found = self.tokens.get(token)
        if found is None:
            return TokenIdentity(False, error="invalid bearer token")
        namespace, pod, uid, token_audiences = found
        if audiences and not set(audiences) & set(token_audiences):
            return TokenIdentity(False, error="token audiences is invalid for the target audiences")
        account = self.pods[namespace, pod].service_account if (namespace, pod) in self.pods else "default"
        return TokenIdentity(
            True,
            username=f"system:serviceaccount:{namespace}:{account}",
            extra={POD_NAME_EXTRA: (pod,), POD_UID_EXTRA: (uid,)},
            audiences=tuple(set(audiences) & set(token_audiences)),
        )

    async def pod(self, namespace: str, name: str) -> PodFacts | None:
        if self.down:
            raise AgentAuthUnavailableError("reading a pod failed: connection refused")
        return self.pods.get((namespace, name))
