"""The hook that mounts an intercepted pod's volumes on this machine (``tether intercept --mount``).

A connection's intercepts use :class:`tether.helper.root.intercept.pod_volumes.PodVolumes` (the agent serves
the pod's volumes with SFTP, the helper mounts them with sshfs); :data:`NO_VOLUMES` mounts nothing. ``mount``
gets the intercept (its namespace, workload, and the agents' state) and the ``--mount`` value ("" = the
default, a temporary directory; "false" = no mount; else a directory) and returns where the volumes are
("" = nowhere), or raises :class:`VolumesNotMounted` with the reason: the intercept then goes on without its
volumes. ``unmount`` is called when the intercept ends, and by ``close`` for whatever is still mounted.
"""

from __future__ import annotations

from typing import Protocol

from tether.helper.api import helper_pb2 as pb


class VolumesNotMounted(Exception):
    """The volumes asked for could not be mounted; the text says where, for which workload, and why."""


class VolumeMounter(Protocol):
    async def mount(self, intercept: pb.InterceptState, mount: str) -> str: ...

    async def unmount(self, intercept: pb.InterceptState) -> None: ...


class NoVolumes:
    """Mounts nothing (a connection without a mounter)."""

    async def mount(self, intercept: pb.InterceptState, mount: str) -> str:
        return ""

    async def unmount(self, intercept: pb.InterceptState) -> None:
        return None


NO_VOLUMES: VolumeMounter = NoVolumes()
