"""A stand-in utun control socket for ``tether.helper.root.vif.tun_darwin.TunDarwin`` (no macOS needed).

One end of an AF_UNIX datagram socketpair plays the control socket (wrapped in the real ``UtunSocket``);
the test holds the other end as the kernel: frames it ``send``s arrive at the device's ``read``, frames
the device writes can be ``recv``ed. Datagram boundaries are kept, as on the real socket.
"""

from __future__ import annotations

import socket

from tether.helper.root.vif.tun_darwin import UtunSocket


class FakeControlSocket(UtunSocket):
    def __init__(self, unit: int) -> None:
        ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self.kernel.settimeout(5)
        # unit 0 asks the kernel for any free number; 7 stands for whatever it picks.
        super().__init__(ours, f"utun{unit - 1 if unit else 7}")
        self.unit = unit
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            super().close()
            self.kernel.close()


class FakeUtunOpener:
    """The ``opener`` argument of TunDarwin: records the units asked for and keeps the sockets it made."""

    def __init__(self, error: OSError | None = None) -> None:
        self.error = error
        self.sockets: list[FakeControlSocket] = []

    def __call__(self, unit: int) -> FakeControlSocket:
        if self.error is not None:
            raise self.error
        sock = FakeControlSocket(unit)
        self.sockets.append(sock)
        return sock
