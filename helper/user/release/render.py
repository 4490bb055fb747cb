"""The chart rendered by Helm itself (helm-python-sdk embeds it; no helm binary), offline.

Each source of values (a --values file, a --set) is checked against the chart's values.schema.json on its own,
so an error names the flag that brought the bad value; then the merged values are checked and rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.helper.user.release.chart import CHART_DIR, RELEASE_NAME
from tether.helper.user.release.plan import objects_from_manifests
from tether.helper.user.release.values import ValuesError


class ChartUnavailableError(RuntimeError):
    """Helm (helm-python-sdk) or the chart is not installed."""


@dataclass(frozen=True)
class Rendered:
    chart_version: str
    app_version: str
    values: dict[str, Any]  # what the user gave (recorded), not the chart's defaults
    objects: list[dict[str, Any]]


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        raise ChartUnavailableError(
            "rendering the traffic-manager's chart needs Helm's Python SDK: pip install 'tether[chart]'"
        ) from None
    return helm_python


def render(
    values: Mapping[str, Any], namespace: str, sources: Mapping[str, Mapping[str, Any]], chart_dir: Path = CHART_DIR
) -> Rendered:
    """Check every source (``--set a=b`` -> its values) and the merged ``values``, then render for ``namespace``."""
    helm = _helm()
    if not (chart_dir / "Chart.yaml").is_file():
        raise ChartUnavailableError(f"the traffic-manager's chart is not at {chart_dir}")
    with helm.Chart.load(chart_dir) as chart:
        for name, layer in sources.items():
            try:
                chart.validate_schema(dict(layer))
            except helm.HelmValuesError as exc:
                raise ValuesError(f"{name}: {_problem(exc)}") from None
        try:
            chart.validate_schema(dict(values))
            manifests = chart.render(dict(values), name=RELEASE_NAME, namespace=namespace, is_install=True)
        except helm.HelmValuesError as exc:
            raise ValuesError(f"invalid values: {_problem(exc)}") from None
        meta = chart.metadata
    return Rendered(
        chart_version=str(meta.get("version")),
        app_version=str(meta.get("appVersion") or meta.get("app_version") or ""),
        values=dict(values),
        objects=objects_from_manifests(manifests, namespace),
    )


def _problem(exc: Exception) -> str:
    # Helm words it "tether-manager:\n- at '/client': additional properties 'x' not allowed"
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    return "; ".join(line for line in lines if not line.endswith(":")) or str(exc)
