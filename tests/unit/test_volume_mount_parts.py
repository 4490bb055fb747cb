"""The helper's side of pod volumes, without a mount: sshfs and fusermount commands, /proc/mounts parsing,
mount point checks, the journal record; and the agent's SFTP options."""

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from tether.helper.root.volumes import mountdir
from tether.helper.root.volumes.mount import journal_data
from tether.helper.root.volumes.sshfs import Owner, mounted_at, parse_mounts, sshfs_argv, tether_mounts, unmount_argv
from tether.manager.agent.main import build_parser, settings_from
from tether.manager.agent.sftp import find_sftp_server, server_argv

USER = Owner(1000, 1000)
MOUNTS = (
    "proc /proc proc rw 0 0\n"
    "tether-volumes:default/web /tmp/tether-volumes-ab fuse.sshfs rw,nosuid,nodev 0 0\n"
    "tether-volumes:default/web /home/a\\040b/mnt fuse.sshfs rw 0 0\n"
    "me@host:/x /mnt/other fuse.sshfs rw 0 0\n"
)


def test_sshfs_runs_passive_in_the_foreground_for_the_user_only():
    argv = sshfs_argv(Path("/tmp/m"), USER, "tether-volumes:default/web")
    assert argv[:2] == ["sshfs", "-f"] and argv[-2:] == ["pod:", "/tmp/m"]
    options = argv[argv.index("-o") + 1].split(",")
    assert options[0] == "passive" and "fsname=tether-volumes:default/web" in options
    assert {"uid=1000", "gid=1000", "allow_other", "default_permissions", "umask=077"} <= set(options)
    assert unmount_argv(Path("/tmp/m"), binary="fm") == ["fm", "-u", "/tmp/m"]
    assert unmount_argv(Path("/tmp/m"), lazy=True, binary="fm") == ["fm", "-uz", "/tmp/m"]


def test_tethers_sshfs_mounts_are_found_by_their_marker_with_escapes_undone():
    assert parse_mounts(MOUNTS)[2] == ("tether-volumes:default/web", "/home/a b/mnt", "fuse.sshfs")
    assert tether_mounts(MOUNTS) == [Path("/tmp/tether-volumes-ab"), Path("/home/a b/mnt")]
    assert mounted_at(MOUNTS, Path("/mnt/other")) and not mounted_at(MOUNTS, Path("/mnt"))


def _st(uid, gid, mode):
    return SimpleNamespace(st_uid=uid, st_gid=gid, st_mode=stat.S_IFDIR | mode)


def test_write_permission_is_judged_as_the_user_not_as_root():
    assert mountdir.may_write(_st(1000, 5, 0o700), USER)
    assert not mountdir.may_write(_st(1000, 5, 0o500), USER)
    assert not mountdir.may_write(_st(0, 0, 0o755), USER)
    assert mountdir.may_write(_st(0, 1000, 0o770), USER)
    assert mountdir.may_write(_st(0, 0, 0o1777), USER)  # /tmp
    assert mountdir.may_write(_st(0, 0, 0o700), Owner(0, 0))


def test_bad_mount_points_are_refused_by_name(tmp_path):
    with pytest.raises(mountdir.MountDirError, match='"rel/dir" is not an absolute path'):
        mountdir.prepare("rel/dir", USER)
    (tmp_path / "file").write_text("x")
    with pytest.raises(mountdir.MountDirError, match=f'"{tmp_path / "file"}" exists and is not a directory'):
        mountdir.prepare(str(tmp_path / "file"), USER)
    with pytest.raises(mountdir.MountDirError, match='"/proc" is already a mount point'):
        mountdir.prepare("/proc", USER)
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o755)
    with pytest.raises(mountdir.MountDirError, match=f'"{root_only}" is not writable by uid 1000'):
        mountdir.prepare(str(root_only / "a" / "b"), USER)
    assert not (root_only / "a").exists()  # nothing half-made


@pytest.mark.skipif(os.geteuid() != 0, reason="handing directories to another user needs root")
def test_missing_mount_points_are_made_for_the_user_and_taken_away_again(tmp_path):
    os.chown(tmp_path, USER.uid, USER.gid)
    made = mountdir.prepare(str(tmp_path / "a" / "b"), USER)
    assert made.path == tmp_path / "a" / "b" and made.created == (tmp_path / "a", tmp_path / "a" / "b")
    assert all(p.stat().st_uid == USER.uid for p in made.created)
    assert mountdir.prepare(str(tmp_path / "a" / "b"), USER).created == ()  # existing, empty, the user's: fine
    mountdir.remove_created(made)
    assert not (tmp_path / "a").exists()
    temp = mountdir.prepare("", USER, temp_root=tmp_path)
    assert temp.path.name.startswith("tether-volumes-") and temp.path.stat().st_uid == USER.uid
    assert temp.created == (temp.path,)


def test_the_journal_keeps_what_unmounting_after_a_crash_needs():
    data = journal_data(Path("/tmp/m"), os.getpid(), (Path("/tmp/m"),), ("default", "web", "Deployment"))
    assert data["path"] == "/tmp/m" and data["pid"] == os.getpid() and data["created"] == ["/tmp/m"]
    assert data["workload"] == "default/web/Deployment"
    assert isinstance(data["start_time"], int)  # tells a reused PID apart


def test_the_agent_serves_sftp_from_its_volumes_root_and_checks_the_port(tmp_path):
    base = ["--manager", "m:8081", "--namespace", "default", "--workload", "web", "--pod-name", "web-0"]
    args = build_parser().parse_args(base)
    assert (str(args.volumes), args.sftp_port) == ("/tether/volumes", 47022)
    with pytest.raises(ValueError, match='--sftp-port "70000"'):
        settings_from(build_parser().parse_args([*base, "--sftp-port", "70000"]))
    assert server_argv("/usr/lib/openssh/sftp-server", Path("/v")) == ["/usr/lib/openssh/sftp-server", "-e", "-d", "/v"]
    fake = tmp_path / "sftp-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_sftp_server([str(tmp_path / "missing"), str(fake)]) == str(fake)
