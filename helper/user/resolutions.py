"""How the user resolved a cluster's VPN conflict, remembered per kubeconfig context for the next connect.

Client-side and per user (platformdirs' config directory): the CLI and the tray read and write it; the
helper never sees the file. Keyed by context name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from tether.helper.api import helper_pb2 as pb
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.resolutions")

FILE_NAME = "resolutions.json"


@dataclass(frozen=True)
class Resolution:
    allow_conflicting_subnets: tuple[str, ...] = ()
    proxy_via: tuple[str, ...] = ()
    auto_resolve: bool = False

    @property
    def empty(self) -> bool:
        return not (self.allow_conflicting_subnets or self.proxy_via or self.auto_resolve)

    def describe(self) -> str:
        parts = [f"--allow-conflicting-subnets {cidr}" for cidr in self.allow_conflicting_subnets]
        parts += [f"--proxy-via {value}" for value in self.proxy_via]
        if self.auto_resolve:
            parts.append("--auto-resolve")
        return " ".join(parts) or "none"

    @classmethod
    def of_request(cls, request: pb.ConnectRequest) -> Resolution:
        """The resolution a request carries (its conflict flags)."""
        return cls(tuple(request.allow_conflicting_subnets), tuple(request.proxy_via), request.auto_resolve)

    def apply_to(self, request: pb.ConnectRequest) -> None:
        request.allow_conflicting_subnets.extend(self.allow_conflicting_subnets)
        request.proxy_via.extend(self.proxy_via)
        request.auto_resolve = request.auto_resolve or self.auto_resolve

    @classmethod
    def from_json(cls, data: object) -> Resolution | None:
        if not isinstance(data, dict):
            return None
        allow, via, auto = (
            data.get("allow_conflicting_subnets", []),
            data.get("proxy_via", []),
            data.get("auto_resolve"),
        )
        if not (isinstance(allow, list) and isinstance(via, list) and isinstance(auto, bool | None)):
            return None
        if not all(isinstance(x, str) for x in [*allow, *via]):
            return None
        return cls(tuple(allow), tuple(via), bool(auto))


def default_path() -> Path:
    return platformdirs.user_config_path("tether") / FILE_NAME


class ResolutionStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, context: str) -> Resolution | None:
        resolution = Resolution.from_json(self._load().get(context))
        return None if resolution is None or resolution.empty else resolution

    def remember(self, context: str, resolution: Resolution) -> None:
        data = self._load()
        if resolution.empty:
            data.pop(context, None)
        else:
            data[context] = {**asdict(resolution), "proxy_via": list(resolution.proxy_via)}
        self._save(data)

    def forget(self, context: str) -> None:
        self.remember(context, Resolution())

    def _save(self, data: dict[str, object]) -> None:
        # Private to the user: it names their clusters, subnets and workloads.
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True), mode=0o600, make_parents=True)


def connect_remembering(
    request: pb.ConnectRequest,
    run: Callable[[pb.ConnectRequest], pb.State],
    store: ResolutionStore,
    *,
    forget: bool = False,
    on_remembered: Callable[[Resolution], None] | None = None,
) -> pb.State:
    """Connect with ``run`` so that the CLI and the tray treat remembered resolutions alike.

    A request that carries no resolution of its own gets the one remembered for its context (reported
    through ``on_remembered`` before ``run``); ``forget`` drops the remembered one instead. A resolution
    the request carried is remembered once ``run`` returns a connected state: the user chose it and it
    worked, so the next connect to that cluster needs no choosing. Errors from ``run`` propagate and
    remember nothing.
    """
    given = Resolution.of_request(request)
    if forget:
        store.forget(request.context)
    elif given.empty and (remembered := store.get(request.context)) is not None:
        remembered.apply_to(request)
        if on_remembered is not None:
            on_remembered(remembered)
    state = run(request)
    if state.phase == pb.State.CONNECTED and not given.empty:
        store.remember(request.context, given)
    return state
