"""Serving the emulator: the kubeconfig that reaches it."""

from tether.lab.apiserver.server import kubeconfig_for


def test_kubeconfig_for_selects_the_namespace():
    config = kubeconfig_for("http://127.0.0.1:1234", name="lab", namespace="work")
    assert config["current-context"] == "lab"
    assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1234"
    assert config["contexts"][0]["context"] == {"cluster": "lab", "user": "lab", "namespace": "work"}
