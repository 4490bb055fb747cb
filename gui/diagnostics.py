"""The "Copy diagnostics" report: what a bug report needs, and no secrets.

``diagnostics_text(state, events, versions)`` is pure. It reads only what the helper's ``State`` says
(which never holds a kubeconfig or a token) plus the tray's recent events, and passes the whole text
through ``scrub`` anyway, because event texts and error messages come from elsewhere: a bearer token, a
JWT or a ``token: ...`` pair that slipped into one is masked. ``collect_versions()`` gathers the versions.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping, Sequence

from tether.gui import state_summary
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution

MASK = "[redacted]"

_SECRETS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # a JWT (service-account tokens)
    re.compile(r"(?i)(bearer\s+)\S+"),
    re.compile(r"(?i)((?:token|password|secret|client-key-data)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
)


def scrub(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by [redacted]."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def collect_versions() -> dict[str, str]:
    """Versions of Tether, Qt/PySide6, Python and the OS, as shown in the report."""
    from importlib import metadata

    versions: dict[str, str] = {}
    try:
        versions["tether"] = metadata.version("tether")
    except metadata.PackageNotFoundError:
        versions["tether"] = "unknown (not installed)"
    try:
        import PySide6
        from PySide6 import QtCore

        versions["PySide6"] = PySide6.__version__
        versions["Qt"] = QtCore.qVersion()
    except ImportError:
        versions["PySide6"] = "not installed"
    versions["Python"] = f"{platform.python_implementation()} {sys.version.split()[0]}"
    versions["OS"] = platform.platform()
    return versions


def diagnostics_text(
    state: pb.State,
    events: Sequence[str],
    versions: Mapping[str, str],
    resolution: Resolution | None = None,
) -> str:
    lines = ["Tether diagnostics", "", "Versions:"]
    lines += [f"  {name}: {value}" for name, value in versions.items()]
    lines += ["", "Connection:"]
    fields = [
        ("phase", state_summary.phase_name(state)),
        ("cluster", state.cluster),
        ("server", state.server),
        ("namespace", state.namespace),
        ("client version", state_summary.client_version(state)),
        ("manager version", state_summary.manager_version(state)),
        ("connected since", state_summary.connected_since(state)),
        ("TUN device", state.tun_device),
        ("DNS mode", state.dns_mode),
        ("DNS mode chosen", state.dns_mode_reason),
        ("DNS probes", "; ".join(state.dns_probes)),
        ("DNS server", state.dns_server),
        ("cluster domain", state.cluster_domain),
        ("DNS to the cluster", " ".join(state.dns_include_suffixes)),
        ("DNS never to the cluster", " ".join(state.dns_exclude_suffixes)),
        ("virtual subnet", state.virtual_subnet),
        ("never-proxy", ", ".join(state.never_proxy)),
        ("last error", state.last_error),
    ]
    lines += [f"  {name}: {value}" for name, value in fields if value]
    lines += ["", "Routed subnets:"]
    lines += [f"  {line}" for line in state_summary.routed_lines(state)] or ["  (none)"]
    lines += ["", "Conflicts and resolutions:"]
    resolved = state_summary.resolution_lines(state, resolution)
    lines += [f"  {state_summary.format_resolution_line(line)}" for line in resolved] or ["  (none)"]
    if resolution is not None and not resolution.empty:
        lines.append(f"  remembered choice: {resolution.describe()}")
    lines += ["", "Recent events:"]
    lines += [f"  {event}" for event in events] or ["  (none)"]
    return scrub("\n".join(lines) + "\n")
