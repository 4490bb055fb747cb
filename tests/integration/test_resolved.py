"""The systemd-resolved resolver mode against a real systemd-resolved: the lab's `--resolver systemd-resolved`
workstation (tether.lab.resolved), the real helper started inside that environment, real clients through
`tether lab run` (getent through the stub 127.0.0.53, resolvectl over the private bus, curl).

The module switches the lab to the variant and puts the plain lab back at its end.
"""

from __future__ import annotations

import secrets

import pytest

from tests.integration.cluster_dns_count import cluster_dns_queries
from tests.integration.helper_fixture import running_helper
from tether.lab.resolved import RESOLVER, ResolvedFiles
from tether.lab.topology import INET_WEB_IP

pytestmark = pytest.mark.timeout(600)

#: Names under the default exclude-suffixes (.com .io .net .org .ru) that the cluster DNS would answer or forward.
EXCLUDED_NAMES = ("web.default.com", "kubernetes.default.org", "echo.default.svc.io", "web.net")


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


def test_names_excluded_by_suffix_never_reach_the_cluster_dns_while_cluster_names_do(
    lab, lab_run, lab_control, resolved_lab, tmp_path
):
    queries = lambda: cluster_dns_queries(lab_control.journal_file)  # noqa: E731
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "excluded", (str(resolved_lab.enter),)) as helper:
        helper.start()
        helper.connect()
        before = queries()
        for name in EXCLUDED_NAMES:
            assert lab_run("getent", "hosts", name).returncode != 0, name
            assert lab_run("resolvectl", "query", "--cache=no", name).returncode != 0, name
        assert queries() == before, f"{EXCLUDED_NAMES} reached the cluster DNS"

        # the same clients with two-label cluster names: these do reach it (a fresh name each, no cache between)
        assert ok(lab_run, "getent", "hosts", "web.default").split()[0] == lab.service_ip("web")
        after_getent = queries()
        assert after_getent > before
        missing = f"nx-{secrets.token_hex(4)}.default"
        assert lab_run("resolvectl", "query", "--cache=no", missing).returncode != 0
        assert queries() > after_getent
