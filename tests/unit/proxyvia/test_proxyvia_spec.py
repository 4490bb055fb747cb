"""--proxy-via values: parsing, every validation error, symbol expansion, workload checks, auto rules."""

import ipaddress
import re

import pytest

from tether.helper.api.proxyvia import (
    ProxyRule,
    ProxyViaError,
    WorkloadRef,
    auto_rules,
    check_workloads,
    combine,
    parse_proxy_via,
    parse_proxy_vias,
    resolve,
    translated_subnets,
)

net = ipaddress.ip_network
SERVICE = [net("10.96.0.0/12")]
PODS = [net("10.244.0.0/16"), net("fd00:244::/64")]
ALSO = [net("192.168.50.0/24")]


def test_parse_cidr_and_symbols():
    spec = parse_proxy_via("10.128.0.0/9=echo")
    assert spec.network == net("10.128.0.0/9") and spec.symbol is None
    assert (spec.workload, spec.namespace, spec.kind) == ("echo", None, "")
    assert spec.value == "10.128.0.0/9=echo"
    for symbol in ("also", "service", "pods", "all"):
        spec = parse_proxy_via(f"{symbol}=echo")
        assert spec.symbol == symbol and spec.network is None
    assert parse_proxy_via(" ALL = echo ").symbol == "all"
    assert parse_proxy_via("fd00::/64=echo").network == net("fd00::/64")
    assert parse_proxy_via("10.1.2.3/32=echo").network == net("10.1.2.3/32")


def test_parse_namespace_and_ref():
    spec = parse_proxy_via("service=payments/gateway")
    assert (spec.namespace, spec.workload) == ("payments", "gateway")
    assert spec.ref("default") == WorkloadRef("payments", "gateway", "")
    assert parse_proxy_via("service=gateway").ref("default") == ("default", "gateway", "")
    assert str(WorkloadRef("ns", "w")) == "ns/w"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("10.0.0.0/8", 'invalid --proxy-via "10.0.0.0/8": expected CIDR=WORKLOAD (for example all=echo)'),
        ("=echo", "the CIDR (or also, service, pods, all) before the = is empty"),
        ("all=", "the workload after the = is empty"),
        ("10.96.0.1/12=echo", '"10.96.0.1/12" has host bits set; did you mean 10.96.0.0/12?'),
        ("fd00::1/64=echo", '"fd00::1/64" has host bits set; did you mean fd00::/64?'),
        ("services=echo", '"services" is neither a CIDR nor one of the symbols also, service, pods, all'),
        ("10.0.0/8=echo", '"10.0.0/8" is neither a CIDR nor one of the symbols'),
        ("10.0.0.1=echo", '"10.0.0.1" has no prefix length (write 10.0.0.1/32 for one address)'),
        ("10.0.0.0/x=echo", 'prefix length "x" is not a number'),
        ("10.0.0.0/33=echo", "prefix length 33 is out of range for IPv4"),
        ("fe80::%eth0/64=echo", "a zone index"),
        ("all=Echo", 'workload "Echo" is not a valid name: lower case letters, digits and "-"'),
        ("all=Echo", '(did you mean "echo"?)'),
        ("all=echo_1", 'workload "echo_1" is not a valid name'),
        ("all=-echo", 'workload "-echo" is not a valid name'),
        ("all=echo-", 'workload "echo-" is not a valid name'),
        ("all=" + "e" * 64, "at most 63 characters"),
        ("all=a/b/c", 'workload "a/b/c" must be NAME or NAMESPACE/NAME'),
        ("all=/echo", "the namespace is empty"),
        ("all=ns/", "the workload is empty"),
        ("all=Prod/echo", 'namespace "Prod" is not a valid name'),
        ("all=my.ns/echo", 'namespace "my.ns" is not a valid name'),
    ],
)
def test_parse_errors(value, complaint):
    with pytest.raises(ProxyViaError) as caught:
        parse_proxy_via(value)
    assert complaint in str(caught.value)
    assert str(caught.value).startswith(f'invalid --proxy-via "{value}": ')
    assert caught.value.value == value


def test_parse_rejects_non_string():
    with pytest.raises(ProxyViaError, match="expected a string, got int"):
        parse_proxy_via(7)  # type: ignore[arg-type]


def test_parse_many():
    specs = parse_proxy_vias(["service=a", "pods=b", "also=c", "10.0.0.0/16=d", "10.1.0.0/16=d", "fd00::/64=e"])
    assert [s.target for s in specs] == ["service", "pods", "also", "10.0.0.0/16", "10.1.0.0/16", "fd00::/64"]
    assert parse_proxy_vias("all=a")[0].symbol == "all"  # a lone string is one value
    assert parse_proxy_vias([]) == []
    # IPv4 and IPv6 never overlap
    assert len(parse_proxy_vias(["0.0.0.0/0=a", "::/0=b"])) == 2


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            ["10.0.0.0/8=a", "10.1.0.0/16=b"],
            'invalid --proxy-via "10.1.0.0/16=b": 10.1.0.0/16 overlaps 10.0.0.0/8 of "10.0.0.0/8=a"',
        ),
        (["10.1.0.0/16=a", "10.0.0.0/8=a"], '10.0.0.0/8 overlaps 10.1.0.0/16 of "10.1.0.0/16=a"'),
        (["10.1.0.0/16=a", "10.1.0.0/16=a"], "overlaps"),
        (["fd00::/48=a", "fd00::/64=b"], "fd00::/64 overlaps fd00::/48"),
        (["all=a", "all=b"], 'invalid --proxy-via "all=b": the symbol "all" is already given by "all=a"'),
        (["pods=a", "pods=a"], 'the symbol "pods" is already given by "pods=a"'),
        (["all=a", "service=b"], 'invalid --proxy-via "service=b": "service" is already included in "all=a"'),
        (["also=a", "all=b"], 'invalid --proxy-via "all=b": "all" includes "also", already given by "also=a"'),
    ],
)
def test_parse_many_errors(values, complaint):
    with pytest.raises(ProxyViaError) as caught:
        parse_proxy_vias(values)
    assert complaint in str(caught.value)


def test_resolve_expands_symbols_in_order():
    specs = parse_proxy_vias(["pods=b", "service=ns/a", "also=c"])
    rules = resolve(specs, SERVICE, PODS, ALSO, namespace="dev")
    b, a, c = WorkloadRef("dev", "b"), WorkloadRef("ns", "a"), WorkloadRef("dev", "c")
    assert rules == [
        ProxyRule(net("10.244.0.0/16"), b, "pods=b"),
        ProxyRule(net("fd00:244::/64"), b, "pods=b"),
        ProxyRule(net("10.96.0.0/12"), a, "service=ns/a"),
        ProxyRule(net("192.168.50.0/24"), c, "also=c"),
    ]
    assert str(rules[0]) == "10.244.0.0/16 via dev/b"


def test_resolve_all_drops_covered_and_accepts_strings():
    rules = resolve(
        parse_proxy_vias(["all=echo"]),
        ["10.96.0.0/12"],
        ["10.244.0.0/16", "10.244.0.0/16"],
        ["10.244.7.0/24", "10.100.0.0/16"],
        namespace="default",
    )
    assert [str(r.network) for r in rules] == ["10.96.0.0/12", "10.244.0.0/16"]
    assert {r.workload for r in rules} == {WorkloadRef("default", "echo")}


def test_resolve_cidr_entries_and_empty_symbols():
    rules = resolve(parse_proxy_vias(["10.128.0.0/9=echo", "also=x"]), SERVICE, PODS, [], namespace="default")
    assert rules == [ProxyRule(net("10.128.0.0/9"), WorkloadRef("default", "echo"), "10.128.0.0/9=echo")]
    # the kind found by check_workloads travels with the rule
    spec = parse_proxy_vias(["service=echo"])
    found = check_workloads(spec, "default", lambda ns, name: "Deployment")
    assert resolve(found, SERVICE, [], [], namespace="default")[0].workload == ("default", "echo", "Deployment")


def test_resolve_overlap_after_expansion():
    specs = parse_proxy_vias(["service=a", "10.96.5.0/24=b"])
    with pytest.raises(ProxyViaError) as caught:
        resolve(specs, SERVICE, PODS, ALSO, namespace="default")
    assert str(caught.value) == (
        'invalid --proxy-via "10.96.5.0/24=b": 10.96.5.0/24 (10.96.5.0/24) overlaps 10.96.0.0/12 of "service=a"'
    )
    # a cluster whose service and pod subnets overlap, proxied through two workloads
    specs = parse_proxy_vias(["service=a", "pods=b"])
    with pytest.raises(ProxyViaError, match=r'"pods=b": pods \(10.96.0.0/16\) overlaps 10.96.0.0/12 of "service=a"'):
        resolve(specs, SERVICE, [net("10.96.0.0/16")], [], namespace="default")


def test_resolve_bad_cluster_subnet():
    with pytest.raises(ValueError, match=re.escape('invalid pod subnet "10.244.0.1/16"')):
        resolve(parse_proxy_vias(["pods=a"]), [], ["10.244.0.1/16"], [], namespace="default")


def test_check_workloads():
    calls = []

    def find(namespace, name):
        calls.append((namespace, name))
        return {("dev", "echo"): "Deployment", ("db", "pg"): "StatefulSet"}.get((namespace, name))

    specs = parse_proxy_vias(["service=echo", "pods=echo", "10.1.0.0/16=db/pg"])
    checked = check_workloads(specs, "dev", find)
    assert [s.kind for s in checked] == ["Deployment", "Deployment", "StatefulSet"]
    assert calls == [("dev", "echo"), ("db", "pg")]  # once per workload

    specs = parse_proxy_vias(["service=echo", "pods=nope", "10.1.0.0/16=db/gone"])
    with pytest.raises(ProxyViaError) as caught:
        check_workloads(specs, "dev", find)
    assert str(caught.value) == (
        'invalid --proxy-via "pods=nope": no Deployment, ReplicaSet or StatefulSet named '
        '"dev/nope" (from "pods=nope"); "db/gone" (from "10.1.0.0/16=db/gone")'
    )


def test_check_workloads_propagates_lookup_failures():
    def find(namespace, name):
        raise ConnectionError("api server unreachable")

    with pytest.raises(ConnectionError):
        check_workloads(parse_proxy_vias(["all=echo"]), "default", find)


def test_auto_rules_combine_and_translated():
    auto = auto_rules(["10.96.0.0/12", net("10.96.1.0/24"), "10.244.0.0/16"])
    assert auto == [
        ProxyRule(net("10.96.0.0/12"), None, "auto-resolve"),
        ProxyRule(net("10.244.0.0/16"), None, "auto-resolve"),
    ]
    assert str(auto[0]) == "10.96.0.0/12 via the traffic-manager"
    explicit = resolve(parse_proxy_vias(["10.96.1.0/24=echo"]), [], [], [], namespace="default")
    rules = combine(explicit, auto)
    assert rules[0].workload == WorkloadRef("default", "echo") and rules[1:] == auto
    assert translated_subnets(rules) == [net("10.96.0.0/12"), net("10.244.0.0/16")]
