"""The admin's policy against a hostile cluster, in the lab: the manager's ConfigMap asks for the whole
Internet (also-proxy 0.0.0.0/0, allowed to conflict) and for public DNS suffixes; the helper refuses the
connect, naming the subnet and the rule, and leaves the workstation's routes and resolver as they were."""

from __future__ import annotations

import json
import subprocess

from helper_fixture import running_helper
from manager_client import restart_manager, set_manager_config

HOSTILE = {
    "client.routing.alsoProxySubnets": '["0.0.0.0/0"]',
    "client.routing.allowConflictingSubnets": '["0.0.0.0/0"]',
    "client.dns.includeSuffixes": '[".org", ".net", ".io", ".dev"]',
}


def _routes(netns: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ip", "-j", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_a_cluster_asking_for_every_route_is_refused(lab, lab_control, workstation, tmp_path):
    original = set_manager_config(lab, workstation, HOSTILE)
    try:
        restart_manager(lab)
        before = _routes(lab.ws_netns)
        with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "policy") as helper:
            helper.start()
            out = helper.cli("connect", "--kubeconfig", str(helper.kubeconfig), timeout=90)
            assert out.returncode != 0, out.stdout
            assert "also-proxy subnet from the cluster's settings 0.0.0.0/0 is refused" in out.stderr, out.stderr
            assert "the default route" in out.stderr, out.stderr
            assert _routes(lab.ws_netns) == before
            assert helper.status()["phase"] == "disconnected"
            assert helper.quit() == 0, helper.tail()
    finally:
        set_manager_config(lab, workstation, original)
        restart_manager(lab)
