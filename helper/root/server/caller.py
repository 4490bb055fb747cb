"""Who is calling: the identity the kernel reported for a client, as the helper's handlers see it."""

from __future__ import annotations

from dataclasses import dataclass

from tether.helper.root.server.accounts import accounts


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
        return accounts().user_home(self.uid)

    def describe(self) -> str:
        name = self.username if self.username and self.username != str(self.uid) else ""
        return f"uid {self.uid} ({name})" if name else f"uid {self.uid}"


def username_for(uid: int, sid: str = "") -> str:
    """The account name of ``uid``; the uid as text when it has none (Windows: the caller's SID)."""
    return accounts().user_name(uid) or sid or str(uid)
