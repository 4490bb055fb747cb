"""The version-skew matrix (tether.manager.api.skew): which client and manager API levels work together, and
what the user is told when they don't."""

from __future__ import annotations

import pytest

from tether.manager.api import skew
from tether.manager.api.skew import Side, Verdict, judge_client, judge_manager
from tether.manager.api.version import API_LEVEL

CLIENT = Side("1.4.0", 3)

# (manager version, manager level, the manager's stated minimum client level, verdict)
MANAGER_MATRIX = [
    ("0.1.0", 0, 0, Verdict.MANAGER_TOO_OLD),  # predates API levels
    ("1.0.0", 1, 0, Verdict.MANAGER_TOO_OLD),  # below the client's minimum (2 in these tests)
    ("1.2.0", 2, 0, Verdict.COMPATIBLE),  # older, within the range
    ("1.4.0", 3, 0, Verdict.COMPATIBLE),  # the same level
    ("1.4.0", 3, 3, Verdict.COMPATIBLE),  # states the client's own level as its minimum
    ("1.5.0", 4, 0, Verdict.COMPATIBLE),  # newer, within the window
    ("1.5.0", 4, 2, Verdict.COMPATIBLE),  # newer, and says it still serves older clients
    ("1.5.0", 4, 4, Verdict.CLIENT_TOO_OLD),  # newer, and says it dropped this client's level
    ("2.0.0", 5, 0, Verdict.MANAGER_TOO_NEW),  # beyond the window
    ("2.0.0", 5, 3, Verdict.MANAGER_TOO_NEW),  # beyond the window whatever it says it serves
    ("9.0.0", 9, 9, Verdict.CLIENT_TOO_OLD),  # its own refusal is the more precise word
]


@pytest.mark.parametrize(("version", "level", "min_client", "verdict"), MANAGER_MATRIX)
def test_the_clients_verdict_on_a_manager(version: str, level: int, min_client: int, verdict: Verdict) -> None:
    result = judge_manager(CLIENT, Side(version, level), min_client, "tether", min_manager_level=2, window=1)
    assert result.verdict is verdict
    assert result.compatible == (verdict is Verdict.COMPATIBLE)
    if verdict is Verdict.COMPATIBLE:
        assert result.message == ""
    else:
        # Every refusal names both versions and levels, and where the manager is.
        assert f"manager {version} (API level {level})" in result.message
        assert "tether 1.4.0 (API level 3)" in result.message
        assert 'in namespace "tether"' in result.message


def test_a_too_old_manager_names_the_upgrade_command() -> None:
    result = judge_manager(Side("1.4.0", 1), Side("0.9.0", 0), namespace="team-a")
    assert result.verdict is Verdict.MANAGER_TOO_OLD
    assert result.message == (
        'the traffic-manager in namespace "team-a" is too old for this client: manager 0.9.0 (API level 0), '
        "tether 1.4.0 (API level 1), which needs a manager of API level 1 or later. "
        "Upgrade the traffic-manager: tether manager upgrade --namespace team-a"
    )


def test_a_too_new_manager_says_to_upgrade_tether() -> None:
    result = judge_manager(Side("1.4.0", 1), Side("3.0.0", 3), namespace="tether")
    assert result.verdict is Verdict.MANAGER_TOO_NEW
    assert "supports managers up to API level 2" in result.message
    assert result.message.endswith("Upgrade tether on this machine (the CLI and the helper) to 3.0.0 or later.")
    assert "tether manager upgrade" not in result.message


def test_a_client_dropped_by_the_manager_says_to_upgrade_tether() -> None:
    result = judge_manager(Side("1.4.0", 1), Side("2.0.0", 2), manager_min_client_level=2, namespace="tether")
    assert result.verdict is Verdict.CLIENT_TOO_OLD
    assert "which serves clients of API level 2 or later" in result.message
    assert result.message.endswith("to 2.0.0 or later.")


# (client version, client level (0: stated none), the manager's minimum, verdict)
CLIENT_MATRIX = [
    ("1.0.0", 0, 1, Verdict.COMPATIBLE),  # a client from before levels were sent spoke level 1
    ("1.0.0", 0, 2, Verdict.CLIENT_TOO_OLD),
    ("1.1.0", 1, 2, Verdict.CLIENT_TOO_OLD),
    ("1.2.0", 2, 2, Verdict.COMPATIBLE),
    ("1.9.0", 7, 2, Verdict.COMPATIBLE),  # a newer client: the client judges the manager, not the other way
]


@pytest.mark.parametrize(("version", "level", "minimum", "verdict"), CLIENT_MATRIX)
def test_the_managers_verdict_on_a_client(version: str, level: int, minimum: int, verdict: Verdict) -> None:
    result = judge_client(Side(version, level), Side("2.0.0", 3), minimum)
    assert result.verdict is verdict
    if verdict is Verdict.CLIENT_TOO_OLD:
        assert f"tether {version} (API level {level or 1})" in result.message
        assert "manager 2.0.0 (API level 3)" in result.message
        assert f"serves clients of API level {minimum} or later" in result.message


def test_this_build_accepts_itself_and_the_promised_window() -> None:
    me = Side("x", API_LEVEL)
    assert judge_manager(me, me, skew.MIN_CLIENT_API_LEVEL).compatible
    assert judge_client(me, me).compatible
    assert judge_manager(me, Side("y", API_LEVEL + skew.COMPATIBILITY_WINDOW), skew.MIN_CLIENT_API_LEVEL).compatible
    assert not judge_manager(me, Side("y", API_LEVEL + skew.COMPATIBILITY_WINDOW + 1)).compatible
    assert 1 <= skew.MIN_CLIENT_API_LEVEL <= API_LEVEL
    assert skew.MIN_MANAGER_API_LEVEL <= API_LEVEL
