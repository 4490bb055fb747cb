"""What the lab created, written as it is created, so `down` (or the next `up` after a crash) can
undo it. The journal is a JSON file in the state directory; writes are atomic (write + rename).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether.runtime.atomicfile import write_atomic

JOURNAL_VERSION = 1
BUILDING = "building"
UP = "up"


@dataclass
class ProcessRecord:
    name: str
    netns: str
    pid: int
    #: process start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused PID apart
    start_time: int
    argv: list[str]
    log: str = ""
    ready_file: str = ""


@dataclass
class Journal:
    options: dict[str, Any] = field(default_factory=dict)
    state: str = BUILDING
    namespaces: list[str] = field(default_factory=list)
    etc_dirs: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    version: int = JOURNAL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Journal:
        if data.get("version") != JOURNAL_VERSION:
            raise ValueError(f"unknown journal version {data.get('version')!r}")
        return cls(
            options=dict(data.get("options", {})),
            state=str(data.get("state", BUILDING)),
            namespaces=list(data.get("namespaces", [])),
            etc_dirs=list(data.get("etc_dirs", [])),
            processes=[ProcessRecord(**p) for p in data.get("processes", [])],
            notes=list(data.get("notes", [])),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, text: str) -> Journal:
        return cls.from_dict(json.loads(text))

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


class JournalFile:
    """The journal on disk. `record` saves after every change, so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Journal | None:
        """The journal, or None if there is none or it is unreadable (a crash mid-write)."""
        try:
            return Journal.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            return None

    def save(self, journal: Journal) -> None:
        write_atomic(self.path, journal.dumps(), make_parents=True)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
