"""A stand-in ``WorkloadSource`` (``tether.gui.workloads``) for the conflict dialog's workload picker."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from tether.gui.workloads import WorkloadError


class FakeWorkloadSource:
    """Fixed answers per context, an error to raise, and a gate to hold calls.

    ``calls`` records (context, called on the main thread?), so a test can check the GUI thread never
    blocks on the network; clear ``release`` to hold calls until the test sets it again.
    """

    def __init__(self, workloads: Mapping[str, list[str]] | None = None, error: str = "") -> None:
        self.workloads = dict(workloads or {})
        self.error = error
        self.calls: list[tuple[str, bool]] = []
        self.release = threading.Event()
        self.release.set()

    def list_workloads(self, context: str) -> list[str]:
        self.calls.append((context, threading.current_thread() is threading.main_thread()))
        self.release.wait(10)
        if self.error:
            raise WorkloadError(self.error)
        return sorted(self.workloads.get(context, []))
