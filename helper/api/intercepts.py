"""Intercepts as both sides of the helper socket see them, pure: the session's intercept table (who intercepts
what, since when, which ports, the agents' state), the ``--port`` syntax, and the pod environment's files.

The root helper keeps an :class:`InterceptTable` in its session and publishes it in ``State.intercepts``;
the CLI (``tether status --json``, ``tether list``) and the tray read the same messages through
:func:`describe`, so every status and error has one wording.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.helper.api import helper_pb2 as pb

WAITING = "waiting"  # created at the manager; the workload's agents do not all take it yet
ACTIVE = "active"  # every live agent of the workload sends the port to us
FAILED = "failed"  # it could not be set up, or was lost; ``error`` says why


class PortSpecError(ValueError):
    pass


@dataclass(frozen=True)
class PortSpec:
    local: int  # 0: the service port's number
    service_port: str  # number or name; "" = the Service's only port


def parse_port(value: str) -> PortSpec:
    """``LOCAL[:SERVICE_PORT_OR_NAME]`` (or ``:NAME`` for the default local port); PortSpecError names it."""
    local, _, service = value.partition(":")
    if local and not (local.isdigit() and 0 < int(local) < 65536):
        raise PortSpecError(f'--port "{value}": the local port "{local}" is not a TCP port number (1-65535)')
    if ":" in value and not service:
        raise PortSpecError(f'--port "{value}": nothing after ":" (a service port number or name)')
    if service.isdigit() and not 0 < int(service) < 65536:
        raise PortSpecError(f'--port "{value}": the service port "{service}" is not a port number (1-65535)')
    if service and not service.isdigit() and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", service):
        raise PortSpecError(f'--port "{value}": the service port name "{service}" is not a valid port name')
    return PortSpec(int(local) if local else 0, service)


def env_file_text(environment: Mapping[str, str]) -> str:
    """``KEY=VALUE`` lines, values quoted for a POSIX shell (``set -a; . FILE`` reads them back exactly,
    newlines and quotes included); names that no shell accepts are left out with a comment."""
    lines = []
    for name in sorted(environment):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            lines.append(f"{name}={shlex.quote(environment[name])}")
        else:
            lines.append(f"# {name!r} left out: not a shell variable name")
    return "".join(line + "\n" for line in lines)


def env_json_text(environment: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(environment.items())), indent=2) + "\n"


def key(state: pb.InterceptState) -> tuple[str, str]:
    return state.namespace, state.workload


class InterceptTable:
    """This session's intercepts by (namespace, workload), in the order they were made."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], pb.InterceptState] = {}

    def put(self, state: pb.InterceptState) -> None:
        self._items[key(state)] = state

    def get(self, namespace: str, workload: str) -> pb.InterceptState | None:
        return self._items.get((namespace, workload))

    def remove(self, namespace: str, workload: str) -> pb.InterceptState | None:
        return self._items.pop((namespace, workload), None)

    def local_port(self, namespace: str, workload: str, port: int) -> int | None:
        """Where an intercepted connection for the workload's container port goes; None unless we hold it."""
        state = self._items.get((namespace, workload))
        if state is None or state.port != port or state.phase == FAILED:
            return None
        return state.local_port

    def all(self) -> list[pb.InterceptState]:
        return list(self._items.values())

    def clear(self) -> list[pb.InterceptState]:
        gone, self._items = list(self._items.values()), {}
        return gone

    def __len__(self) -> int:
        return len(self._items)


def phase_of(agents_intercepting: int, agents_live: int) -> str:
    return ACTIVE if agents_live and agents_intercepting >= agents_live else WAITING


def since_text(since_unix_ms: int) -> str:
    if not since_unix_ms:
        return ""
    return dt.datetime.fromtimestamp(since_unix_ms / 1000, dt.UTC).isoformat(timespec="seconds")


def describe(state: pb.InterceptState) -> dict[str, Any]:
    """One intercept for JSON output (``tether status --json``, ``tether list --json``)."""
    return {
        "namespace": state.namespace,
        "workload": state.workload,
        "kind": state.kind,
        "service": state.service,
        "service_port": state.service_port or None,
        "port_name": state.port_name,
        "container_port": state.port or None,
        "local_port": state.local_port or None,
        "client": state.client,
        "ours": state.ours,
        "since": since_text(state.since_unix_ms) or None,
        "phase": state.phase,
        "error": state.error,
        "agents_intercepting": state.agents_intercepting,
        "agents_live": state.agents_live,
        "mount": state.mount,
        "mount_error": state.mount_error,
    }


def line(state: pb.InterceptState) -> str:
    """One intercept as a sentence for the terminal."""
    who = "you" if state.ours else state.client
    target = f"localhost:{state.local_port}" if state.ours else who
    text = (
        f"{state.namespace}/{state.workload} port {state.port} (service {state.service} port "
        f"{state.service_port}) -> {target}: {state.phase}"
    )
    if not state.ours:
        text += f", intercepted by {state.client} since {since_text(state.since_unix_ms)}"
    if state.phase == WAITING:
        text += f" ({state.agents_intercepting} of {state.agents_live} agents)"
    if state.error:
        text += f": {state.error}"
    if state.mount:
        text += f"; volumes at {state.mount}"
    elif state.mount_error:
        text += f"; volumes not mounted: {state.mount_error}"
    return text


def volumes_line(state: pb.InterceptState, mount: str) -> str:
    """What became of the pod's volumes, after ``tether intercept --mount MOUNT``."""
    if state.mount:
        return f"volumes mounted at {state.mount}"
    if state.mount_error:
        return f"volumes not mounted: {state.mount_error} (the intercept holds without them)"
    return "volumes: not mounted" + (f" (--mount {mount})" if mount else "")
