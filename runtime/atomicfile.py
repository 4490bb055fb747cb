"""Replace a file's contents atomically: a reader sees the old file or the new one, never half of either.

``write_atomic(path, data)`` writes ``data`` to a new file beside ``path`` and renames it over ``path``.
The temporary file is created exclusively (``O_EXCL``, never through a link someone left at its name) in
the same directory, so the rename stays on one filesystem; on any failure it is removed and the original
error raised, and ``path`` is as it was.

* ``mode``: the new file's permissions, set exactly (the umask does not narrow them) before any data is
  written, so a secret is never readable by others, not even for a moment. None: as ``open()`` would
  create it (0666 less the umask).
* ``fsync`` (on by default): the data, and then the rename (the directory), reach the disk before the
  call returns, so a crash right after it leaves the new contents rather than an empty file. Off for
  files that mean nothing after a reboot (a process's "ready" marker).
* ``make_parents``: create missing parent directories first; ``parents_mode`` is the mode of the last
  one (the others get the default, as ``mkdir -p`` does).

Text is written as ``encoding`` without newline translation, so a file has the same bytes on every OS.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    mode: int | None = None,
    fsync: bool = True,
    make_parents: bool = False,
    parents_mode: int = 0o777,
    encoding: str = "utf-8",
) -> None:
    """Make ``path`` hold exactly ``data`` (``str`` is encoded with ``encoding``); see the module docstring."""
    target = Path(path)
    content = data.encode(encoding) if isinstance(data, str) else bytes(data)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True, mode=parents_mode)
    fd, temporary = _create_beside(target, 0o666 if mode is None else 0o600)
    try:
        try:
            if mode is not None:
                _chmod(fd, temporary, mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if fsync:
        _sync_directory(target.parent)


def _create_beside(target: Path, mode: int) -> tuple[int, Path]:
    # A dot name keeps the file out of directory listings and globs such as *.json while it exists.
    for _ in range(100):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temporary, _CREATE, mode), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {target}: every name tried exists")


def _chmod(fd: int, temporary: Path, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # Windows before Python 3.13; it knows only the read-only bit anyway
        os.chmod(temporary, mode)


def _sync_directory(directory: Path) -> None:
    # Not every platform or filesystem lets a directory be opened or synced (Windows, some network
    # filesystems); the data itself is on disk by now, so this part is best effort.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
