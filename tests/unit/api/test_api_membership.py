"""The explicit group check per platform, over packed macOS xucred structs (16 groups at most)."""

from __future__ import annotations

from tether.helper.root.server.membership import check
from tether.helper.root.server.peercred import XUCRED, XUCRED_NGROUPS, PeerCredentials, parse_xucred

TETHER = 1020


def creds_from_xucred(uid: int, groups: list[int]) -> PeerCredentials:
    """PeerCredentials as darwin_peer_credentials builds them from the kernel's bytes."""
    padded = groups + [0] * (XUCRED_NGROUPS - len(groups))
    parsed_uid, gid, parsed = parse_xucred(XUCRED.pack(0, uid, len(groups), *padded))
    return PeerCredentials(pid=42, uid=parsed_uid, gid=gid, groups=parsed)


class Directory:
    """getgrouplist and the passwd name, as a fake; records who was asked."""

    def __init__(self, members: dict[str, tuple[int, ...]], names: dict[int, str]) -> None:
        self.members, self.names, self.asked = members, names, []

    def group_list(self, user: str, gid: int) -> tuple[int, ...]:
        self.asked.append((user, gid))
        return (gid, *self.members.get(user, ()))

    def user_name(self, uid: int) -> str | None:
        return self.names.get(uid)


def darwin(creds: PeerCredentials, directory: Directory, gid: int | None = TETHER) -> str | None:
    return check(creds, gid, directory.group_list, directory.user_name, "darwin")


def test_a_member_listed_in_xucred_is_admitted_without_asking_the_directory():
    directory = Directory({}, {501: "alice"})
    assert darwin(creds_from_xucred(501, [20, 12, TETHER]), directory) is None
    assert darwin(creds_from_xucred(501, [TETHER]), directory) is None  # the primary group
    assert directory.asked == []


def test_a_non_member_with_a_short_list_is_refused_from_the_kernels_answer():
    directory = Directory({"bob": (TETHER,)}, {502: "bob"})
    refused = darwin(creds_from_xucred(502, [20, 12, 61]), directory)
    assert refused == "uid 502 is not a member of the helper's group (gid 1020)"
    assert directory.asked == []  # xucred was not full: it holds every group the process had


def test_a_full_xucred_falls_back_to_getgrouplist():
    sixteen = [20, *range(700, 715)]
    assert len(sixteen) == XUCRED_NGROUPS
    member = Directory({"carol": (TETHER,)}, {503: "carol"})
    assert darwin(creds_from_xucred(503, sixteen), member) is None
    assert member.asked == [("carol", 20)]
    outsider = Directory({"dave": (800,)}, {504: "dave"})
    assert darwin(creds_from_xucred(504, sixteen), outsider) == (
        "uid 504 is not a member of the helper's group (gid 1020)"
    )
    nameless = Directory({}, {})
    assert darwin(creds_from_xucred(505, sixteen), nameless) is not None
    assert nameless.asked == []


def test_root_is_admitted_and_test_mode_checks_nothing():
    directory = Directory({}, {})
    assert darwin(creds_from_xucred(0, [0]), directory) is None
    assert darwin(creds_from_xucred(502, [20]), directory, gid=None) is None


def test_linux_and_windows_leave_it_to_the_kernel_and_the_token():
    directory = Directory({}, {})
    outsider = creds_from_xucred(502, [20])
    assert check(outsider, TETHER, directory.group_list, directory.user_name, "linux") is None
    assert check(outsider, TETHER, directory.group_list, directory.user_name, "win32") is None
    assert check(outsider, TETHER, directory.group_list, directory.user_name, "freebsd14") is not None
