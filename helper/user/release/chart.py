"""Where the traffic-manager's Helm chart is, and its version as Helm wants it (semver)."""

from __future__ import annotations

import re
from pathlib import Path

#: The chart in a source tree (packaging/helm/tether-manager beside helper/); an installed tether ships it
#: at the same place relative to tether.helper (package data, as the tray's icons).
CHART_DIR = Path(__file__).resolve().parents[3] / "packaging" / "helm" / "tether-manager"
CHART_NAME = "tether-manager"
DEFAULT_NAMESPACE = "tether"
RELEASE_NAME = "tether-manager"

_PEP440 = re.compile(
    r"^(?P<release>\d+(?:\.\d+)*)(?:(?P<pre>a|b|rc)(?P<pre_n>\d+))?(?:\.post(?P<post>\d+))?"
    r"(?:\.dev(?P<dev>\d+))?(?:\+(?P<local>[a-z0-9.]+))?$"
)


def semver_of(version: str) -> str:
    """A Python package version (PEP 440) as a SemVer 2 version Helm accepts: ``0.1.0.dev3+g1a2b`` ->
    ``0.1.0-dev.3+g1a2b``; ``1.2rc1`` -> ``1.2.0-rc.1``. Raises ValueError naming a version it cannot map."""
    match = _PEP440.match(version.strip().lower())
    if match is None:
        raise ValueError(f'version "{version}" is not a PEP 440 version this chart can carry')
    numbers = [int(n) for n in match["release"].split(".")]
    if len(numbers) > 3:
        raise ValueError(f'version "{version}" has more than three release numbers')
    core = ".".join(str(n) for n in [*numbers, 0, 0][:3])
    pre = []
    if match["pre"]:
        pre.append(f"{match['pre']}.{int(match['pre_n'])}")
    if match["post"]:
        pre.append(f"post.{int(match['post'])}")
    if match["dev"]:
        pre.append(f"dev.{int(match['dev'])}")
    text = core + ("-" + ".".join(pre) if pre else "")
    return text + (f"+{match['local']}" if match["local"] else "")
