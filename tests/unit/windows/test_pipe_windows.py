"""The Windows endpoint's pure parts: the reply line with the gRPC target, and the target itself."""

from __future__ import annotations

import json

import pytest

from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError
from tether.helper.root.server.pipe_windows import GRPC_LISTEN, AuthPipeServer, grpc_target, reply_line

CREDS = PeerCredentials(pid=1, uid=1013, gid=1020, groups=(1020,), sid="S-1-5-21-1-2-3-1013")


def test_a_member_gets_a_token_and_the_grpc_target():
    line = reply_line(lambda c: {"token": f"t-{c.uid}", "uid": c.uid}, lambda: CREDS, "127.0.0.1:50123")
    assert line.endswith(b"\n")
    assert json.loads(line) == {"token": "t-1013", "uid": 1013, "grpc_target": "127.0.0.1:50123"}


def test_an_unidentified_client_gets_the_reason_and_no_token():
    def refuse() -> PeerCredentials:
        raise PeerCredentialsError("S-1-5-21-1-2-3-1013 is not a member of the group S-1-5-21-1-2-3-1020")

    issued: list[PeerCredentials] = []
    reply = json.loads(reply_line(lambda c: issued.append(c) or {}, refuse, "127.0.0.1:1"))
    assert reply == {
        "error": "the helper could not identify you: S-1-5-21-1-2-3-1013 is not a member of the group "
        "S-1-5-21-1-2-3-1020"
    }
    assert issued == []


def test_grpc_listens_on_loopback_only():
    assert GRPC_LISTEN.startswith("127.0.0.1:")
    assert grpc_target(50123) == "127.0.0.1:50123"
    with pytest.raises(ValueError, match="did not bind"):
        grpc_target(0)


def test_the_pipe_server_exists_only_on_windows():
    with pytest.raises(OSError, match="only on Windows"):
        AuthPipeServer(lambda c: {}, "S-1-5-21-1-2-3-1020", "127.0.0.1:1")
