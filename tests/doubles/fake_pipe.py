"""A stand-in for the Windows credentials pipe (``pipe_windows.AuthPipeServer``) on any OS.

Same constructor as the real one; a client's visit is ``exchange(creds)``: the peer identity the real
pipe reads from the client's token is given, and the reply is the line the real pipe would write.
"""

from __future__ import annotations

from collections.abc import Callable

from tether.helper.root.server.peercred import PeerCredentials
from tether.helper.root.server.pipe_windows import reply_line


class FakeAuthPipe:
    made: list[FakeAuthPipe] = []

    def __init__(
        self, issue: Callable[[PeerCredentials], dict[str, object]], group_sid: str, target: str, name: str
    ) -> None:
        self.issue = issue
        self.group_sid = group_sid
        self.target = target
        self.name = name
        self.started = self.stopped = False
        FakeAuthPipe.made.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def exchange(self, creds: PeerCredentials) -> bytes:
        """What a client identified as ``creds`` reads from the pipe (call it off the server's loop)."""
        if not self.started or self.stopped:
            raise FileNotFoundError(2, "the pipe is not being served", self.name)
        return reply_line(self.issue, lambda: creds, self.target)
