"""`tether connect` through a real proxy, with the workstation's direct path to the API server blocked.

pproxy (tests/proxy_servers.py) serves HTTP CONNECT on 172.30.0.1:3128 and SOCKS5 on 172.30.0.1:1080 in the
lab's router namespace, beside the API server. The router's filter resets every workstation connection but
the API server's, so the test lets the proxies' ports through it while they run (without that the proxy
itself refuses, which the client library reports as the API server's refusal); an nftables table in the
workstation's namespace resets every direct connection to the API server's port. The helper starts with no
proxy variables; the client sends the user's. One connect goes through the kubeconfig's ``proxy-url``
(SOCKS5), one through the environment (the lab's API server is http://, so kubectl's variable for it is
HTTP_PROXY; HTTPS_PROXY for https:// servers is covered by tests/unit/test_proxies.py), NO_PROXY covering the
server makes the connect go direct and fail against the block, and a proxy that refuses gives an error naming
it and the server. Each connect must leave a connection to the API server in the proxy's log, and
`curl http://web.default` must work through it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess

import pytest
import yaml
from helper_fixture import running_helper

from tests.proxy_servers import ProxyServer
from tether.lab import firewall
from tether.lab.topology import API_IP, API_PORT, ROUTER_NS, ROUTER_WS_IF

pytestmark = pytest.mark.lab

PROXY_PORTS = (3128, 1080)
HTTP_PROXY = f"http://{API_IP}:{PROXY_PORTS[0]}"
SOCKS_PROXY = f"socks5://{API_IP}:{PROXY_PORTS[1]}"
CLOSED_PROXY = f"socks5://{API_IP}:1081"  # nobody listens and the router resets it
API = f"{API_IP}:{API_PORT}"
BLOCK_TABLE = "proxytest_block"  # not tether_*: the helper's leftover checks look for those


def _nft(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def direct_path_blocked(netns: str):
    """Reset every connection from the workstation to the API server's port (the proxies are elsewhere)."""
    rules = (
        f"table inet {BLOCK_TABLE} {{\n chain out {{\n  type filter hook output priority 0;\n"
        f"  ip daddr {API_IP} tcp dport {API_PORT} reject with tcp reset\n }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        _nft(netns, "delete", "table", "inet", BLOCK_TABLE, check=False)


@contextlib.contextmanager
def proxy_ports_open():
    """Let the workstation reach the proxies through the router's filter, which resets all but the API server."""
    ports = ", ".join(str(port) for port in PROXY_PORTS)
    rule = f'iifname "{ROUTER_WS_IF}" ip daddr {API_IP} tcp dport {{ {ports} }} accept'
    added = _nft(ROUTER_NS, "--echo", "--handle", "insert", "rule", "inet", firewall.TABLE, "input", rule)
    handle = re.search(r"# handle (\d+)", added.stdout)
    assert handle, added.stdout
    try:
        yield
    finally:
        _nft(ROUTER_NS, "delete", "rule", "inet", firewall.TABLE, "input", "handle", handle.group(1), check=False)


@pytest.fixture(scope="module")
def proxies(lab):
    with proxy_ports_open(), ProxyServer([HTTP_PROXY, SOCKS_PROXY], netns=ROUTER_NS) as server:
        yield server


def _curl_web(lab_run) -> str:
    out = lab_run("curl", "-sS", "--noproxy", "*", "--max-time", "10", "http://web.default", timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _kubeconfig_with_proxy(source, target, proxy_url: str):
    document = yaml.safe_load(source.read_text())
    for entry in document["clusters"]:
        entry["cluster"]["proxy-url"] = proxy_url
    target.write_text(yaml.safe_dump(document))
    return target


def test_connect_through_proxies_with_the_direct_path_blocked(lab, lab_run, proxies, tmp_path, monkeypatch):
    with direct_path_blocked(lab.ws_netns), running_helper(lab.ws_netns, lab.kubeconfig, tmp_path) as helper:
        helper.start()
        # the block holds: the API server cannot be reached directly from the workstation
        direct = lab_run("curl", "-sS", "--noproxy", "*", "--max-time", "5", f"http://{API}/version")
        assert direct.returncode != 0

        # 1. the kubeconfig's proxy-url (SOCKS5)
        helper.kubeconfig = _kubeconfig_with_proxy(lab.kubeconfig, tmp_path / "socks.yaml", SOCKS_PROXY)
        before = len(proxies.connections())
        helper.connect()
        assert _curl_web(lab_run)
        carried = proxies.connections()[before:]
        assert ("socks5", API) in carried, proxies.log_text()[-2000:]
        assert all(kind == "socks5" for kind, _ in carried)  # the environment had no proxy: nothing via HTTP
        helper.disconnect()

        # 2. the user's environment (HTTP CONNECT); the helper itself has no proxy variables
        helper.kubeconfig = lab.kubeconfig
        before = len(proxies.connections())
        with monkeypatch.context() as env:
            env.setenv("HTTP_PROXY", HTTP_PROXY)
            helper.connect()
        assert _curl_web(lab_run)
        carried = proxies.connections()[before:]
        assert ("http", API) in carried, proxies.log_text()[-2000:]
        assert "HTTP_PROXY" not in helper.log_text()
        helper.disconnect()

        # 3. NO_PROXY covering the server: direct, so the block stops it, and the proxy sees nothing
        before = len(proxies.connections())
        with monkeypatch.context() as env:
            env.setenv("HTTP_PROXY", HTTP_PROXY)
            env.setenv("NO_PROXY", "172.30.0.0/24")
            out = helper.cli("connect", "--kubeconfig", str(lab.kubeconfig), timeout=120)
        assert out.returncode != 0, out.stdout
        assert proxies.connections()[before:] == []
        with contextlib.suppress(AssertionError):
            helper.disconnect()

        # 4. a proxy that refuses: the error names it and the API server, not the client library's retries
        closed = _kubeconfig_with_proxy(lab.kubeconfig, tmp_path / "closed.yaml", CLOSED_PROXY)
        out = helper.cli("connect", "--kubeconfig", str(closed), timeout=120)
        assert out.returncode != 0, out.stdout
        expected = f"cannot reach the API server http://{API} through the proxy {CLOSED_PROXY}: "
        assert expected + "the proxy refused the connection" in out.stderr, out.stderr
        assert "MaxRetryError" not in out.stderr
        with contextlib.suppress(AssertionError):
            helper.disconnect()


def test_a_bad_proxy_url_is_refused_naming_it(lab, tmp_path):
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "badproxy") as helper:
        helper.start()
        bad = _kubeconfig_with_proxy(lab.kubeconfig, tmp_path / "bad.yaml", "gopher://me:s3cret@proxy:70")
        out = helper.cli("connect", "--kubeconfig", str(bad), timeout=60)
        assert out.returncode == 2, (out.returncode, out.stderr)
        assert 'proxy-url "gopher://***@proxy:70" has scheme "gopher"' in out.stderr
        assert "s3cret" not in out.stderr and "s3cret" not in helper.log_text()
        assert helper.status()["phase"] == "disconnected"
