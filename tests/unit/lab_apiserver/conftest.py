"""One emulator per test module, the official client on it, and a fresh namespace per test."""

import itertools

import kubernetes
import pytest
from apiserver_support import CIDR
from kubernetes import client

from tether.lab.apiserver.server import LabApiServerThread

_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    with LabApiServerThread(service_cidr=CIDR) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_client(server):
    api = kubernetes.config.new_client_from_config_dict(server.kubeconfig())
    yield api
    api.close()


@pytest.fixture
def v1(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client):
    return client.AppsV1Api(api_client)


@pytest.fixture
def ns(v1):
    """A fresh namespace per test: the module shares one server."""
    name = f"test-{next(_namespaces)}"
    v1.create_namespace({"metadata": {"name": name}})
    yield name
    v1.delete_namespace(name)
