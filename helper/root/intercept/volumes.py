"""The hook that mounts an intercepted pod's volumes on this machine (``tether intercept --mount``).

Filled by the volumes work (the agent serves the pod's volumes with SFTP, the helper mounts them with sshfs);
until then :data:`NO_VOLUMES` mounts nothing and says so, whatever ``--mount`` asks. ``mount`` gets the
intercept (its namespace, workload, and the agents' state) and the ``--mount`` value ("" = the default, a
temporary directory; "false" = no mount; else a directory) and returns where the volumes are ("" = nowhere);
``unmount`` is called when the intercept ends, and by ``close`` for whatever is still mounted.
"""

from __future__ import annotations

from typing import Protocol

from tether.helper.api import helper_pb2 as pb


class VolumeMounter(Protocol):
    async def mount(self, intercept: pb.InterceptState, mount: str) -> str: ...

    async def unmount(self, intercept: pb.InterceptState) -> None: ...


class NoVolumes:
    """Mounts nothing (the default until volumes exist)."""

    async def mount(self, intercept: pb.InterceptState, mount: str) -> str:
        return ""

    async def unmount(self, intercept: pb.InterceptState) -> None:
        return None


NO_VOLUMES: VolumeMounter = NoVolumes()
