"""The memory report's grouping of /proc/PID/smaps, and a real report of this process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tether.helper.root.vif.memreport import resident_mb, summarize_smaps, write_report

SMAPS = """\
55d0c0000000-55d0c1000000 rw-p 00000000 00:00 0                          [heap]
Size:              16384 kB
Rss:                2000 kB
7f6ea1600000-7f6ea1800000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                1500 kB
7f6ea1900000-7f6ea1a00000 rw-p 00000000 00:00 0
Rss:                 500 kB
7f6ed85fd000-7f6ed893e000 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6
Rss:                 700 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 100 kB
"""


def test_groups_resident_memory_by_kind_of_mapping() -> None:
    assert summarize_smaps(SMAPS) == {"heap": 2.0, "anon": 2.0, "file": 0.7, "other": 0.1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_writes_allocator_statistics_of_this_process(tmp_path: Path) -> None:
    path = write_report(tmp_path / "reports", "a test")
    text = path.read_text()
    assert text.startswith("a test\nresident MB by kind: {'heap': ")
    assert "# arenas allocated current" in text  # pymalloc's statistics reached the file, not stderr
    assert "<malloc version=" in path.with_suffix(".malloc_info.xml").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_resident_memory_is_what_the_kernel_reports() -> None:
    status = Path("/proc/self/status").read_text()
    vmrss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    resident = resident_mb()
    assert resident is not None
    assert abs(resident - vmrss_kb * 1024 / 1e6) < 2.0  # read a moment apart
