"""Routing (pure): resource URLs to kind, namespace, name and subresource; apiVersion and kind to a Kind."""

import pytest
from kmock import KubernetesError

from tether.lab.apiserver.kinds import KINDS_BY_TYPE
from tether.lab.apiserver.routing import Route, kind_of, parse_route

POD, NAMESPACE, NODE, DEPLOYMENT = (
    KINDS_BY_TYPE[t] for t in (("v1", "Pod"), ("v1", "Namespace"), ("v1", "Node"), ("apps/v1", "Deployment"))
)


def test_resource_urls():
    assert parse_route("/api/v1/pods") == Route(POD, None, None, None)
    assert parse_route("/api/v1/namespaces/web/pods/p/portforward") == Route(POD, "web", "p", "portforward")
    assert parse_route("/apis/apps/v1/namespaces/web/deployments/") == Route(DEPLOYMENT, "web", None, None)
    assert parse_route("/api/v1/nodes/n1/status") == Route(NODE, None, "n1", "status")


def test_a_namespace_and_its_own_subresources():
    assert parse_route("/api/v1/namespaces/web") == Route(NAMESPACE, None, "web", None)
    assert parse_route("/api/v1/namespaces/web/status") == Route(NAMESPACE, None, "web", "status")
    assert parse_route("/api/v1/namespaces/web/finalize") == Route(NAMESPACE, None, "web", "finalize")


def test_discovery_and_version_are_left_to_kmock():
    for path in ("/", "/version", "/api", "/api/v1", "/apis", "/apis/apps/v1"):
        assert parse_route(path) is None, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/widgets",
        "/api/v2/pods",
        "/api/v1/namespaces/web/nodes",  # cluster-scoped, so never inside a namespace
        "/api/v1/namespaces/web/configmaps/c/status",  # not a subresource of config maps
        "/api/v1/namespaces/web/pods/p/exec",
        "/api/v1/namespaces/web/pods/p/status/extra",
    ],
)
def test_unknown_resource_urls_are_404(path):
    with pytest.raises(KubernetesError) as exc:
        parse_route(path)
    assert exc.value.status == 404
    assert exc.value.message == "the server could not find the requested resource"


def test_kind_of():
    assert kind_of("apps/v1", "Deployment") is DEPLOYMENT
    with pytest.raises(KubernetesError) as exc:
        kind_of("v1", "Deployment")
    assert exc.value.status == 400
    assert exc.value.message == 'no kind "Deployment" is registered for version "v1"'
