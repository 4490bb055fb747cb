"""tether.runtime.atomicfile.write_atomic: all or nothing, the mode set before the data, no temporary left."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from tether.runtime import atomicfile
from tether.runtime.atomicfile import write_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test (write_atomic's default mode follows it)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(saved)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_contents_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("old contents that are longer than the new ones\n")
    write_atomic(path, "new\n")
    assert path.read_bytes() == b"new\n"
    write_atomic(path, b"\x00\xffbytes")
    assert path.read_bytes() == b"\x00\xffbytes"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_text_is_encoded_without_newline_translation(tmp_path):
    path = tmp_path / "f"
    write_atomic(path, "grüße\r\nline\n")
    assert path.read_bytes() == "grüße\r\nline\n".encode()
    write_atomic(path, "grüße", encoding="latin-1")
    assert path.read_bytes() == "grüße".encode("latin-1")


def test_the_mode_is_set_exactly_whatever_the_umask(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "shared"
    write_atomic(path, "x", mode=0o644)
    assert mode_of(path) == 0o644
    umask(0o000)
    write_atomic(path, "x", mode=0o600)
    assert mode_of(path) == 0o600


def test_without_a_mode_the_file_is_created_as_open_would(tmp_path, umask):
    umask(0o022)
    write_atomic(tmp_path / "a", "x")
    assert mode_of(tmp_path / "a") == 0o644
    umask(0o077)
    write_atomic(tmp_path / "b", "x")
    assert mode_of(tmp_path / "b") == 0o600


def test_a_private_file_is_never_readable_by_others_while_written(tmp_path, umask, monkeypatch):
    umask(0o000)
    seen: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(atomicfile.os, "write", spying_write)
    write_atomic(tmp_path / "token", "secret", mode=0o600)
    assert seen and all(mode == 0o600 for mode in seen)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "journal.json"
    path.write_text("old")
    calls = []

    def failing_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return os.pwrite(fd, bytes(data[:3]), 0)  # a short write: the loop must come back for the rest

    monkeypatch.setattr(atomicfile.os, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new contents")
    assert calls == [len("new contents"), len("new contents") - 3]
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    path = tmp_path / "a-directory"
    path.mkdir()
    with pytest.raises(OSError):
        write_atomic(path, "x")
    assert path.is_dir()
    assert leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomicfile.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "f", "x")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_an_error_unless_asked_to_create_it(tmp_path, umask):
    path = tmp_path / "config" / "tether" / "tray.json"
    with pytest.raises(FileNotFoundError):
        write_atomic(path, "x")
    assert not (tmp_path / "config").exists()
    umask(0o000)
    write_atomic(path, "x", make_parents=True, parents_mode=0o700)
    assert path.read_text() == "x"
    assert mode_of(path.parent) == 0o700
    assert mode_of(path.parent.parent) == 0o777  # only the last one gets parents_mode, as with mkdir -p
    write_atomic(path, "y", make_parents=True, parents_mode=0o700)  # existing directories are fine
    assert path.read_text() == "y"


def test_fsync_syncs_the_file_and_then_the_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(atomicfile.os, "fsync", recording_fsync)
    write_atomic(tmp_path / "f", "x")
    assert synced == ["file", "directory"]
    synced.clear()
    write_atomic(tmp_path / "ready", "x", fsync=False)
    assert synced == []


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me")
    path = tmp_path / "f"
    path.symlink_to(elsewhere)
    write_atomic(path, "new")
    assert not path.is_symlink() and path.read_text() == "new"
    assert elsewhere.read_text() == "keep me"


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(atomicfile.secrets, "token_hex", lambda n: next(names))
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    victim.chmod(0o644)
    planted = tmp_path / ".f.planted.tmp"
    planted.symlink_to(victim)
    write_atomic(tmp_path / "f", "new", mode=0o600)
    assert (tmp_path / "f").read_text() == "new"
    assert victim.read_text() == "keep me" and mode_of(victim) == 0o644
    assert planted.is_symlink()  # not ours to remove


def test_readers_see_the_old_or_the_new_contents_never_a_mix(tmp_path):
    path = tmp_path / "state"
    old, new = b"a" * 1_000_000, b"b" * 1_000_000
    write_atomic(path, old, fsync=False)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            seen.add(data if data in (old, new) else b"torn:" + data[:16])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            write_atomic(path, new if i % 2 == 0 else old, fsync=False)
    finally:
        stop.set()
        reader.join(10)
    assert seen <= {old, new}, sorted(s[:20] for s in seen)
    assert leftovers(tmp_path) == []
