"""The user's clusters as the tray lists them: kubeconfig contexts, then clusters added in the app (no Qt).

Kubeconfig contexts come from ``--kubeconfig``, else ``$KUBECONFIG`` (several files joined by
``os.pathsep``; the first ``current-context`` wins), else ``~/.kube/config``, read by the same code that
builds connect requests (``tether.helper.user.kubeconfig``), so the menu never offers a context that a
connect could not find. Nothing here raises: a broken kubeconfig or settings file becomes a ``problems``
line that names the file and what is wrong, and the rest of the list still shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from tether.helper.user.kubeconfig import KubeconfigError, list_contexts


class Source(Enum):
    KUBECONFIG = "kubeconfig"
    ADDED = "added"  # added by hand in the tray (tether.gui.clusters)


@dataclass(frozen=True)
class Cluster:
    name: str
    source: Source = Source.KUBECONFIG
    current: bool = False  # the kubeconfig's current-context


@dataclass(frozen=True)
class ClusterList:
    clusters: tuple[Cluster, ...] = ()
    problems: tuple[str, ...] = ()  # one sentence per file that could not be read

    @property
    def current(self) -> Cluster | None:
        return next((c for c in self.clusters if c.current), None)

    def find(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)

    def names(self) -> list[str]:
        return [c.name for c in self.clusters]


class NamedCluster(Protocol):
    """What the tray needs of an added cluster (``tether.gui.clusters.AddedCluster``)."""

    @property
    def name(self) -> str: ...


AddedClusters = Callable[[], Sequence[NamedCluster]]


def default_added_clusters() -> Sequence[NamedCluster]:
    from tether.gui.cluster_store import added_clusters

    return added_clusters()


def load_clusters(
    kubeconfig: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    added: AddedClusters | None = default_added_clusters,
) -> ClusterList:
    """Every cluster the user can connect to; ``added`` None leaves out the clusters added in the app."""
    clusters: list[Cluster] = []
    problems: list[str] = []
    try:
        names, current = list_contexts(kubeconfig, environ)
    except KubeconfigError as exc:
        problems.append(str(exc))
    else:
        clusters.extend(Cluster(name, Source.KUBECONFIG, name == current) for name in names)
    if added is not None:
        try:
            extra = list(added())
        except Exception as exc:  # a bad settings file must not take the tray down; say what is wrong
            problems.append(str(exc) or type(exc).__name__)
        else:
            taken = {c.name for c in clusters}
            for cluster in extra:
                if cluster.name in taken:
                    problems.append(
                        f'the added cluster "{cluster.name}" has the same name as a kubeconfig context, which wins; '
                        "remove the added one and add it under another name"
                    )
                    continue
                taken.add(cluster.name)
                clusters.append(Cluster(cluster.name, Source.ADDED))
    return ClusterList(tuple(clusters), tuple(problems))
