"""Who is calling: the identity the kernel reported for a client, as the helper's handlers see it."""

from __future__ import annotations

import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """A client of the helper. uid/gid/pid come from the kernel (SO_PEERCRED / LOCAL_PEERCRED), never from the client.

    ``groups`` are the supplementary groups the process had when it asked for its token; ``username`` is
    the passwd name of ``uid`` (or the uid as text when the account has no passwd entry).
    """

    uid: int
    gid: int
    pid: int
    groups: tuple[int, ...] = ()
    username: str = ""

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def home(self) -> str:
        """The caller's home directory from passwd, or "" when the account has none."""
        try:
            return pwd.getpwuid(self.uid).pw_dir
        except KeyError:
            return ""

    def describe(self) -> str:
        name = self.username if self.username and self.username != str(self.uid) else ""
        return f"uid {self.uid} ({name})" if name else f"uid {self.uid}"


def username_for(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
