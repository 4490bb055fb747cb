"""A stand-in ``TokenVault`` (``tether.gui.clusters``): tokens in a dict instead of the OS keychain."""

from __future__ import annotations

from tether.gui.clusters import VaultError


class MemoryVault:
    """``unavailable`` makes every call fail as a locked keychain or a missing keyring backend does."""

    def __init__(self, unavailable: bool = False) -> None:
        self.tokens: dict[str, str] = {}
        self.unavailable = unavailable

    def _check(self, action: str) -> None:
        if self.unavailable:
            raise VaultError(f"the OS keychain is unavailable ({action}): no keyring backend (test double)")

    def get(self, name: str) -> str | None:
        self._check(f'reading the token of "{name}"')
        return self.tokens.get(name)

    def set(self, name: str, token: str) -> None:
        self._check(f'storing the token of "{name}"')
        self.tokens[name] = token

    def delete(self, name: str) -> None:
        self._check(f'deleting the token of "{name}"')
        self.tokens.pop(name, None)
