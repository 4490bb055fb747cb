"""The DNS suffixes a connection uses: the manager's (or the default exclusions) joined with the client's."""

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.dns.rules import DEFAULT_EXCLUDE_SUFFIXES, RulesConfig, Target, decide
from tether.helper.root.session import dns_suffixes
from tether.manager.api import manager_pb2 as mpb


def info(include=(), exclude=()):
    return mpb.ClusterInfo(dns=mpb.DNSConfig(include_suffixes=list(include), exclude_suffixes=list(exclude)))


def test_defaults_without_either_side():
    assert dns_suffixes(info(), pb.ConnectRequest()) == ((), DEFAULT_EXCLUDE_SUFFIXES)


def test_client_suffixes_join_the_managers_without_repeats():
    request = pb.ConnectRequest(dns_include_suffixes=[".corp", ".lab"], dns_exclude_suffixes=[".internal"])
    include, exclude = dns_suffixes(info(include=[".lab"], exclude=[".com"]), request)
    assert include == (".lab", ".corp")
    assert exclude == (".com", ".internal")


def test_a_client_include_beats_a_default_exclusion():
    include, exclude = dns_suffixes(info(), pb.ConnectRequest(dns_include_suffixes=[".io"]))
    config = RulesConfig(include_suffixes=include, exclude_suffixes=exclude)
    assert decide("registry.io.", config).target is Target.CLUSTER
    assert decide("example.com.", config).target is Target.UPSTREAM
