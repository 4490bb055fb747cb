"""The admin's policy against a hostile cluster or group member: routes, conflicts, DNS claims, --manager-address.

The attack these reproduce: a manager (the cluster's settings, or one a group member runs and points
``--manager-address`` at) sends ``service_subnets=[0.0.0.0/0]``, ``allow_conflicting_subnets=[0.0.0.0/0]``,
``cluster_domain="com."`` and include-suffixes ``.org .net .io .dev``; without the policy the helper
routed the whole Internet into the TUN and sent every public name to that manager.
"""

from __future__ import annotations

import ipaddress

import pytest

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate
from tether.helper.root.plan import Remapping, allowed_conflicts, plan_dns, plan_routes, suggested_conflicts
from tether.helper.root.policy import (
    Forbidden,
    Policy,
    PolicyError,
    carve_notes,
    check_manager_address,
    check_routed,
    forbidden_ranges,
    host_ranges,
    mappable_namespaces,
)
from tether.helper.root.policy_file import load_policy
from tether.helper.root.routing.conflicts import OSRoute, find_conflicts
from tether.helper.user.cli.control import describe_state, format_state
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnet_to_pb


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def hostile_info(*subnets: str) -> mpb.ClusterInfo:
    """What the attacker's manager sent."""
    return mpb.ClusterInfo(
        service_subnets=[subnet_to_pb(net(s)) for s in subnets or ("0.0.0.0/0",)],
        routing=mpb.RoutingConfig(allow_conflicting_subnets=[subnet_to_pb(net("0.0.0.0/0"))]),
        dns=mpb.DNSConfig(cluster_domain="com.", include_suffixes=[".org", ".net", ".io", ".dev"]),
    )


def plan(info: mpb.ClusterInfo, request: pb.ConnectRequest | None = None, **kw):  # type: ignore[no-untyped-def]
    return plan_routes(info, request or pb.ConnectRequest(), Remapping(), never_route=(), **kw)


# The workstation: a Wi-Fi LAN with its gateway and address, a VPN with a split route.
HOST_ROUTES = [
    OSRoute("0.0.0.0/0", "wlan0", "192.168.1.1", protocol="dhcp"),
    OSRoute("192.168.1.0/24", "wlan0", protocol="kernel", scope="link"),
    OSRoute("10.8.0.0/24", "tun0", protocol="kernel", scope="link"),
    OSRoute("10.20.0.0/16", "tun0", "10.8.0.1", protocol="static"),
    OSRoute("192.168.1.23/32", "wlan0", table=255, protocol="kernel", scope="host", type="local"),
    OSRoute("10.8.0.6/32", "tun0", table=255, protocol="kernel", scope="host", type="local"),
    OSRoute("10.96.0.0/16", "tether0", protocol=126, scope="link"),  # ours: never the host's
]


# --- the attack ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("subnet", ["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "::/0", "::/1", "8000::/1"])
def test_the_default_route_and_its_halves_are_refused(subnet: str) -> None:
    with pytest.raises(PolicyError, match=rf"service subnet from the traffic-manager {subnet} is refused: it is"):
        plan(hostile_info(subnet))


def test_the_default_route_is_refused_even_when_the_admin_allows_any_prefix() -> None:
    with pytest.raises(PolicyError, match="the default route"):
        plan(hostile_info("0.0.0.0/0"), policy=Policy(min_prefix_v4=0))


@pytest.mark.parametrize(("subnet", "minimum"), [("8.0.0.0/7", "/8"), ("2001::/31", "/32")])
def test_subnets_shorter_than_the_minimum_are_refused_naming_the_rule(subnet: str, minimum: str) -> None:
    with pytest.raises(PolicyError, match=rf"{subnet} is refused: .* shorter than {minimum} .*built-in defaults"):
        plan(hostile_info(subnet))


def test_the_admin_minimum_applies_to_every_source_of_routes() -> None:
    strict = Policy(min_prefix_v4=16, source="/etc/tether/policy.toml")
    with pytest.raises(PolicyError, match=r"--also-proxy subnet 10.0.0.0/8 is refused: .*/etc/tether/policy.toml"):
        plan(mpb.ClusterInfo(), pb.ConnectRequest(also_proxy=["10.0.0.0/8"]), policy=strict)
    cluster_also = mpb.ClusterInfo(routing=mpb.RoutingConfig(also_proxy_subnets=[subnet_to_pb(net("10.0.0.0/12"))]))
    with pytest.raises(PolicyError, match=r"also-proxy subnet from the cluster.s settings 10\.0\.0\.0/12"):
        plan(cluster_also, policy=strict)
    assert plan(hostile_info("10.96.0.0/16"), policy=strict).routes.routes == (net("10.96.0.0/16"),)


def test_the_clusters_allow_list_does_not_allow_conflicts() -> None:
    info = hostile_info("10.20.0.0/15")
    allowed = allowed_conflicts(pb.ConnectRequest(), Policy())
    conflicts = find_conflicts(plan(info).routes.routes, HOST_ROUTES, allowed=allowed)
    assert [str(c.subnet) for c in conflicts] == ["10.20.0.0/15"]
    assert suggested_conflicts(info) == [net("0.0.0.0/0")]  # shown to the user, not applied
    confirmed = allowed_conflicts(pb.ConnectRequest(allow_conflicting_subnets=["10.20.0.0/15"]), Policy())
    assert find_conflicts(plan(info).routes.routes, HOST_ROUTES, allowed=confirmed) == []


def dns(info: mpb.ClusterInfo, request: pb.ConnectRequest | None = None):  # type: ignore[no-untyped-def]
    return plan_dns(
        info, request or pb.ConnectRequest(), namespace="default", mapped_namespaces=frozenset(), routes=None
    )


def test_a_public_cluster_domain_is_refused() -> None:
    with pytest.raises(PolicyError, match=r'cluster domain "com\." from the traffic-manager is refused: .*public'):
        dns(hostile_info("10.96.0.0/16"))


@pytest.mark.parametrize("suffix", [".org", ".dev", "co.uk", ".github.io"])
def test_a_public_include_suffix_from_the_manager_is_refused(suffix: str) -> None:
    info = mpb.ClusterInfo(dns=mpb.DNSConfig(include_suffixes=[".corp.example.com", suffix]))
    with pytest.raises(PolicyError, match=f'DNS include-suffix "{suffix}" from the traffic-manager is refused'):
        dns(info)


def test_private_domains_stay_allowed() -> None:
    info = mpb.ClusterInfo(dns=mpb.DNSConfig(cluster_domain="cluster.local.", include_suffixes=[".corp.example.com"]))
    rules = dns(info, pb.ConnectRequest(dns_include_suffixes=[".internal", ".lan"]))
    assert rules.include_suffixes == (".corp.example.com.", ".internal.", ".lan.")


@pytest.mark.parametrize("suffix", [".dev", "com", ".co.uk."])
def test_the_client_may_not_send_a_public_include_suffix(suffix: str) -> None:
    with pytest.raises(validate.ValidationError, match=r"DNS include-suffixes: .* is a public suffix"):
        validate.connect_request(pb.ConnectRequest(kubeconfig="x", dns_include_suffixes=[suffix]))
    validate.connect_request(pb.ConnectRequest(kubeconfig="x", dns_exclude_suffixes=[suffix]))  # excluding is fine


def test_namespaces_named_like_public_suffixes_are_not_mapped_unless_asked_for() -> None:
    kept, left_out = mappable_namespaces({"default", "dev", "de", "ai", "team-a"}, ())
    assert kept == {"default", "team-a"}
    assert left_out == ("ai", "de", "dev")
    kept, left_out = mappable_namespaces({"default", "dev"}, ["dev"])
    assert kept == {"default", "dev"} and left_out == ()


# --- the host's own ranges are carved out --------------------------------------------------------------


def test_host_ranges_are_its_addresses_gateways_and_lan_not_our_routes() -> None:
    found = {str(f.network): f.reason for f in host_ranges(HOST_ROUTES, own_devices=["tether0"])}
    assert found == {
        "10.8.0.1/32": "a gateway of this machine (via tun0)",
        "10.8.0.6/32": "an address of this machine (tun0)",
        "192.168.1.0/24": "the LAN this machine sits on (wlan0)",
        "192.168.1.1/32": "a gateway of this machine (via wlan0)",
        "192.168.1.23/32": "an address of this machine (wlan0)",
    }


def test_a_cluster_subnet_over_the_lan_keeps_the_rest_and_reports_what_was_carved() -> None:
    forbidden = forbidden_ranges(
        host_ranges(HOST_ROUTES),
        Policy(never_route=(net("172.16.5.0/24"),), source="policy.toml"),
        [ipaddress.ip_address("172.16.9.9")],
    )
    planned = plan(hostile_info("192.168.0.0/16", "172.16.0.0/16"), forbidden=forbidden)
    routes = planned.routes.routes
    for kept_out in ("192.168.1.0/24", "172.16.5.0/24", "172.16.9.9/32"):
        assert not any(r.overlaps(net(kept_out)) for r in routes), kept_out
    assert net("192.168.2.0/23") in routes
    assert planned.notes == (
        "192.168.1.0/24 (the LAN this machine sits on (wlan0)) is not routed to the cluster, though inside "
        "192.168.0.0/16",
        "192.168.1.1/32 (a gateway of this machine (via wlan0)) is not routed to the cluster, though inside "
        "192.168.0.0/16",
        "192.168.1.23/32 (an address of this machine (wlan0)) is not routed to the cluster, though inside "
        "192.168.0.0/16",
        "172.16.9.9/32 (the traffic-manager's address) is not routed to the cluster, though inside 172.16.0.0/16",
        "172.16.5.0/24 (never_route in policy.toml) is not routed to the cluster, though inside 172.16.0.0/16",
    )


def test_nothing_is_reported_when_nothing_overlaps() -> None:
    assert carve_notes([net("10.96.0.0/16")], [Forbidden(net("192.168.1.0/24"), "LAN")]) == ()
    check_routed([(net("10.96.0.0/16"), "service subnet")], Policy())


# --- --manager-address ----------------------------------------------------------------------------------


def test_manager_address_is_for_root_unless_the_admin_allows_it() -> None:
    with pytest.raises(PolicyError, match=r"--manager-address 10\.0\.0\.5:8081 is refused for uid 1000: only root"):
        check_manager_address(1000, "10.0.0.5:8081", Policy())
    check_manager_address(0, "10.0.0.5:8081", Policy())
    check_manager_address(1000, "10.0.0.5:8081", Policy(allow_manager_address=True))
    check_manager_address(1000, "", Policy())


@pytest.mark.parametrize("value", ["unix:80", "unix:/run/tether/helper.sock", "UNIX:80", "unix-abstract:80"])
def test_manager_address_never_names_a_local_socket(value: str) -> None:
    with pytest.raises(validate.ValidationError, match="names a local socket"):
        validate.manager_address(value)


# --- the policy file ------------------------------------------------------------------------------------


def test_no_file_means_the_safe_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = load_policy(tmp_path / "policy.toml")
    assert (policy.min_prefix_v4, policy.min_prefix_v6, policy.allow_manager_address) == (8, 32, False)
    assert policy.allow_conflicting_subnets == () and policy.never_route == ()


def test_the_file_sets_every_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.toml"
    path.write_text(
        "min_prefix_v4 = 12\nmin_prefix_v6 = 48\nnever_route = ['192.168.50.0/24']\n"
        "allow_conflicting_subnets = ['10.8.0.0/16']\nallow_manager_address = true\n"
    )
    policy = load_policy(path)
    assert policy == Policy(12, 48, (net("192.168.50.0/24"),), (net("10.8.0.0/16"),), True, str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_prefix_v4 = 33", "min_prefix_v4 = 33 is not a prefix length between 0 and 32"),
        ("min_prefix_v6 = true", "min_prefix_v6 = True is not a prefix length"),
        ("never_route = ['10.1.2.3/8']", "never_route: '10.1.2.3/8' is not a CIDR"),
        ("allow_conflicting_subnets = '10.0.0.0/8'", "allow_conflicting_subnets must be a list"),
        ("allow_manager_address = 1", "allow_manager_address = 1 must be true or false"),
        ("min_prefix = 8", "unknown key 'min_prefix'"),
        ("min_prefix_v4 = ", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_key(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=str(path)) as caught:
        load_policy(path)
    assert message in str(caught.value)


def test_status_lists_what_the_policy_kept_out() -> None:
    note = "192.168.1.0/24 (the LAN this machine sits on) is not routed to the cluster, though inside 192.168.0.0/16"
    state = pb.State(phase=pb.State.CONNECTED, policy_notes=[note])
    assert describe_state(state)["policy_notes"] == [note]
    assert any(line.startswith("policy") and line.endswith(note) for line in format_state(state).splitlines())
