"""Who may do what (pure: no I/O, no gRPC).

Reaching the socket at all already required membership of the helper's group (the socket is 0660,
group ``tether``); these rules decide between the members:

==============================  =================================================================
Version, Status, WatchState     any caller
Connect                         any caller when no session is up (the caller becomes its owner);
                                the owner again (the session decides what a second connect means);
                                anyone else, root included, is refused while another uid's session
                                is up: they must disconnect it first
Disconnect, Quit                the session's owner or root; when no session is up, any caller
ListWorkloads                   any caller
Intercept, Leave,               the session's owner (they act with the owner's Kubernetes credentials
UninstallAgents                 and send cluster traffic to the owner's local ports)
==============================  =================================================================
"""

from __future__ import annotations

import enum

ROOT_UID = 0


class Action(enum.Enum):
    VERSION = "Version"
    STATUS = "Status"
    WATCH = "WatchState"
    CONNECT = "Connect"
    DISCONNECT = "Disconnect"
    QUIT = "Quit"
    INTERCEPT = "Intercept"
    LIST = "ListWorkloads"


READ_ONLY = frozenset({Action.VERSION, Action.STATUS, Action.WATCH, Action.LIST})
OWNER_OR_ROOT = frozenset({Action.DISCONNECT, Action.QUIT})
PRIVILEGED = frozenset({Action.CONNECT, Action.DISCONNECT, Action.QUIT})


class Denied(Exception):
    """The caller may not do this; the message names the session's owner and what would be allowed."""


def authorize(action: Action, caller_uid: int, owner_uid: int | None) -> None:
    """Raise Denied unless ``caller_uid`` may perform ``action``; ``owner_uid`` is None when no session is up."""
    if action in READ_ONLY or owner_uid is None or caller_uid == owner_uid:
        return
    if action is Action.CONNECT:
        raise Denied(
            f"another user's session is up (owned by uid {owner_uid}); "
            "it must be disconnected (by its owner or root) before you can connect"
        )
    if action in OWNER_OR_ROOT:
        if caller_uid == ROOT_UID:
            return
        verb = "disconnect it" if action is Action.DISCONNECT else "stop the helper"
        raise Denied(f"session is owned by uid {owner_uid}: only that user or root may {verb}")
    if action is Action.INTERCEPT:
        raise Denied(f"intercepts belong to the session's owner (uid {owner_uid}); only that user may change them")
    raise Denied(f"{action.value} is not allowed")  # pragma: no cover - every action is listed above
