"""Validation of what clients send: messages name the value."""

import pytest

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate
from tether.helper.api.validate import ValidationError


def test_cidr_accepts_networks():
    assert str(validate.cidr("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(validate.cidr("fd00::/64")) == "fd00::/64"
    assert str(validate.cidr("192.168.1.7/32")) == "192.168.1.7/32"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.1.2.3/16", r'--also-proxy: "10.1.2.3/16" has host bits set; did you mean 10.1.0.0/16\?'),
        ("fd00::1/64", r"did you mean fd00::/64\?"),
        ("10.0.0.0/33", r'"10.0.0.0/33" is not a CIDR'),
        ("banana", r'"banana" is not a CIDR'),
        ("10.0.0.0", r'"10.0.0.0" has no prefix length \(expected e.g. 10.0.0.0/32\)'),
        ("", r"'' is not a CIDR"),
        (" 10.0.0.0/8", r"is not a CIDR"),
    ],
)
def test_cidr_messages(value, message):
    with pytest.raises(ValidationError, match=message):
        validate.cidr(value, "--also-proxy")


@pytest.mark.parametrize("value", ["default", "kube-system", "a", "a" * 63, "ns-1"])
def test_namespace_ok(value):
    assert validate.namespace(value) == value


@pytest.mark.parametrize("value", ["Default", "-a", "a-", "a_b", "a.b", "a" * 64, "ns\n"])
def test_namespace_bad(value):
    with pytest.raises(ValidationError, match=r"namespace: .* is not a valid namespace name \(a DNS-1123 label"):
        validate.namespace(value)


def test_context_names():
    assert validate.context_name("arn:aws:eks:eu-west-1:123:cluster/prod") == "arn:aws:eks:eu-west-1:123:cluster/prod"
    with pytest.raises(ValidationError, match="control characters"):
        validate.context_name("lab\x1b[31m")
    with pytest.raises(ValidationError, match="longer than 253"):
        validate.context_name("x" * 254)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tether-manager.tether:8081", ("tether-manager.tether", 8081)),
        ("10.0.0.5:80", ("10.0.0.5", 80)),
        ("[fd00::1]:8081", ("fd00::1", 8081)),
    ],
)
def test_manager_address_ok(value, expected):
    assert validate.manager_address(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("manager", r'"manager" is not HOST:PORT'),
        ("manager:0", r"port 0 in \"manager:0\" is not between 1 and 65535"),
        ("manager:99999", r"port 99999"),
        ("fd00::1:8081", r"put an IPv6 address in brackets"),
        ("[nothex]:80", r'"\[nothex\]" .* is not an IPv6 address'),
        ("bad_host:80", r'"bad_host" .* is not a valid host name'),
        (":80", r"is not HOST:PORT"),
        ("manager:", r"is not HOST:PORT"),
        # str.isdigit() accepts both: int() raised on the first and read the second as 3
        ("manager:³", r'port "³" in "manager:³" is not a number written with the digits 0-9'),
        ("manager:٣", r'port "٣" in "manager:٣" is not a number written with the digits 0-9'),
        ("manager:8\u066081", r'port "8\u066081"'),
        ("manager:\uff11", r'port "\uff11"'),
    ],
)
def test_manager_address_bad(value, message):
    with pytest.raises(ValidationError, match=message):
        validate.manager_address(value)


def test_port_number():
    assert validate.port_number("8081") == 8081
    assert validate.port_number("0", allow_zero=True) == 0
    with pytest.raises(ValidationError, match=r"port 0 is not between 1 and 65535"):
        validate.port_number("0")
    for text in ("³", "٣", "²²", "", "-1", "+80", " 80", "8_0"):
        with pytest.raises(ValidationError, match="is not a number written with the digits 0-9"):
            validate.port_number(text)
    assert not validate.is_ascii_number("٣") and validate.is_ascii_number("3")


def test_environment():
    assert validate.environment({"PATH": "/bin", "_X1": ""}) == {"PATH": "/bin", "_X1": ""}
    with pytest.raises(ValidationError, match=r'environment: "BASH_FUNC_x%%" is not a valid variable name'):
        validate.environment({"BASH_FUNC_x%%": "() { :; }"})
    with pytest.raises(ValidationError, match=r'"1ABC" is not a valid variable name'):
        validate.env_name("1ABC")
    with pytest.raises(ValidationError, match="the value of X contains a NUL"):
        validate.environment({"X": "a\0b"})
    with pytest.raises(ValidationError, match="at most"):
        validate.environment({"BIG": "x" * (validate.MAX_ENV_BYTES + 1)})


def test_portable_environment_drops_what_the_helper_refuses():
    env = {"PATH": "/bin", "BASH_FUNC_x%%": "f", "A-B": "1", "OK": "1", "NUL": "a\0"}
    assert validate.portable_environment(env) == {"PATH": "/bin", "OK": "1"}


def test_kubeconfig_size_limit():
    validate.kubeconfig_text("apiVersion: v1\n")
    with pytest.raises(ValidationError, match=r"kubeconfig: 1048577 bytes, at most 1048576 \(1 MiB\)"):
        validate.kubeconfig_text("x" * (1024 * 1024 + 1))
    with pytest.raises(ValidationError, match="kubeconfig: empty"):
        validate.kubeconfig_text("  \n")


def good_request(**changes):
    request = pb.ConnectRequest(
        kubeconfig="apiVersion: v1\n",
        context="lab",
        namespace="default",
        also_proxy=["10.0.0.0/8"],
        mapped_namespaces=["default", "kube-system"],
        environment={"PATH": "/bin"},
        client_name="tether",
    )
    for key, value in changes.items():
        field = getattr(request, key)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        elif isinstance(value, dict):
            field.update(value)
        else:
            setattr(request, key, value)
    return request


def test_connect_request_ok():
    validate.connect_request(good_request())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"never_proxy": ["10.1.1.1/24"]}, r'never-proxy: "10.1.1.1/24" has host bits set; did you mean 10.1.1.0/24\?'),
        ({"allow_conflicting_subnets": ["x"]}, r'allow-conflicting-subnets: "x"'),
        ({"mapped_namespaces": ["Bad"]}, r'mapped namespaces: "Bad"'),
        ({"manager_namespace": "Tether"}, r'manager namespace: "Tether"'),
        ({"manager_address": "nope"}, r'manager address: "nope"'),
        ({"environment": {"A B": "1"}}, r'environment: "A B"'),
        ({"kubeconfig": ""}, r"kubeconfig: empty"),
        ({"client_name": "x" * 65}, r"client name"),
        ({"also_proxy": ["10.0.0.0/8"] * 300}, r"also-proxy: 300 subnets given, at most 256"),
    ],
)
def test_connect_request_names_the_bad_field(changes, message):
    with pytest.raises(ValidationError, match=message):
        validate.connect_request(good_request(**changes))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (".corp.example", ".corp.example"),
        ("corp.example", ".corp.example"),
        ("Corp.Example.", ".corp.example"),
        ("io", ".io"),
    ],
)
def test_dns_suffix_normalised(value, expected):
    assert validate.dns_suffix(value) == expected


@pytest.mark.parametrize(
    "value", ["", ".", "..corp", "corp..example", "-corp.example", "corp_x.example", " corp", "a" * 64]
)
def test_dns_suffix_bad_names_the_value(value):
    with pytest.raises(ValidationError, match=r"DNS include-suffixes: .* is not a domain suffix"):
        validate.dns_suffix(value, "DNS include-suffixes")


def test_connect_request_checks_dns_suffixes():
    request = pb.ConnectRequest(kubeconfig="apiVersion: v1", dns_exclude_suffixes=[".ok.example", "bad suffix"])
    with pytest.raises(ValidationError, match='DNS exclude-suffixes: "bad suffix"'):
        validate.connect_request(request)


@pytest.mark.parametrize(
    ("value", "platform", "mode"),
    [
        ("", "linux", None),
        ("linux-nft", "linux", "linux-nft"),
        ("systemd-resolved", "linux", "systemd-resolved"),
        ("macos-resolver", "darwin", "macos-resolver"),
        ("windows", "win32", "windows"),
        ("windows", "cygwin", "windows"),
    ],
)
def test_dns_mode_for_its_platform(value, platform, mode):
    assert validate.dns_mode(value, platform) == mode


@pytest.mark.parametrize(
    ("value", "platform", "message"),
    [
        (
            "nftables",
            "linux",
            '"nftables" is not a resolver mode (one of: linux-nft, systemd-resolved, macos-resolver, windows)',
        ),
        ("Linux-NFT", "linux", '"Linux-NFT" is not a resolver mode'),
        ("windows", "linux", "windows does not exist on linux (modes here: linux-nft, systemd-resolved)"),
        ("systemd-resolved", "darwin", "systemd-resolved does not exist on darwin (modes here: macos-resolver)"),
        ("linux-nft", "sunos5", "linux-nft does not exist on sunos5 (modes here: none)"),
    ],
)
def test_dns_mode_refused_names_the_value_and_the_valid_ones(value, platform, message):
    with pytest.raises(ValidationError) as caught:
        validate.dns_mode(value, platform)
    assert str(caught.value).startswith("dns-mode: ")
    assert message in str(caught.value)


def test_connect_request_checks_the_dns_mode():
    with pytest.raises(ValidationError, match='dns-mode: "nft" is not a resolver mode'):
        validate.connect_request(pb.ConnectRequest(kubeconfig="apiVersion: v1", dns_mode="nft"))
    validate.connect_request(pb.ConnectRequest(kubeconfig="apiVersion: v1", dns_mode="linux-nft"))
