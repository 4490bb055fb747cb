"""A stand-in ``Notifier`` (``tether.gui.notify``) that records instead of showing."""

from __future__ import annotations

from tether.gui.notify import Notification


class FakeNotifier:
    def __init__(self) -> None:
        self.shown: list[Notification] = []

    def notify(self, notification: Notification) -> None:
        self.shown.append(notification)

    def messages(self) -> list[str]:
        return [n.message for n in self.shown]
