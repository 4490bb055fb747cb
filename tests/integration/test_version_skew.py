"""Version skew in the lab: the lab's manager, told by its test hooks (testHooks.* in its ConfigMap) to report
another version and API level, is refused when older than the client supports (the error names both versions
and the upgrade command; nothing is left on the workstation) and works when newer within the supported range
(`tether status` shows both versions)."""

from __future__ import annotations

from helper_fixture import running_helper, workstation_leftovers
from manager_client import restart_manager, set_manager_config

from tether.manager.api.skew import COMPATIBILITY_WINDOW
from tether.manager.api.version import API_LEVEL, __version__


def _report(original: dict[str, str] | None, version: str, level: int) -> dict[str, str]:
    return {**(original or {}), "testHooks.reportVersion": version, "testHooks.reportAPILevel": str(level)}


def test_an_older_manager_is_refused_and_a_newer_supported_one_works(lab, lab_control, workstation, tmp_path):
    original = set_manager_config(lab, workstation, _report(None, "0.9.0", 0))
    assert not any(key.startswith("testHooks.") for key in (original or {})), original
    try:
        restart_manager(lab)
        with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "skew") as helper:
            helper.start()
            out = helper.cli("connect", "--kubeconfig", str(helper.kubeconfig), timeout=90)
            assert out.returncode != 0, out.stdout
            assert "manager 0.9.0 (API level 0)" in out.stderr, out.stderr
            assert f"tether {__version__} (API level {API_LEVEL})" in out.stderr, out.stderr
            assert "tether manager upgrade --namespace tether" in out.stderr, out.stderr
            status = helper.status()
            assert status["phase"] == "disconnected"
            assert "tether manager upgrade --namespace tether" in status["last_error"]
            assert workstation_leftovers(lab.ws_netns) == []  # no TUN, route or nftables table

            newer = f"{__version__}.next"
            set_manager_config(lab, workstation, _report(original, newer, API_LEVEL + COMPATIBILITY_WINDOW))
            restart_manager(lab)
            state = helper.connect()
            assert (state["manager_version"], state["manager_api_level"]) == (newer, API_LEVEL + COMPATIBILITY_WINDOW)
            assert (state["client_version"], state["client_api_level"]) == (__version__, API_LEVEL)
            text = helper.cli("status").stdout
            assert f"client version   {__version__} (API level {API_LEVEL})" in text, text
            assert f"manager version  {newer} (API level {API_LEVEL + COMPATIBILITY_WINDOW})" in text, text
            helper.disconnect()
            assert helper.quit() == 0, helper.tail()
            assert helper.leftovers() == []
    finally:
        set_manager_config(lab, workstation, original)
        restart_manager(lab)
