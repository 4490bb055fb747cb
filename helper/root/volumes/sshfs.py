"""The sshfs and fusermount commands for a pod's volumes. Pure.

sshfs runs in passive mode (``-o passive``): it speaks SFTP on its stdin and stdout, which the helper joins to
a tunnel stream, so no SSH, no key and no listening socket on this machine is involved. It runs in the
foreground (``-f``) as the helper's child, so the helper knows its PID and sees it end.

The helper is root, the files are for the user who asked: ``uid``/``gid`` show every file as theirs,
``allow_other`` with ``default_permissions`` and ``umask=077`` lets the kernel admit that user and nobody
else (root may use allow_other without /etc/fuse.conf's user_allow_other). ``fsname`` marks the mount as
Tether's (the first field of /proc/mounts), which lets cleanup find it without a journal.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

#: The source field of Tether's sshfs mounts starts with this (fsname=tether-volumes:NAMESPACE/NAME).
FSNAME_PREFIX = "tether-volumes:"
#: The filesystem type sshfs mounts show in /proc/mounts.
FSTYPE = "fuse.sshfs"


@dataclass(frozen=True)
class Owner:
    """Who the mount is for: the calling user."""

    uid: int
    gid: int


def fsname(namespace: str, name: str) -> str:
    return f"{FSNAME_PREFIX}{namespace}/{name}"


def sshfs_argv(target: Path, owner: Owner, source: str, binary: str = "sshfs") -> list[str]:
    """sshfs in the foreground on its stdin/stdout, mounting the SFTP session's start directory (the agent
    starts it in the volumes' root) at ``target`` for ``owner``."""
    options = [
        "passive",
        f"fsname={source}",
        f"uid={owner.uid}",
        f"gid={owner.gid}",
        "allow_other",
        "default_permissions",
        "umask=077",
    ]
    # passive ignores the host; the empty path is the session's start directory
    return [binary, "-f", "-o", ",".join(options), "pod:", str(target)]


def fusermount() -> str:
    """fusermount3 (FUSE 3, which sshfs 3 uses), else fusermount."""
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def unmount_argv(target: Path, lazy: bool = False, binary: str = "") -> list[str]:
    """Unmount ``target``; ``lazy`` detaches it now even while something still has files open in it."""
    return [binary or fusermount(), "-uz" if lazy else "-u", str(target)]


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """(source, mount point, type) of each line of /proc/mounts, with its octal escapes (``\\040``) undone."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return out


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def tether_mounts(text: str) -> list[Path]:
    """Mount points of Tether's sshfs mounts in a /proc/mounts text."""
    found = parse_mounts(text)
    return [Path(point) for source, point, kind in found if kind == FSTYPE and source.startswith(FSNAME_PREFIX)]


def mounted_at(text: str, target: Path) -> bool:
    """Whether a /proc/mounts text has something mounted at ``target``."""
    return any(Path(point) == target for _, point, _ in parse_mounts(text))
