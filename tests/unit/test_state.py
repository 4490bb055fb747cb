"""What clients see of a connection (tether.helper.root.state): both sides' versions, and skew errors in their
own words."""

from __future__ import annotations

import kubernetes
import socks
import urllib3.exceptions

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxies import parse_proxy_url
from tether.helper.root.connection import Connection
from tether.helper.root.dns.resolvers.choose import Probes, UnsupportedHost, decide
from tether.helper.root.kube.credentials import KubeCredentials
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


def test_a_failed_api_call_through_a_proxy_names_the_proxy_and_the_server(tmp_path) -> None:
    # as urllib3 and PySocks raise it when the SOCKS proxy itself refuses: the text names the API server
    refused = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: Connection refused")
    refused.__context__ = socks.ProxyConnectionError("Error connecting to SOCKS5 proxy", ConnectionRefusedError(111))
    failure = urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces", refused)  # type: ignore[arg-type]
    proxy = parse_proxy_url("socks5://alice:s3cret@172.30.0.1:1080", "proxy-url")
    credentials = KubeCredentials(
        kubernetes.client.Configuration(),
        context="lab",
        server="http://172.30.0.1:6443",
        namespace="",
        directory=tmp_path,
        plugin=None,
        credential=None,
        proxy=proxy,
    )
    assert explain(failure, credentials) == (
        "cannot reach the API server http://172.30.0.1:6443 through the proxy socks5://***@172.30.0.1:1080: "
        "the proxy refused the connection"
    )
    assert explain(failure).startswith("MaxRetryError: ")  # before the kubeconfig is read: no server to name


def test_the_state_says_why_the_dns_mode_and_from_which_probes() -> None:
    c = Connection(request=pb.ConnectRequest(context="lab"), caller=Caller(uid=1000, gid=1000, pid=1))
    assert (connected_state(c).dns_mode_reason, list(connected_state(c).dns_probes)) == ("", [])
    probes = Probes("linux", "nameserver 192.0.2.1\n", networkmanager_dns="default")
    c.dns_choice = decide(probes, "linux-nft")
    state = connected_state(c)
    assert state.dns_mode_forced is True
    assert state.dns_mode_reason == (
        "forced with --dns-mode (the probes choose linux-nft: NetworkManager (dns=default) writes resolv.conf, "
        "no systemd-resolved: queries to 192.0.2.1 are redirected)"
    )
    assert list(state.dns_probes) == [
        "platform: linux",
        "resolv.conf: nameserver 192.0.2.1 (a file)",
        "systemd-resolved: not on the system bus",
        "NetworkManager: dns=default (configured)",
    ]
    broken = UnsupportedHost("/etc/resolv.conf is missing and systemd-resolved is not on the system bus: ...")
    assert explain(broken) == str(broken)  # speaks to the user as it is
