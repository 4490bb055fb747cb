"""tether-manager as a process: bad configuration stops it at start with the key and the value named."""

import json
import os
import subprocess
import sys

import pytest

from tether.lab.apiserver.server import LabApiServerThread

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tether"}}


def configmap(data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tether-manager", "namespace": "tether"},
        "data": data,
    }


def run_manager(tmp_path, seed: list[dict], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    with LabApiServerThread(seed=seed) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps(server.kubeconfig()))
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIENT_", "POD_", "SERVICE_"))}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tether.manager.main",
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                "0",
                "--resolv-conf",
                str(resolv),
                "--log-format",
                "text",
            ],
            env={**clean_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.mark.parametrize(
    ("seed", "env", "expected"),
    [
        (
            [NAMESPACE],
            {"CLIENT_ROUTING_ALSO_PROXY_SUBNETS": "10.0.0.0/33"},
            ["client.routing.alsoProxySubnets", "CLIENT_ROUTING_ALSO_PROXY_SUBNETS", "10.0.0.0/33"],
        ),
        (
            [NAMESPACE, configmap({"podCIDRStrategy": "guess"})],
            {},
            ["podCIDRStrategy", "guess", "coverPodIPs"],
        ),
        (
            [NAMESPACE, configmap({"client.routing.neverProxySubnet": "[10.1.0.0/16]"})],
            {},
            ["client.routing.neverProxySubnet"],
        ),
    ],
    ids=["env-cidr", "configmap-strategy", "configmap-typo"],
)
def test_invalid_configuration_stops_the_manager_naming_key_and_value(tmp_path, seed, env, expected):
    result = run_manager(tmp_path, seed, env)
    assert result.returncode == 2, result.stderr
    first_line = result.stderr.strip().splitlines()[-1]
    assert first_line.startswith("tether-manager: invalid configuration:")
    for fragment in expected:
        assert fragment in first_line
    assert "Traceback" not in result.stderr


def test_help_describes_the_manager():
    result = subprocess.run([sys.executable, "-m", "tether.manager.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "traffic-manager" in result.stdout and "--port" in result.stdout
