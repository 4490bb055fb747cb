"""The intercepts' :class:`~tether.helper.root.intercept.volumes.VolumeMounter`: each intercept's pod volumes
mounted with sshfs over a stream its workload's agent dials (:mod:`tether.helper.root.volumes.mount`).

``--mount DIR`` mounts at DIR, no ``--mount`` at a new temporary directory, ``--mount false`` nowhere. A mount
that fails raises :class:`VolumesNotMounted` with the reason: the intercept goes on without volumes (its traffic
is what the user asked for first), and the reason stays on the intercept for ``tether status`` and the tray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.intercept.volumes import VolumesNotMounted
from tether.helper.root.journal import Journal
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.volumes.mount import VolumeMount, VolumeMountError, agent_stream, mount_pod_volumes
from tether.helper.root.volumes.sshfs import Owner

log = logging.getLogger("tether.helper.root.intercept")

#: ``--mount`` values that ask for no mount
NO_MOUNT = frozenset({"false", "no", "off"})


def mount_target(mount: str) -> str | None:
    """Where ``--mount`` asks for the volumes: None for no mount, "" for a new temporary directory, else DIR."""
    value = mount.strip()
    if value.lower() in NO_MOUNT:
        return None
    return value


class PodVolumes:
    """Mounts for the intercepts of one connection, as the user who made it (``owner``)."""

    def __init__(self, opener: TunnelOpener, owner: Owner, journal: Callable[[], Journal | None]) -> None:
        self._opener = opener
        self._owner = owner
        self._journal = journal  # the connection's journal exists only once its device is up
        self._mounts: dict[tuple[str, str], VolumeMount] = {}

    async def mount(self, intercept: pb.InterceptState, mount: str) -> str:
        target = mount_target(mount)
        if target is None:
            return ""
        workload = (intercept.namespace, intercept.workload, intercept.kind)
        try:
            mounted = await mount_pod_volumes(
                agent_stream(self._opener, workload), workload, target, self._owner, self._journal()
            )
        except VolumeMountError as exc:
            raise VolumesNotMounted(str(exc)) from None
        self._mounts[(intercept.namespace, intercept.workload)] = mounted
        return str(mounted.path)

    async def unmount(self, intercept: pb.InterceptState) -> None:
        mounted = self._mounts.pop((intercept.namespace, intercept.workload), None)
        if mounted is not None:
            await mounted.unmount()
