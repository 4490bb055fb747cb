"""The manager's intercepts, pure: which client takes which workload port, since when.

An intercept is global: every connection the workload's agents accept for that container port goes to the
one client that holds it. A second client asking for the same port is refused with who holds it and since
when. A client's intercepts end when it removes them, departs, or stops watching for intercepted dials (its
helper went away); the agents are told the new set each time it changes (:meth:`InterceptTable.ports_of`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

from tether.manager.agents import AgentError, check_workload
from tether.manager.api import manager_pb2 as pb

#: (namespace, workload name, container port)
InterceptKey = tuple[str, str, int]


class InterceptConflictError(Exception):
    """The port is intercepted by another client; the text names the client and since when."""


class UnknownInterceptError(KeyError):
    def __str__(self) -> str:
        namespace, name, port = self.args[0]
        return f"no intercept of {namespace}/{name} port {port} by this client"


@dataclass(frozen=True)
class Intercept:
    spec: pb.InterceptSpec
    session_id: str
    client: str
    since: float  # unix seconds

    @property
    def key(self) -> InterceptKey:
        return key_of(self.spec)

    def describe(self) -> str:
        namespace, name, port = self.key
        return f"{namespace}/{name} port {port}"

    def since_text(self) -> str:
        return datetime.datetime.fromtimestamp(self.since, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def key_of(spec: pb.InterceptSpec) -> InterceptKey:
    return spec.workload.namespace, spec.workload.name, spec.port


def check_spec(spec: pb.InterceptSpec) -> None:
    """Raise AgentError naming an invalid workload or port."""
    workload = spec.workload
    check_workload(workload.namespace, workload.name, workload.kind or "Deployment")
    if not 0 < spec.port < 65536:
        raise AgentError(f"intercepted port {spec.port} is not a TCP port number")
    if spec.local_port >= 65536:
        raise AgentError(f"local port {spec.local_port} is not a TCP port number")


class InterceptTable:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_key: dict[InterceptKey, Intercept] = {}

    def create(self, spec: pb.InterceptSpec, session_id: str, client: str) -> tuple[Intercept, bool]:
        """Hold the port for the client; (the intercept, whether it is new). The same client asking again
        gets its intercept (with the new spec); another client gets InterceptConflictError."""
        check_spec(spec)
        key = key_of(spec)
        held = self._by_key.get(key)
        if held is not None and held.session_id != session_id:
            raise InterceptConflictError(
                f"{held.describe()} is already intercepted by {held.client} since {held.since_text()}"
            )
        since = held.since if held is not None else self._clock()
        intercept = Intercept(spec, session_id, client, since)
        self._by_key[key] = intercept
        return intercept, held is None

    def remove(self, key: InterceptKey, session_id: str) -> Intercept:
        held = self._by_key.get(key)
        if held is None or held.session_id != session_id:
            raise UnknownInterceptError(key)
        return self._by_key.pop(key)

    def drop_session(self, session_id: str) -> list[Intercept]:
        """End every intercept of the session; returns them."""
        gone = [i for i in self._by_key.values() if i.session_id == session_id]
        for intercept in gone:
            del self._by_key[intercept.key]
        return gone

    def get(self, key: InterceptKey) -> Intercept | None:
        return self._by_key.get(key)

    def all(self) -> list[Intercept]:
        return sorted(self._by_key.values(), key=lambda i: i.key)

    def ports_of(self, namespace: str, name: str) -> pb.AgentIntercepts:
        """What the workload's agents are told: each intercepted port and who takes it."""
        ports = [
            pb.PortState(port=i.spec.port, intercepted_by=i.client)
            for i in self.all()
            if (i.spec.workload.namespace, i.spec.workload.name) == (namespace, name)
        ]
        return pb.AgentIntercepts(ports=ports)
