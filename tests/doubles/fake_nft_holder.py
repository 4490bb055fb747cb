"""Stands in for the helper's nftables socket (nft_holder.LibNftHolder): records scripts, can refuse them."""

from __future__ import annotations

from collections.abc import Callable

from tether.helper.root.dns.resolvers.nft_holder import NftHolderError


class FakeNftHolder:
    def __init__(self, refuse_owner: str = "", applied: Callable[[str], None] | None = None) -> None:
        self.refuse_owner = refuse_owner  # when set: the error a script with `flags owner` gets (an old kernel)
        self.applied = applied  # told every accepted script (to keep a fake nft's listing in step)
        self.scripts: list[str] = []
        self.closed = False

    def run(self, script: str) -> str:
        if self.closed:
            raise NftHolderError("the nftables socket is closed")
        self.scripts.append(script)
        if self.refuse_owner and "flags owner" in script:
            raise NftHolderError(self.refuse_owner)
        if self.applied is not None:
            self.applied(script)
        return ""

    def close(self) -> None:
        self.closed = True
