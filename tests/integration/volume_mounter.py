"""A stand-in helper for the crash test: mounts a directory served by an SFTP service on 127.0.0.1:PORT at
TARGET for uid 65534, journalled in JOURNAL, prints the mount point, then waits to be killed.

python tests/integration/volume_mounter.py PORT TARGET JOURNAL
"""

from __future__ import annotations

import asyncio
import sys

from tests.doubles.socket_stream import SocketStream
from tether.helper.root.journal import Journal
from tether.helper.root.volumes.mount import mount_pod_volumes
from tether.helper.root.volumes.sshfs import Owner


async def main(port: int, target: str, journal: str) -> None:
    workload = ("default", "crash", "Deployment")
    mount = await mount_pod_volumes(lambda: SocketStream("127.0.0.1", port), workload, target, Owner(65534, 65534),
                                    Journal(journal))  # fmt: skip
    print(mount.path, mount.process.pid, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
