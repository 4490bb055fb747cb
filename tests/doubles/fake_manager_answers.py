"""A manager link that answers every DNS lookup with what a test (or fuzzer) gave it, for the session's lookup."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeAnswerLink:
    rcode: int = 0
    answers: list[bytes] = field(default_factory=list)
    asked: list[tuple[str, int]] = field(default_factory=list)
    #: whose pod each lookup was asked of (None: the manager's), in order
    vias: list[tuple[str, str, str] | None] = field(default_factory=list)

    async def lookup_dns(
        self, name: str, qtype: int, via: tuple[str, str, str] | None = None
    ) -> tuple[int, list[bytes]]:
        self.asked.append((name, qtype))
        self.vias.append(via)
        return self.rcode, list(self.answers)
