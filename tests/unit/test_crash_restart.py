"""The service managers bring a killed helper back within a second, so its start-up cleanup can undo what
outlived it (/etc/resolver files on macOS, NRPT rules on Windows; issue 16)."""

import plistlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_windows_recovery_actions_restart_within_a_second():
    nsi = (ROOT / "packaging" / "windows" / "tether.nsi").read_text()
    match = re.search(r"sc\.exe\" failure \$\{SERVICE\} reset= \d+ actions= (\S+)'", nsi)
    assert match, "no `sc failure` line in tether.nsi"
    steps = match.group(1).split("/")
    actions = list(zip(steps[::2], map(int, steps[1::2]), strict=True))
    assert actions[0] == ("restart", 1000) and actions[1] == ("restart", 1000), actions
    assert re.search(r"sc\.exe\" failureflag \$\{SERVICE\} 1'", nsi)


def test_launchd_restarts_a_killed_helper_at_once():
    daemon = plistlib.loads((ROOT / "packaging" / "macos" / "dev.tether.helper.plist").read_bytes())
    assert daemon["KeepAlive"] == {"SuccessfulExit": False}
    assert daemon["ThrottleInterval"] <= 1
