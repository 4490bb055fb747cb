"""What clients see of a connection (tether.helper.root.state): both sides' versions, and skew errors in their
own words."""

from __future__ import annotations

import kubernetes

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.connection import Connection
from tether.helper.root.server.caller import Caller
from tether.helper.root.state import connected_state, explain
from tether.helper.root.tunnel.manager_link import ManagerLink, VersionSkewError, client_info
from tether.manager.api.version import API_LEVEL, __version__


def test_the_state_shows_the_client_and_the_manager_version() -> None:
    link = ManagerLink(kubernetes.client.Configuration(), "tether", client_info("t@test", "default"), "127.0.0.1:1")
    link.version, link.api_level = "99.1.0", API_LEVEL + 1
    c = Connection(request=pb.ConnectRequest(context="lab"), caller=Caller(uid=1000, gid=1000, pid=1), link=link)
    state = connected_state(c)
    assert (state.manager_version, state.manager_api_level) == ("99.1.0", API_LEVEL + 1)
    assert (state.client_version, state.client_api_level) == (__version__, API_LEVEL)


def test_a_version_skew_is_explained_in_its_own_words() -> None:
    message = "the traffic-manager is too old ... tether manager upgrade --namespace tether"
    assert explain(VersionSkewError(message)) == message
