"""The mount point for a pod's volumes: checked, created for the user when missing, or a new temporary one.

The helper is root and acts for the user who asked, so it decides as that user would be allowed to: an
existing directory must be the user's to write (owner, group or other write bit), a missing one must have a
nearest existing parent the user may write, in which the helper creates it and hands it to the user. It must
be absolute, not already a mount point (mounting over a mount hides it) and empty (mounting over files hides
them). Every refusal names the directory.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tether.helper.root.volumes.sshfs import Owner, mounted_at


class MountDirError(ValueError):
    """The mount point cannot be used; the text names it and why."""


@dataclass(frozen=True)
class MountDir:
    path: Path
    #: directories the helper created (deepest last), removed again after unmount
    created: tuple[Path, ...] = ()


def may_write(st: os.stat_result, owner: Owner, groups: tuple[int, ...] = ()) -> bool:
    """Whether ``owner`` (with supplementary ``groups``) may create entries in a directory with stat ``st``."""
    if owner.uid == 0:
        return True
    if st.st_uid == owner.uid:
        return bool(st.st_mode & stat.S_IWUSR and st.st_mode & stat.S_IXUSR)
    if st.st_gid == owner.gid or st.st_gid in groups:
        return bool(st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IWOTH and st.st_mode & stat.S_IXOTH)


def _mounts_text() -> str:
    try:
        return Path("/proc/self/mounts").read_text()
    except OSError:
        return ""


def prepare(requested: str, owner: Owner, temp_root: Path | None = None) -> MountDir:
    """The mount point to use: ``requested`` (checked, created if missing) or, when empty, a new temporary
    directory owned by ``owner``. Raises MountDirError naming the directory."""
    if not requested:
        path = Path(tempfile.mkdtemp(prefix="tether-volumes-", dir=temp_root))
        os.chown(path, owner.uid, owner.gid)
        return MountDir(path, (path,))
    path = Path(requested)
    if not path.is_absolute():
        raise MountDirError(f'mount point "{requested}" is not an absolute path')
    path = Path(os.path.normpath(path))
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise MountDirError(f'mount point "{path}" exists and is not a directory')
        if os.path.ismount(path) or mounted_at(_mounts_text(), path):
            raise MountDirError(f'mount point "{path}" is already a mount point')
        if not may_write(path.stat(), owner):
            raise MountDirError(f'mount point "{path}" is not writable by uid {owner.uid}')
        if any(path.iterdir()):
            raise MountDirError(f'mount point "{path}" is not empty (mounting there would hide its files)')
        return MountDir(path)
    missing = [path]
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise MountDirError(f'mount point "{path}": "{parent}" is not a directory')
    if not may_write(parent.stat(), owner):
        raise MountDirError(f'mount point "{path}" cannot be created: "{parent}" is not writable by uid {owner.uid}')
    created = []
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        os.chown(directory, owner.uid, owner.gid)
        created.append(directory)
    return MountDir(path, tuple(created))


def remove_created(mount_dir: MountDir) -> None:
    """Take away the directories :func:`prepare` created, deepest first, if they are empty again."""
    for directory in reversed(mount_dir.created):
        try:
            directory.rmdir()
        except OSError:
            return
