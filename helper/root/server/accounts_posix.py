"""Account lookups on Linux and macOS: the group database, passwd, and a user's full group list."""

from __future__ import annotations

import grp
import os
import pwd


def group_id(name: str) -> int | None:
    """The gid of group ``name``, None when there is no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def user_name(uid: int) -> str | None:
    """The passwd name of ``uid``, None when the account has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def user_home(uid: int) -> str:
    """The home directory of ``uid`` from passwd, "" when the account has none."""
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return ""


def group_list(user: str, gid: int) -> tuple[int, ...]:
    """Every group ``user`` is in according to the group database (getgrouplist(3)), ``gid`` included."""
    return tuple(os.getgrouplist(user, gid))


def is_privileged() -> bool:
    return os.geteuid() == 0
