"""A configurator that only records what it was asked, for unit tests of its callers."""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.helper.root.dns.resolvers.base import IPAddress, ResolverError, ResolverSettings


@dataclass
class FakeConfigurator:
    mode: str = "fake"
    crash_safety: str = "dies with the helper (fake)"
    nameservers: tuple[IPAddress, ...] = ()
    fail_apply: str = ""  # when set, apply() raises ResolverError with this text
    stale: bool = False  # what cleanup_stale() finds
    calls: list[tuple[str, object]] = field(default_factory=list)
    applied: ResolverSettings | None = None

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        self.calls.append(("upstream_nameservers", None))
        return self.nameservers

    def apply(self, settings: ResolverSettings) -> None:
        self.calls.append(("apply", settings))
        if self.fail_apply:
            raise ResolverError(self.fail_apply)
        self.applied = settings

    def revert(self) -> None:
        self.calls.append(("revert", None))
        self.applied = None

    def cleanup_stale(self) -> bool:
        self.calls.append(("cleanup_stale", None))
        found, self.stale = self.stale, False
        return found
