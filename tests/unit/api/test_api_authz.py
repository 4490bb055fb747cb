"""Who may do what: the authorization table."""

import pytest

from tether.helper.root.server.authz import Action, Denied, authorize

OWNER, OTHER, ROOT = 1000, 1001, 0
ALLOWED, DENIED = True, False

TABLE = [
    # action, caller, owner (None: no session), allowed
    (Action.VERSION, OTHER, OWNER, ALLOWED),
    (Action.STATUS, OTHER, OWNER, ALLOWED),
    (Action.WATCH, OTHER, OWNER, ALLOWED),
    (Action.STATUS, OTHER, None, ALLOWED),
    (Action.CONNECT, OTHER, None, ALLOWED),
    (Action.CONNECT, OWNER, OWNER, ALLOWED),
    (Action.CONNECT, OTHER, OWNER, DENIED),
    (Action.CONNECT, ROOT, OWNER, DENIED),
    (Action.CONNECT, ROOT, None, ALLOWED),
    (Action.DISCONNECT, OWNER, OWNER, ALLOWED),
    (Action.DISCONNECT, ROOT, OWNER, ALLOWED),
    (Action.DISCONNECT, OTHER, OWNER, DENIED),
    (Action.DISCONNECT, OTHER, None, ALLOWED),
    (Action.QUIT, OWNER, OWNER, ALLOWED),
    (Action.QUIT, ROOT, OWNER, ALLOWED),
    (Action.QUIT, OTHER, OWNER, DENIED),
    (Action.QUIT, OTHER, None, ALLOWED),
    (Action.DISCONNECT, OTHER, ROOT, DENIED),
    # intercepts act with the owner's credentials and reach the owner's local ports: the owner only
    (Action.INTERCEPT, OWNER, OWNER, ALLOWED),
    (Action.INTERCEPT, OTHER, OWNER, DENIED),
    (Action.INTERCEPT, ROOT, OWNER, DENIED),
    (Action.LIST, OTHER, OWNER, ALLOWED),
]


@pytest.mark.parametrize(("action", "caller", "owner", "allowed"), TABLE)
def test_table(action, caller, owner, allowed):
    if allowed:
        authorize(action, caller, owner)
    else:
        with pytest.raises(Denied):
            authorize(action, caller, owner)


def test_messages_name_the_owner():
    with pytest.raises(Denied, match=r"session is owned by uid 1000"):
        authorize(Action.DISCONNECT, OTHER, OWNER)
    with pytest.raises(Denied, match=r"session is owned by uid 1000.*stop the helper"):
        authorize(Action.QUIT, OTHER, OWNER)
    with pytest.raises(Denied, match=r"owned by uid 1000"):
        authorize(Action.CONNECT, OTHER, OWNER)
