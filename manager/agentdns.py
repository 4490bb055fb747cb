"""Cluster lookups resolved in a workload's pod: a client's ``LookupDNS`` with ``via`` (it intercepts that workload).

The manager pushes the question to one of the workload's live agents as a ``DialRequest`` carrying ``dns`` and a
fresh flow id; the agent resolves it with its pod's own resolv.conf (its namespace first, its search path) and
answers with ``Agents.AnswerDNS`` naming that flow id. A question no agent answers in time fails as SERVFAIL
would: the client's DNS server answers it so.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Protocol

from tether.manager.api import manager_pb2 as pb

#: How long a lookup waits for the agent's answer: under the helper's own deadline for LookupDNS (4 s), so that
#: the client hears which agent did not answer rather than a bare deadline.
ANSWER_TIMEOUT = 3.5


class AgentLookupError(LookupError):
    """No agent could answer (none live, none in time); the text says which workload and why."""


class StrayAnswerError(ValueError):
    """An agent answered a lookup that was not given to it (or is over); the text names both."""


class Resolver(Protocol):
    """What a lookup needs of an agent (``agents.Agent``)."""

    agent_id: str
    dials: asyncio.Queue[pb.DialRequest | None]

    @property
    def short(self) -> str: ...


#: (namespace, name, kind) -> a live agent of that workload, or None
Pick = Callable[[str, str, str], Resolver | None]


class AgentLookups:
    """Lookups waiting for an agent's answer, by flow id. Runs on the manager's event loop.

    ``no_agent`` says why a workload may have no agent (the registry's own wording).
    """

    def __init__(self, pick: Pick, no_agent: str = "", timeout: float = ANSWER_TIMEOUT) -> None:
        self._pick = pick
        self._no_agent = no_agent
        self._timeout = timeout
        self._waiting: dict[str, tuple[str, asyncio.Future[pb.AgentDNSAnswer]]] = {}

    async def resolve(self, via: pb.WorkloadRef, name: str, qtype: int) -> pb.DNSResponse:
        workload = f"{via.kind} {via.namespace}/{via.name}" if via.kind else f"{via.namespace}/{via.name}"
        agent = self._pick(via.namespace, via.name, via.kind)
        if agent is None:
            why = f": {self._no_agent}" if self._no_agent else ""
            raise AgentLookupError(f"no tether-agent for workload {workload} to resolve {name!r}{why}")
        flow_id = secrets.token_urlsafe(18)
        answer: asyncio.Future[pb.AgentDNSAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[flow_id] = (agent.agent_id, answer)
        agent.dials.put_nowait(pb.DialRequest(flow_id=flow_id, dns=pb.DNSRequest(name=name, qtype=qtype)))
        try:
            reply = await asyncio.wait_for(answer, self._timeout)
        except TimeoutError:
            raise AgentLookupError(
                f"tether-agent {agent.short} of {workload} did not resolve {name!r} in {self._timeout:g}s"
            ) from None
        finally:
            self._waiting.pop(flow_id, None)
        if reply.error:
            raise AgentLookupError(f"tether-agent {agent.short} of {workload} cannot resolve {name!r}: {reply.error}")
        return reply.response

    def answer(self, agent_id: str, reply: pb.AgentDNSAnswer) -> None:
        """An agent's answer; StrayAnswerError when the flow id was not given to that agent (or is gone)."""
        waiting = self._waiting.get(reply.flow_id)
        if waiting is None or waiting[0] != agent_id:
            raise StrayAnswerError(f"no lookup {reply.flow_id!r} waits for tether-agent {agent_id!r}")
        if not waiting[1].done():
            waiting[1].set_result(reply)

    def __len__(self) -> int:
        return len(self._waiting)
