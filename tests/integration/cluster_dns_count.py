"""How many queries the lab's cluster DNS (dnsmasq in kube-system/coredns-0) has received so far.

dnsmasq writes its statistics to its log (the lab keeps its stderr in the process's log file) when it gets
SIGUSR1: "queries forwarded N, queries answered locally M". Every query it gets is one or the other (its
own records, NXDOMAIN for the cluster domain and cache hits are "answered locally"; the rest is forwarded),
so their sum counts every query that reached the cluster DNS, without logging each query during the run.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tether.lab import procs
from tether.lab.journal import JournalFile

CLUSTER_DNS = "pod/kube-system/coredns-0"
_STATS = re.compile(r"queries forwarded (\d+), queries answered locally (\d+)")


def totals(log_text: str) -> list[int]:
    """The query totals of every statistics dump in a dnsmasq log, oldest first."""
    return [int(forwarded) + int(local) for forwarded, local in _STATS.findall(log_text)]


def cluster_dns_queries(journal_file: JournalFile, timeout: float = 10.0) -> int:
    """Queries the cluster DNS has received since it started (asks it for a statistics dump and reads it)."""
    journal = journal_file.load()
    record = journal.process(CLUSTER_DNS) if journal else None
    if record is None or not procs.is_running(record.pid, record.start_time) or not record.log:
        raise AssertionError(f"the lab's cluster DNS ({CLUSTER_DNS}) is not running")
    log = Path(record.log)
    dumps = len(totals(log.read_text(errors="replace")))
    os.kill(record.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while True:
        found = totals(log.read_text(errors="replace"))
        if len(found) > dumps:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster DNS (pid {record.pid}) wrote no statistics to {log} in {timeout:.0f}s")
        time.sleep(0.05)
