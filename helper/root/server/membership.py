"""Whether a caller who asked for a token is a member of the helper's group, per platform (pure).

* Linux: the credentials socket is root:tether 0660 and the kernel enforces that mode on ``connect()``,
  so whoever reached it is a member (or root); nothing more is checked, as before.
* macOS: the same file mode is set, and the helper checks membership itself as well, from the
  ``xucred`` the kernel recorded at ``connect()``. ``xucred`` carries at most 16 groups
  (``XUCRED_NGROUPS``): when it is full, the group may be among the ones cut off, so the group database
  is asked (``getgrouplist(3)`` for the caller's account and primary gid) before refusing.
* Windows: the pipe's DACL and ``peercred_windows.credentials_for`` (the token's enabled group SIDs)
  already decide; nothing to add here.

``check`` returns None for a member and otherwise the sentence the client gets back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from tether.helper.root.server.peercred import XUCRED_NGROUPS, PeerCredentials

GroupList = Callable[[str, int], Iterable[int]]  # (user name, primary gid) -> every gid the user is in
UserName = Callable[[int], str | None]  # uid -> account name, None when the uid has none


def darwin_member(creds: PeerCredentials, gid: int, group_list: GroupList, user_name: UserName) -> bool:
    if creds.uid == 0 or creds.gid == gid or gid in creds.groups:
        return True
    if len(creds.groups) < XUCRED_NGROUPS:
        return False  # the kernel gave the whole list
    name = user_name(creds.uid)
    return name is not None and gid in tuple(group_list(name, creds.gid))


def _kernel_enforced(creds: PeerCredentials, gid: int, group_list: GroupList, user_name: UserName) -> bool:
    return True


CHECKS: dict[str, Callable[[PeerCredentials, int, GroupList, UserName], bool]] = {
    "linux": _kernel_enforced,
    "darwin": darwin_member,
    "win32": _kernel_enforced,
}


def check(
    creds: PeerCredentials,
    gid: int | None,
    group_list: GroupList,
    user_name: UserName,
    platform: str = sys.platform,
) -> str | None:
    """None when ``creds`` may have a token; else why not. ``gid`` None: the sockets keep their group (test mode)."""
    if gid is None:
        return None
    member = CHECKS.get(platform, darwin_member)  # a platform not listed gets the explicit check
    if member(creds, gid, group_list, user_name):
        return None
    return f"uid {creds.uid} is not a member of the helper's group (gid {gid})"
