"""Account lookups on Windows: the SID of a local group, the account name of a SID, and elevation.

Windows has no gids: the helper's group is a local group ("tether") named by its SID, which the
credentials pipe's DACL and its token check use (``peercred_windows``). The Win32 calls run only on
Windows; ``parse_lookup`` (the buffers LookupAccountNameW fills) is what unit tests reach.
"""

from __future__ import annotations

import ctypes
from typing import Any

from tether.helper.root.server.peercred_windows import WindowsIdentityError, parse_sid

ERROR_NONE_MAPPED = 1332
ERROR_INSUFFICIENT_BUFFER = 122
SID_TYPE_GROUP = 2
SID_TYPE_ALIAS = 4  # local groups are aliases
SID_TYPE_WELL_KNOWN_GROUP = 5
GROUP_TYPES = (SID_TYPE_GROUP, SID_TYPE_ALIAS, SID_TYPE_WELL_KNOWN_GROUP)


def _dlls() -> tuple[Any, Any]:
    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        raise WindowsIdentityError("Windows accounts can be looked up only on Windows")
    return win_dll("advapi32", use_last_error=True), win_dll("shell32", use_last_error=True)


def parse_lookup(name: str, sid: bytes, sid_type: int) -> str:
    """The SID string for a LookupAccountNameW answer; refuses an account that is not a group."""
    if sid_type not in GROUP_TYPES:
        raise WindowsIdentityError(f'"{name}" is an account of type {sid_type}, not a group')
    return parse_sid(sid)


def group_sid(name: str) -> str | None:
    """The SID of the local group ``name`` (LookupAccountNameW), None when there is none."""
    advapi32, _ = _dlls()
    sid_size, domain_size, sid_type = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    advapi32.LookupAccountNameW(None, name, None, ctypes.byref(sid_size), None, ctypes.byref(domain_size), None)
    error = ctypes.get_last_error()  # type: ignore[attr-defined]
    if error == ERROR_NONE_MAPPED:
        return None
    if error != ERROR_INSUFFICIENT_BUFFER:
        raise WindowsIdentityError(error, f"LookupAccountNameW({name!r}) failed")
    sid = ctypes.create_string_buffer(sid_size.value)
    domain = ctypes.create_unicode_buffer(domain_size.value)
    if not advapi32.LookupAccountNameW(
        None, name, sid, ctypes.byref(sid_size), domain, ctypes.byref(domain_size), ctypes.byref(sid_type)
    ):
        raise WindowsIdentityError(ctypes.get_last_error(), f"LookupAccountNameW({name!r}) failed")  # type: ignore[attr-defined]
    return parse_lookup(name, sid.raw[: sid_size.value], sid_type.value)


def is_privileged() -> bool:
    """The helper runs elevated (an Administrator's full token, or LocalSystem as a service)."""
    _, shell32 = _dlls()
    return bool(shell32.IsUserAnAdmin())


def user_name(uid: int) -> str | None:
    """None: a RID alone does not name an account (see peercred_windows); the caller's SID stands for it."""
    return None


def user_home(uid: int) -> str:
    """ "": the profile directory is not found from a RID; credential plugins fall back to their default."""
    return ""


def group_list(user: str, gid: int) -> tuple[int, ...]:
    """(): Windows groups are SIDs, and membership is read from the caller's token (peercred_windows)."""
    return ()
