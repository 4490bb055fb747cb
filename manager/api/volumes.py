"""The pod's volumes as the tether-agent serves them: where the sidecar mounts them and on which port. Pure.

Both ends agree on this module: the injector (:mod:`tether.manager.api.sidecar`) gives the agent container
each app container's ``volumeMounts`` again, re-rooted under :data:`VOLUMES_ROOT` (``/data`` becomes
``/tether/volumes/data``), as the reference implementation does; the agent serves that one tree with SFTP on
the pod's loopback, port :data:`SFTP_PORT`; the helper reaches that port through a stream dialed by the
workload's agent (the --proxy-via path, which dials the pod's own loopback) and mounts the tree with sshfs.

Re-rooting rather than serving the app container's paths: the agent is another container with a filesystem
of its own, and one root holding every mount is what an SFTP start directory can serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

#: Where the agent container sees the app containers' volumes.
VOLUMES_ROOT = PurePosixPath("/tether/volumes")
#: The agent's SFTP port on the pod's loopback (never the pod IP: volumes are not for the cluster to read).
#: High and unusual, so that it does not meet an app's own loopback port.
SFTP_PORT = 47022


class VolumeMountError(ValueError):
    """A container's volumeMount cannot be re-rooted; the text names it."""


def reroot(mount_path: str, root: PurePosixPath = VOLUMES_ROOT) -> str:
    """``mount_path`` (absolute, without ``..``) under ``root``: ``/var/data/`` -> ``/tether/volumes/var/data``."""
    path = PurePosixPath(mount_path)
    if not path.is_absolute() or ".." in path.parts or path == PurePosixPath("/"):
        raise VolumeMountError(f'volumeMount path "{mount_path}" is not an absolute path below /')
    return str(root.joinpath(*path.parts[1:]))


def agent_volume_mounts(
    containers: Iterable[Mapping[str, Any]], skip_volumes: Iterable[str] = (), skip_containers: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The volumeMounts the agent container gets: every app container's mounts, re-rooted, in the order the
    containers list them. A path two containers mount is taken from the first (one mount point, one volume).
    ``skip_volumes`` (the agent's own token) and ``skip_containers`` (the agent itself) are left out."""
    skipped_volumes, skipped_containers = set(skip_volumes), set(skip_containers)
    out: dict[str, dict[str, Any]] = {}
    for container in containers:
        if container.get("name") in skipped_containers:
            continue
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") in skipped_volumes:
                continue
            path = reroot(str(mount.get("mountPath", "")))
            if path in out:
                continue
            entry = {"name": mount["name"], "mountPath": path}
            for key in ("subPath", "readOnly"):
                if key in mount:
                    entry[key] = mount[key]
            out[path] = entry
    return list(out.values())
