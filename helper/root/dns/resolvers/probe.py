"""Gathering the facts `choose_mode()` decides on (the I/O half of choosing a resolver mode)."""

from __future__ import annotations

import sys
from pathlib import Path

from tether.helper.root.dns.resolvers.choose import Probes


def probe_host(root: Path = Path("/"), platform: str = sys.platform) -> Probes:
    """Read the probes below `root` (a test passes a temp dir laid out like a host)."""
    try:
        resolv_conf: str | None = (root / "etc/resolv.conf").read_text()
    except OSError:
        resolv_conf = None
    return Probes(platform, resolv_conf, (root / "run/systemd/resolve").is_dir())
