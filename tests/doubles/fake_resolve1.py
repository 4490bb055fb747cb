"""A stand-in for systemd-resolved's resolve1 Manager: records calls, can fail one, holds a DNS property."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeResolve1:
    servers: list[tuple[int, int, bytes]] = field(default_factory=list)  # the Manager's DNS property
    fail: str = ""  # the method that raises
    unreachable: bool = False  # every call raises, as without a bus
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)

    def call(self, method: str, signature: str, args: list[Any]) -> None:
        if self.unreachable:
            raise ConnectionError("no system bus")
        self.calls.append((method, args))
        if method == self.fail:
            raise RuntimeError(f"org.freedesktop.DBus.Error.AccessDenied: {method} refused")

    def dns_servers(self) -> list[tuple[int, int, bytes]]:
        if self.unreachable:
            raise ConnectionError("no system bus")
        return list(self.servers)

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]
