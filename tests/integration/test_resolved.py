"""The systemd-resolved resolver mode against a real systemd-resolved: the lab's `--resolver systemd-resolved`
workstation (tether.lab.resolved), the real helper started inside that environment, real clients through
`tether lab run` (getent through the stub 127.0.0.53, resolvectl over the private bus, curl).

The module switches the lab to the variant and puts the plain lab back at its end.
"""

from __future__ import annotations

import pytest

from tests.integration.helper_fixture import running_helper
from tether.lab.resolved import RESOLVER, ResolvedFiles
from tether.lab.topology import INET_WEB_IP

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def resolved_lab(lab, lab_control):
    lab_control.up(resolver=RESOLVER)
    try:
        yield ResolvedFiles(lab_control.paths.root / "resolved")
    finally:
        lab_control.up()


def ok(lab_run, *cmd: str) -> str:
    out = lab_run(*cmd, timeout=60)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}): {out.stdout}{out.stderr}"
    return out.stdout


def resolved_status(lab_run) -> str:
    # One upstream query first: resolved picks its "Current DNS Server" on first use, which is not our doing.
    ok(lab_run, "resolvectl", "query", "example.test")
    return ok(lab_run, "resolvectl", "status", "--no-pager")


def test_cluster_names_go_to_the_cluster_the_rest_upstream_and_disconnect_restores_resolved(
    lab, lab_run, resolved_lab, tmp_path
):
    before = resolved_status(lab_run)
    assert "tether" not in before
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "resolved", (str(resolved_lab.enter),)) as helper:
        helper.start()
        state = helper.connect()
        assert state["dns_mode"] == "systemd-resolved", state
        tun = state["tun_device"]
        web = lab.service_ip("web")

        link = ok(lab_run, "resolvectl", "status", tun, "--no-pager")
        assert "~cluster.local" in link and "~default" in link and "~svc" in link and "tether.local" in link, link
        assert "-DefaultRoute" in link, link

        assert ok(lab_run, "getent", "hosts", "web.default").split()[0] == web
        assert ok(lab_run, "getent", "hosts", "web").split()[0] == web  # single label: via the search domain
        assert ok(lab_run, "getent", "hosts", "web.default.svc").split()[0] == web
        query = ok(lab_run, "resolvectl", "query", "web.default")
        assert query.startswith(f"web.default: {web}"), query
        out = lab_run("curl", "-sS", "-f", "-m", "15", "http://web.default", timeout=30)
        assert out.returncode == 0 and out.stdout.startswith("hello from web"), out

        # an external name: through resolved's global (upstream) server, never through our link
        external = ok(lab_run, "resolvectl", "query", "example.test")
        assert str(INET_WEB_IP) in external and tun not in external, external
        # an excluded suffix never reaches our server (and so never the cluster)
        # (the cluster would answer it with web's address, the upstream does not know it)
        assert lab_run("getent", "hosts", "web.default.com").returncode != 0
        excluded = lab_run("resolvectl", "query", "web.default.com")
        assert excluded.returncode != 0 and tun not in excluded.stdout + excluded.stderr, excluded

        helper.disconnect()
        assert resolved_status(lab_run) == before
        assert lab_run("getent", "hosts", "web.default").returncode != 0


def test_a_crashed_helper_leaves_resolved_as_before_after_the_next_start(lab, lab_run, resolved_lab, tmp_path):
    before = resolved_status(lab_run)
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "crash", (str(resolved_lab.enter),)) as helper:
        helper.start()
        helper.connect()
        assert resolved_status(lab_run) != before
        helper.kill()
        helper.start()
        assert resolved_status(lab_run) == before
