"""Choosing the API server's proxy as kubectl does: proxy-url first, then HTTPS_PROXY/HTTP_PROXY and NO_PROXY."""

import pytest

from tether.helper.api.proxies import ProxyEnvironment, ProxyError, bypasses, choose_proxy, mask, parse_proxy_url

HTTPS = "https://api.corp.example:6443"
ENV = ProxyEnvironment(https_proxy="http://env-proxy:3128", http_proxy="socks5://plain-proxy:1080")

# (server, kubeconfig proxy-url, environment, the proxy chosen as shown, or None for direct)
CHOICES = [
    # the kubeconfig's proxy-url wins over the environment, and NO_PROXY does not apply to it
    (HTTPS, "socks5://kube-proxy:1080", ENV, "socks5://kube-proxy:1080"),
    (HTTPS, "socks5h://kube-proxy", ProxyEnvironment(no_proxy="*"), "socks5h://kube-proxy:1080"),
    (HTTPS, "https://kube-proxy", ENV, "https://kube-proxy:443"),
    (HTTPS, "http://kube-proxy", ENV, "http://kube-proxy:80"),
    # otherwise the environment: HTTPS_PROXY for https://, HTTP_PROXY for http://
    (HTTPS, "", ENV, "http://env-proxy:3128"),
    ("http://10.1.2.3:8080", "", ENV, "socks5://plain-proxy:1080"),
    ("https://10.1.2.3", "", ProxyEnvironment(http_proxy="http://p:1"), None),
    (HTTPS, "", ProxyEnvironment(), None),
    # a value without a scheme is http, as in Go
    (HTTPS, "", ProxyEnvironment(https_proxy="proxy.corp:8080"), "http://proxy.corp:8080"),
    # credentials are kept but never shown
    (HTTPS, "http://alice:s3cret@kube-proxy:3128", ENV, "http://***@kube-proxy:3128"),
    # localhost and loopback addresses are never proxied through the environment
    ("https://localhost:6443", "", ENV, None),
    ("https://127.0.0.1:6443", "", ENV, None),
    ("https://[::1]:6443", "", ENV, None),
    ("https://127.0.0.1:6443", "http://kube-proxy:3128", ENV, "http://kube-proxy:3128"),
]


@pytest.mark.parametrize(("server", "proxy_url", "env", "expected"), CHOICES)
def test_choose_proxy(server, proxy_url, env, expected):
    chosen = choose_proxy(server, proxy_url, env)
    assert (chosen.masked if chosen else None) == expected


# (host, port, NO_PROXY, exempt?)
NO_PROXY = [
    ("api.corp.example", 443, "*", True),
    ("api.corp.example", 443, "corp.example", True),  # a domain matches itself and what is under it
    ("corp.example", 443, "corp.example", True),
    ("api.corp.example", 443, ".corp.example", True),  # a leading dot: only what is under it
    ("corp.example", 443, ".corp.example", False),
    ("api.corp.example", 443, "*.corp.example", True),
    ("notcorp.example", 443, "corp.example", False),
    ("API.Corp.Example.", 443, "corp.example", True),  # case and a trailing dot do not matter
    ("api.corp.example", 443, " other.example , corp.example ", True),  # spaces around entries
    ("api.corp.example", 6443, "corp.example:6443", True),  # with a port, only that port
    ("api.corp.example", 443, "corp.example:6443", False),
    ("10.1.2.3", 443, "10.1.2.3", True),
    ("10.1.2.3", 443, "10.1.2.4", False),
    ("10.1.2.3", 443, "10.0.0.0/8", True),
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("10.1.2.3", 443, "10.1.2.3:443", True),
    ("10.1.2.3", 443, "10.1.2.3:80", False),
    ("fd00::5", 443, "fd00::/64", True),
    ("fd00::5", 443, "fd00::5", True),
    ("fd00::5", 443, "[fd00::5]:443", True),
    ("fd00::5", 443, "[fd00::5]:80", False),
    ("api.corp.example", 443, "10.0.0.0/8", False),  # a CIDR says nothing about names
    ("10.1.2.3", 443, "not/a-cidr,", False),  # a broken entry is skipped
    ("api.corp.example", 443, "", False),
    ("localhost", 443, "", True),
    ("127.0.0.2", 443, "", True),
]


@pytest.mark.parametrize(("host", "port", "no_proxy", "exempt"), NO_PROXY)
def test_no_proxy(host, port, no_proxy, exempt):
    assert bypasses(host, port, no_proxy) is exempt
    env = ProxyEnvironment(https_proxy="http://env-proxy:3128", no_proxy=no_proxy)
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    assert (choose_proxy(server, "", env) is None) is exempt


def test_loopback_rule_can_be_left_out():
    assert bypasses("127.0.0.1", 6443, "", loopback=False) is False
    assert bypasses("127.0.0.1", 6443, "127.0.0.0/8", loopback=False) is True


# (the value, the words the error must contain)
BAD = [
    ("ftp://proxy:21", ['scheme "ftp"', "http, https, socks5, socks5h"]),
    ("socks4://proxy:1080", ['scheme "socks4"']),
    ("//proxy:3128", ["no scheme"]),
    ("http://", ["names no host"]),
    ("http://:3128", ["names no host"]),
    ("http://proxy:99999", ['port "99999"']),
    ("http://proxy:0", ['port "0"']),
    ("http://proxy:http", ['port "http"']),
    ("http://proxy:3128/path", ["no path or query"]),
    ("http://pro xy:3128", ["spaces or control characters"]),
    ("proxy:3128", ['scheme "proxy"']),
]


@pytest.mark.parametrize(("value", "words"), BAD)
def test_bad_proxy_urls_are_refused_naming_the_value(value, words):
    with pytest.raises(ProxyError) as caught:
        parse_proxy_url(value, "the kubeconfig's proxy-url")
    message = str(caught.value)
    assert "the kubeconfig's proxy-url" in message
    for word in words:
        assert word in message


def test_credentials_never_appear_in_errors():
    for value in ("ftp://alice:s3cret@proxy:21", "http://alice:s3cret@proxy:99999", "http://alice:s3cret@:1"):
        with pytest.raises(ProxyError) as caught:
            parse_proxy_url(value, "HTTPS_PROXY")
        assert "s3cret" not in str(caught.value) and "alice" not in str(caught.value)
        assert "***@" in str(caught.value)


def test_credentials_are_decoded_for_use_and_masked_for_showing():
    proxy = parse_proxy_url("http://al%40ice:p%3Ass@proxy:3128", "x")
    assert (proxy.username, proxy.password) == ("al@ice", "p:ss")
    assert proxy.url == "http://al%40ice:p%3Ass@proxy:3128"
    assert "p:ss" not in repr(proxy) and "p%3Ass" not in str(proxy)
    assert parse_proxy_url("socks5://[fd00::1]:1080", "x").hostport == "[fd00::1]:1080"


def test_mask_hides_the_userinfo_of_anything_url_like():
    assert mask("http://u:p@h:1/x") == "http://***@h:1/x"
    assert mask("u:p@h:1") == "***@h:1"
    assert mask("http://h:1") == "http://h:1"


def test_environment_upper_case_wins_and_bad_values_name_the_variable():
    env = ProxyEnvironment.from_environ(
        {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1", "no_proxy": "a", "http_proxy": "h:2"}
    )
    assert env == ProxyEnvironment(https_proxy="http://upper:1", http_proxy="h:2", no_proxy="a")
    assert ProxyEnvironment.from_environ({"HTTPS_PROXY": "", "https_proxy": "http://lower:1"}).https_proxy == (
        "http://lower:1"
    )
    with pytest.raises(ProxyError, match='HTTPS_PROXY "gopher://x:1"'):
        ProxyEnvironment(https_proxy="gopher://x:1").check()
    with pytest.raises(ProxyError, match="HTTP_PROXY"):
        ProxyEnvironment(http_proxy="http://x:70000").check()
    with pytest.raises(ProxyError, match="NO_PROXY"):
        ProxyEnvironment(no_proxy="a\nb").check()


def test_a_bad_environment_proxy_fails_only_where_it_applies():
    env = ProxyEnvironment(https_proxy="gopher://x:1")
    assert choose_proxy(HTTPS, "http://kube-proxy:1", env) is not None  # proxy-url wins; the variable is unused
    with pytest.raises(ProxyError, match="HTTPS_PROXY"):
        choose_proxy(HTTPS, "", env)
