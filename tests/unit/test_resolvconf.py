import ipaddress

from tether.manager.resolvconf import ResolverConfig, candidate_names, parse_resolv_conf

POD_RESOLV_CONF = """\
# written by the kubelet
nameserver 10.96.0.10
nameserver not-an-ip
search tether.svc.cluster.local svc.cluster.local cluster.local
options ndots:5 timeout:2
"""


def test_parse_pod_resolv_conf():
    config = parse_resolv_conf(POD_RESOLV_CONF)
    assert config.nameservers == (ipaddress.ip_address("10.96.0.10"),)
    assert config.search == ("tether.svc.cluster.local.", "svc.cluster.local.", "cluster.local.")
    assert config.ndots == 5
    assert config.options == ("timeout:2",)


def test_single_label_is_a_service_in_the_clients_namespace():
    config = parse_resolv_conf(POD_RESOLV_CONF)
    assert candidate_names("web", "default", config, "cluster.local") == ["web.default.svc.cluster.local."]
    assert candidate_names("web", "shop", config, "cluster.local.") == ["web.shop.svc.cluster.local."]


def test_relative_names_search_the_clients_namespace_first():
    config = parse_resolv_conf(POD_RESOLV_CONF)
    assert candidate_names("web.default", "shop", config, "cluster.local") == [
        "web.default.shop.svc.cluster.local.",
        "web.default.svc.cluster.local.",
        "web.default.cluster.local.",
        "web.default.",
    ]


def test_absolute_and_dotted_names():
    config = ResolverConfig(nameservers=(ipaddress.ip_address("10.0.0.10"),), search=("cluster.local.",), ndots=1)
    assert candidate_names("web.default.svc.cluster.local.", "x", config, "cluster.local") == [
        "web.default.svc.cluster.local."
    ]
    # at least ndots dots: tried as is first
    assert candidate_names("example.com", "x", config, "cluster.local")[0] == "example.com."
