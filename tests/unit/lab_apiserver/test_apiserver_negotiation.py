"""Which representation an Accept header asks for."""

from tether.lab.apiserver.negotiation import media_ranges, wants_aggregated_discovery, wants_table

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def test_media_ranges_keep_order_and_parameters():
    assert media_ranges('application/json;as=Table;v="v1", text/plain') == [
        ("application/json", {"as": "Table", "v": "v1"}),
        ("text/plain", {}),
    ]


def test_table_only_when_first_choice():
    assert wants_table(KUBECTL_GET)
    assert not wants_table("application/json")
    assert not wants_table("application/json, " + KUBECTL_GET)
    assert not wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io")
    assert not wants_table("")


def test_aggregated_discovery_v2_only():
    assert wants_aggregated_discovery("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    assert not wants_aggregated_discovery("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
