"""Manager configuration: defaults < ConfigMap < environment, and errors that name key, source and value."""

from __future__ import annotations

import json
from ipaddress import ip_network as net
from types import SimpleNamespace

import pytest
from kubernetes.client.exceptions import ApiException

from tether.manager.api.skew import MIN_CLIENT_API_LEVEL, Side
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.config import (
    DEFAULT_EXCLUDE_SUFFIXES,
    ConfigError,
    ManagerConfig,
    PodCIDRStrategy,
    load_config,
    read_configmap,
)

VALUES_YAML = """
client:
  routing:
    alsoProxySubnets: [10.50.0.0/16, "fd00:50::/64"]
    neverProxySubnets:
      - 10.50.1.0/24
    allowConflictingSubnets: []
  dns:
    includeSuffixes: [Corp.Example.COM., .internal]
    excludeSuffixes: [.com]
podCIDRStrategy: coverPodIPs
serviceCIDR: 10.96.0.0/12
clusterDomain: Cluster.Example.
"""


class TestDefaults:
    def test_no_sources(self):
        config = load_config({}, None)
        assert config == ManagerConfig()
        assert config.allow_conflicting_subnets == ()
        assert config.also_proxy_subnets == ()
        assert config.never_proxy_subnets == ()
        assert config.dns_include_suffixes == ()
        assert config.dns_exclude_suffixes == (".com", ".io", ".net", ".org", ".ru")
        assert config.pod_cidr_strategy is PodCIDRStrategy.AUTO
        assert config.pod_cidrs == ()
        assert config.service_cidr is None
        assert config.cluster_domain == "cluster.local"
        assert set(config.sources.values()) == {"default"}

    def test_empty_configmap_and_unrelated_env(self):
        assert load_config({"PATH": "/bin", "HOME": "/root"}, {}) == ManagerConfig()

    def test_empty_env_value_means_unset(self):
        config = load_config({"CLIENT_DNS_EXCLUDE_SUFFIXES": "", "POD_CIDR_STRATEGY": "  "}, None)
        assert config.dns_exclude_suffixes == DEFAULT_EXCLUDE_SUFFIXES
        assert config.pod_cidr_strategy is PodCIDRStrategy.AUTO

    def test_frozen(self):
        with pytest.raises(AttributeError):
            ManagerConfig().cluster_domain = "x"  # type: ignore[misc]


class TestConfigMap:
    def test_values_yaml(self):
        config = load_config({}, {"values.yaml": VALUES_YAML})
        assert config.also_proxy_subnets == (net("10.50.0.0/16"), net("fd00:50::/64"))
        assert config.never_proxy_subnets == (net("10.50.1.0/24"),)
        assert config.allow_conflicting_subnets == ()
        assert config.dns_include_suffixes == (".corp.example.com", ".internal")
        assert config.dns_exclude_suffixes == (".com",)
        assert config.pod_cidr_strategy is PodCIDRStrategy.COVER_POD_IPS
        assert config.service_cidr == net("10.96.0.0/12")
        assert config.cluster_domain == "cluster.example"
        assert config.sources["podCIDRStrategy"] == "ConfigMap tether-manager key values.yaml"
        assert config.sources["podCIDRs"] == "default"

    def test_flat_keys(self):
        data = {
            "client.routing.alsoProxySubnets": "[10.1.0.0/16, 10.2.0.0/16]",
            "client.routing.neverProxySubnets": "10.3.0.0/16, 10.4.0.0/16",
            "client.routing.allowConflictingSubnets": '["10.5.0.0/16"]',
            "client.dns.includeSuffixes": ".a.example .b.example",
            "podCIDRStrategy": "environment",
            "podCIDRs": "10.244.0.0/16",
            "clusterDomain": "cluster.local",
        }
        config = load_config({}, data)
        assert config.also_proxy_subnets == (net("10.1.0.0/16"), net("10.2.0.0/16"))
        assert config.never_proxy_subnets == (net("10.3.0.0/16"), net("10.4.0.0/16"))
        assert config.allow_conflicting_subnets == (net("10.5.0.0/16"),)
        assert config.dns_include_suffixes == (".a.example", ".b.example")
        assert config.pod_cidr_strategy is PodCIDRStrategy.ENVIRONMENT
        assert config.pod_cidrs == (net("10.244.0.0/16"),)
        assert config.sources["podCIDRs"] == "ConfigMap tether-manager key podCIDRs"

    def test_values_yaml_and_flat_keys_combine(self):
        config = load_config({}, {"values.yaml": "podCIDRStrategy: nodePodCIDRs\n", "serviceCIDR": "10.0.0.0/16"})
        assert config.pod_cidr_strategy is PodCIDRStrategy.NODE_POD_CIDRS
        assert config.service_cidr == net("10.0.0.0/16")

    def test_dotted_keys_inside_values_yaml(self):
        config = load_config({}, {"values.yaml": "client.routing.alsoProxySubnets: [10.9.0.0/16]\n"})
        assert config.also_proxy_subnets == (net("10.9.0.0/16"),)

    def test_empty_sections_and_null_list(self):
        config = load_config({}, {"values.yaml": "client:\n  routing:\n    alsoProxySubnets:\n  dns:\n"})
        assert config == ManagerConfig()

    def test_empty_values_yaml(self):
        assert load_config({}, {"values.yaml": ""}) == ManagerConfig()
        assert load_config({}, {"values.yaml": "# nothing\n"}) == ManagerConfig()

    def test_duplicates_removed_order_kept(self):
        config = load_config({}, {"client.routing.alsoProxySubnets": "10.2.0.0/16 10.1.0.0/16 10.2.0.0/16"})
        assert config.also_proxy_subnets == (net("10.2.0.0/16"), net("10.1.0.0/16"))

    def test_clearing_a_default_list(self):
        assert load_config({}, {"values.yaml": "client: {dns: {excludeSuffixes: []}}"}).dns_exclude_suffixes == ()

    def test_strategy_case_insensitive(self):
        assert load_config({"POD_CIDR_STRATEGY": "COVERPODIPS"}, None).pod_cidr_strategy is (
            PodCIDRStrategy.COVER_POD_IPS
        )


class TestEnvironment:
    ENV = {
        "CLIENT_ROUTING_ALLOW_CONFLICTING_SUBNETS": "10.7.0.0/16",
        "CLIENT_ROUTING_ALSO_PROXY_SUBNETS": '["10.60.0.0/16", "10.61.0.0/16"]',
        "CLIENT_ROUTING_NEVER_PROXY_SUBNETS": "10.60.1.0/24,10.60.2.0/24",
        "CLIENT_DNS_INCLUDE_SUFFIXES": "[.svc.example]",
        "CLIENT_DNS_EXCLUDE_SUFFIXES": ".com .org",
        "POD_CIDR_STRATEGY": "environment",
        "POD_CIDRS": "10.244.0.0/16 fd00:244::/56",
        "SERVICE_CIDR": "10.43.0.0/16",
        "CLUSTER_DOMAIN": "k8s.local",
    }

    def test_every_variable(self):
        config = load_config(self.ENV, None)
        assert config.allow_conflicting_subnets == (net("10.7.0.0/16"),)
        assert config.also_proxy_subnets == (net("10.60.0.0/16"), net("10.61.0.0/16"))
        assert config.never_proxy_subnets == (net("10.60.1.0/24"), net("10.60.2.0/24"))
        assert config.dns_include_suffixes == (".svc.example",)
        assert config.dns_exclude_suffixes == (".com", ".org")
        assert config.pod_cidr_strategy is PodCIDRStrategy.ENVIRONMENT
        assert config.pod_cidrs == (net("10.244.0.0/16"), net("fd00:244::/56"))
        assert config.service_cidr == net("10.43.0.0/16")
        assert config.cluster_domain == "k8s.local"
        assert config.sources["serviceCIDR"] == "env SERVICE_CIDR"

    def test_env_overrides_configmap(self):
        config = load_config(
            {"CLIENT_ROUTING_ALSO_PROXY_SUBNETS": "10.99.0.0/16", "SERVICE_CIDR": "10.43.0.0/16"},
            {"values.yaml": VALUES_YAML},
        )
        assert config.also_proxy_subnets == (net("10.99.0.0/16"),)
        assert config.service_cidr == net("10.43.0.0/16")
        # Keys the environment does not set still come from the ConfigMap.
        assert config.never_proxy_subnets == (net("10.50.1.0/24"),)
        assert config.pod_cidr_strategy is PodCIDRStrategy.COVER_POD_IPS
        assert config.sources["client.routing.alsoProxySubnets"] == "env CLIENT_ROUTING_ALSO_PROXY_SUBNETS"

    @pytest.mark.parametrize("value", ["[fd00::/8, 10.0.0.0/8]", '["fd00::/8", "10.0.0.0/8"]', "fd00::/8,10.0.0.0/8"])
    def test_list_spellings_with_unquoted_ipv6(self, value):
        config = load_config({"CLIENT_ROUTING_ALSO_PROXY_SUBNETS": value}, None)
        assert config.also_proxy_subnets == (net("fd00::/8"), net("10.0.0.0/8"))

    def test_env_empty_list_literal_clears(self):
        config = load_config({"CLIENT_ROUTING_ALSO_PROXY_SUBNETS": "[]"}, {"values.yaml": VALUES_YAML})
        assert config.also_proxy_subnets == ()


def _error(env, data=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(env, data)
    return str(info.value)


class TestInvalidValues:
    @pytest.mark.parametrize(
        ("variable", "key", "value", "expected"),
        [
            (
                "CLIENT_ROUTING_ALSO_PROXY_SUBNETS",
                "client.routing.alsoProxySubnets",
                "10.0.0.0/33",
                'invalid CIDR "10.0.0.0/33"',
            ),
            (
                "CLIENT_ROUTING_NEVER_PROXY_SUBNETS",
                "client.routing.neverProxySubnets",
                "10.1.2.3/16",
                "did you mean 10.1.0.0/16?",
            ),
            (
                "CLIENT_ROUTING_ALLOW_CONFLICTING_SUBNETS",
                "client.routing.allowConflictingSubnets",
                "10.0.0.1",
                'invalid CIDR "10.0.0.1"',
            ),
            ("POD_CIDRS", "podCIDRs", "[10.244.0.0/16, nope/8]", 'invalid CIDR "nope/8"'),
            ("SERVICE_CIDR", "serviceCIDR", "10.96.0.0/12,10.97.0.0/16", 'invalid CIDR "10.96.0.0/12,10.97.0.0/16"'),
            (
                "CLIENT_DNS_INCLUDE_SUFFIXES",
                "client.dns.includeSuffixes",
                "good.example bad..example",
                'invalid DNS suffix "bad..example"',
            ),
            ("CLIENT_DNS_EXCLUDE_SUFFIXES", "client.dns.excludeSuffixes", "-bad.com", 'invalid DNS suffix "-bad.com"'),
            ("CLIENT_DNS_EXCLUDE_SUFFIXES", "client.dns.excludeSuffixes", "[.com, ", '"[.com, "'),
            ("CLUSTER_DOMAIN", "clusterDomain", "cluster local", 'invalid cluster domain "cluster local"'),
            ("CLUSTER_DOMAIN", "clusterDomain", ".cluster.local", 'invalid cluster domain ".cluster.local"'),
            ("POD_CIDR_STRATEGY", "podCIDRStrategy", "nodes", 'unknown pod CIDR strategy "nodes"'),
        ],
    )
    def test_env_errors_name_key_source_and_value(self, variable, key, value, expected):
        message = _error({variable: value})
        assert message.startswith(f"{key} (from env {variable}): ")
        assert expected in message

    def test_brief_example_message(self):
        message = _error({"CLIENT_ROUTING_ALSO_PROXY_SUBNETS": "10.0.0.0/33"})
        assert message.startswith(
            'client.routing.alsoProxySubnets (from env CLIENT_ROUTING_ALSO_PROXY_SUBNETS): invalid CIDR "10.0.0.0/33"'
        )

    def test_unknown_strategy_lists_valid_ones(self):
        message = _error({"POD_CIDR_STRATEGY": "magic"})
        assert "auto, nodePodCIDRs, coverPodIPs, environment" in message

    def test_error_attributes(self):
        with pytest.raises(ConfigError) as info:
            load_config({"SERVICE_CIDR": "x"}, None)
        assert info.value.key == "serviceCIDR"
        assert info.value.source == "env SERVICE_CIDR"
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize(
        ("values_yaml", "key", "expected"),
        [
            (
                "client: {routing: {alsoProxySubnets: [10.0.0.0/33]}}",
                "client.routing.alsoProxySubnets",
                'invalid CIDR "10.0.0.0/33"',
            ),
            ("client: {routing: {alsoProxySubnets: [42]}}", "client.routing.alsoProxySubnets", "invalid CIDR 42"),
            (
                "client: {routing: {alsoProxySubnets: {a: 1}}}",
                "client.routing.alsoProxySubnets",
                "expected a list, got {'a': 1}",
            ),
            ("serviceCIDR: [10.96.0.0/12]", "serviceCIDR", "invalid CIDR ['10.96.0.0/12']"),
            ("podCIDRStrategy: 7", "podCIDRStrategy", "unknown pod CIDR strategy 7"),
            ("clusterDomain: true", "clusterDomain", "invalid cluster domain True"),
            ("client: {dns: {includeSuffixes: [ü.example]}}", "client.dns.includeSuffixes", "xn--"),
            ("client: {routing: oops}", "client.routing", 'expected a mapping, got "oops"'),
        ],
    )
    def test_values_yaml_errors(self, values_yaml, key, expected):
        message = _error({}, {"values.yaml": values_yaml})
        assert message.startswith(f"{key} (from ConfigMap tether-manager key values.yaml): ")
        assert expected in message

    def test_flat_key_error_names_configmap_key(self):
        message = _error({}, {"client.routing.neverProxySubnets": "10.0.0.0/8, 300.0.0.0/8"})
        assert message.startswith(
            "client.routing.neverProxySubnets (from ConfigMap tether-manager key client.routing.neverProxySubnets): "
        )
        assert 'invalid CIDR "300.0.0.0/8"' in message

    def test_configmap_name_used_in_messages(self):
        with pytest.raises(ConfigError) as info:
            load_config({}, {"serviceCIDR": "nope"}, configmap_name="my-settings")
        assert "(from ConfigMap my-settings key serviceCIDR)" in str(info.value)

    @pytest.mark.parametrize("port", ["³", "٣", "80٨1"])
    def test_port_in_non_ascii_digits_is_named(self, port):
        # str.isdigit() accepts them all; int() raised a bare ValueError on "³" and read "٣" as 3
        message = _error({"TUNNEL_MUX_PORT": port})
        assert "invalid port " in message and "expected a number from 1 to 65535" in message

    def test_invalid_yaml(self):
        message = _error({}, {"values.yaml": "client: [\n"})
        assert message.startswith("ConfigMap tether-manager key values.yaml: not valid YAML: ")
        assert "line 2" in message

    def test_values_yaml_must_be_a_mapping(self):
        assert "expected a mapping" in _error({}, {"values.yaml": "- a\n- b\n"})

    def test_environment_strategy_requires_pod_cidrs(self):
        message = _error({"POD_CIDR_STRATEGY": "environment"})
        assert message.startswith("podCIDRs is not set")
        assert '"environment" (from env POD_CIDR_STRATEGY)' in message

    def test_environment_strategy_rejects_empty_pod_cidrs(self):
        message = _error({}, {"values.yaml": "podCIDRStrategy: environment\npodCIDRs: []\n"})
        assert message.startswith("podCIDRs (from ConfigMap tether-manager key values.yaml) is empty")

    def test_env_can_fix_a_configmap_value(self):
        # The ConfigMap's bad value never gets parsed when the environment overrides it.
        config = load_config({"SERVICE_CIDR": "10.43.0.0/16"}, {"serviceCIDR": "10.43.0.0/99"})
        assert config.service_cidr == net("10.43.0.0/16")


class TestUnknownKeys:
    def test_flat_typo_is_rejected_with_suggestion(self):
        message = _error({}, {"client.routing.alsoProxySubnet": "10.0.0.0/8"})
        assert "unknown keys: client.routing.alsoProxySubnet (did you mean client.routing.alsoProxySubnets?)" in (
            message
        )
        assert "ConfigMap tether-manager" in message

    def test_nested_typos_are_all_named(self):
        message = _error({}, {"values.yaml": "client:\n  routin: {}\n  dns: {includeSufixes: []}\nimage: x\n"})
        assert "client.routin (did you mean client.routing?)" in message
        assert "client.dns.includeSufixes (did you mean client.dns.includeSuffixes?)" in message
        assert "image" in message

    def test_key_set_twice_in_one_configmap(self):
        message = _error({}, {"values.yaml": "podCIDRs: [10.0.0.0/8]\n", "podCIDRs": "10.0.0.0/8"})
        assert "podCIDRs is set both in ConfigMap tether-manager key values.yaml" in message

    def test_unknown_env_vars_are_ignored(self):
        assert load_config({"CLIENT_ROUTING_TYPO": "x"}, None) == ManagerConfig()


class _Response:
    def __init__(self, body: dict) -> None:
        self.data = json.dumps(body).encode()
        self.released = False

    def release_conn(self) -> None:
        self.released = True


class TestReadConfigmap:
    def test_found(self):
        response = _Response({"kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"podCIDRs": "10.0.0.0/8"}})
        calls = []

        def read(name, namespace, **kwargs):
            calls.append((name, namespace, kwargs))
            return response

        api = SimpleNamespace(read_namespaced_config_map=read)
        assert read_configmap(api, "tether", "tether-manager") == {"podCIDRs": "10.0.0.0/8"}
        assert calls[0][:2] == ("tether-manager", "tether")
        assert response.released

    def test_without_data(self):
        api = SimpleNamespace(read_namespaced_config_map=lambda *a, **k: _Response({"metadata": {"name": "m"}}))
        assert read_configmap(api, "tether", "m") == {}

    def test_missing_is_none(self):
        def read(*args, **kwargs):
            raise ApiException(status=404, reason="Not Found")

        assert read_configmap(SimpleNamespace(read_namespaced_config_map=read), "tether", "m") is None

    def test_other_errors_propagate(self):
        def read(*args, **kwargs):
            raise ApiException(status=403, reason="Forbidden")

        with pytest.raises(ApiException):
            read_configmap(SimpleNamespace(read_namespaced_config_map=read), "tether", "m")


def test_tunnel_allow_destinations_from_values_yaml_and_env():
    config = load_config({}, {"values.yaml": "tunnel:\n  allowDestinations: [127.0.0.1/32]\n"})
    assert [str(n) for n in config.tunnel_allow_destinations] == ["127.0.0.1/32"]
    config = load_config({"TUNNEL_ALLOW_DESTINATIONS": "169.254.169.254/32"}, None)
    assert [str(n) for n in config.tunnel_allow_destinations] == ["169.254.169.254/32"]
    assert load_config({}, None).tunnel_allow_destinations == ()


def test_version_skew_test_hooks_from_configmap_and_env():
    config = load_config({}, {"testHooks.reportVersion": "0.9.0", "testHooks.reportAPILevel": "0"})
    assert (config.report_version, config.report_api_level, config.min_client_api_level) == ("0.9.0", 0, None)
    config = load_config(
        {"TETHER_MANAGER_REPORT_API_LEVEL": "2", "TETHER_MANAGER_MIN_CLIENT_API_LEVEL": "2"},
        {"values.yaml": "testHooks:\n  reportVersion: 99.1.0\n  reportAPILevel: 1\n"},
    )
    assert (config.report_version, config.report_api_level, config.min_client_api_level) == ("99.1.0", 2, 2)
    assert config.identity() == Side("99.1.0", 2) and config.min_client_level() == 2
    unset = load_config({}, None)
    assert (unset.report_version, unset.report_api_level, unset.min_client_api_level) == ("", None, None)
    assert unset.identity() == Side(__version__, API_LEVEL) and unset.min_client_level() == MIN_CLIENT_API_LEVEL
    assert load_config({}, {"testHooks.reportAPILevel": "0"}).identity() == Side(__version__, 0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"testHooks.reportAPILevel": "-1"},
            "testHooks.reportAPILevel (from ConfigMap tether-manager key testHooks.reportAPILevel): "
            'invalid API level "-1"',
        ),
        ({"testHooks.minClientAPILevel": "two"}, 'invalid API level "two"'),
        ({"testHooks.reportVersion": "1.0 beta"}, 'invalid version "1.0 beta"'),
        ({"testHooks.reportVersion": "x" * 65}, "invalid version"),
    ],
)
def test_bad_test_hook_values_are_named(data, expected):
    with pytest.raises(ConfigError) as caught:
        load_config({}, data)
    assert expected in str(caught.value)
