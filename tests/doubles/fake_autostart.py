"""Stand-ins for the tray's start-at-login mechanisms (``tether.gui.autostart``)."""

from __future__ import annotations

from tether.gui.autostart import AutostartError


class FakeRegistry:
    """A ``Registry`` (string values under HKEY_CURRENT_USER) in a dict, so the Run key is testable off Windows."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get(self, key: str, name: str) -> str | None:
        return self.values.get((key, name))

    def set(self, key: str, name: str, value: str) -> None:
        self.values[(key, name)] = value

    def delete(self, key: str, name: str) -> None:
        self.values.pop((key, name), None)


class FakeAutostart:
    """An ``Autostart`` that remembers a flag and the calls; ``fail`` makes ``enable`` fail as a real one can."""

    def __init__(self, enabled: bool = False, fail: bool = False) -> None:
        self.enabled = enabled
        self.fail = fail
        self.calls: list[str] = []

    def is_enabled(self) -> bool:
        return self.enabled

    def enable(self) -> None:
        self.calls.append("enable")
        if self.fail:
            raise AutostartError("cannot write ~/.config/autostart/tether-tray.desktop: Permission denied")
        self.enabled = True

    def disable(self) -> None:
        self.calls.append("disable")
        self.enabled = False
