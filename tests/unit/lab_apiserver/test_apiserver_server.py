"""Serving the emulator: on a thread for synchronous callers, seeded, and the kubeconfig that reaches it."""

import kubernetes
import pytest
from apiserver_support import CIDR
from kubernetes import client

from tether.lab.apiserver.server import LabApiServer, LabApiServerThread, SeedError, kubeconfig_for


def test_kubeconfig_for_selects_the_namespace():
    config = kubeconfig_for("http://127.0.0.1:1234", name="lab", namespace="work")
    assert config["current-context"] == "lab"
    assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1234"
    assert config["contexts"][0]["context"] == {"cluster": "lab", "user": "lab", "namespace": "work"}


def test_a_refused_seed_object_is_named():
    seed = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "lab"}},
    ]
    with pytest.raises(SeedError) as exc, LabApiServerThread(seed=seed):
        pass
    assert str(exc.value).startswith('seed object #1 (ConfigMap lab/Bad_Name): ConfigMap "Bad_Name" is invalid')


def test_urls_bracket_ipv6_hosts():
    assert LabApiServer(host="::1", port=6443).url == "http://[::1]:6443"
    assert LabApiServer(host="172.30.0.1", port=6443).url == "http://172.30.0.1:6443"


def test_the_thread_serves_the_official_client():
    with LabApiServerThread(namespaces=("default", "lab")) as server:
        api = kubernetes.config.new_client_from_config_dict(server.kubeconfig(namespace="lab"))
        try:
            names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
        finally:
            api.close()
        assert names == {"default", "lab"}
        assert server.call(lambda: server.emulator.resource_version) == 2


def test_seed_objects_keep_their_uids():
    # Seeded pods name their Deployment's uid in ownerReferences; the garbage collector goes by it.
    seed = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "0000-seeded"}}]
    with LabApiServerThread(service_cidr=CIDR, seed=seed) as srv:
        assert srv.call(srv.emulator.get_object, "v1", "ConfigMap", "c", "default")["metadata"]["uid"] == "0000-seeded"
