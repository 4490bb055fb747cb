"""The resolver modes by name, and which of them belong to which platform (pure; both sides of the socket).

The root side picks one of these per host (helper/root/dns/resolvers/choose.py); a client may force one
with ``--dns-mode``, so the names and their platforms live here, where the client's checks can see them.
"""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    LINUX_NFT = "linux-nft"  # no systemd-resolved in front: DNAT the primary nameserver to our server
    SYSTEMD_RESOLVED = "systemd-resolved"  # per-link DNS and routing domains over D-Bus on the TUN
    MACOS_RESOLVER = "macos-resolver"  # one /etc/resolver/<domain> file per routing domain
    WINDOWS = "windows"  # DNS server and search list on the TUN interface


# platform family -> the modes that can work there (a forced mode outside its family is refused).
PLATFORM_MODES: dict[str, tuple[Mode, ...]] = {
    "linux": (Mode.LINUX_NFT, Mode.SYSTEMD_RESOLVED),
    "darwin": (Mode.MACOS_RESOLVER,),
    "win32": (Mode.WINDOWS,),
}


def platform_family(platform: str) -> str | None:
    """The PLATFORM_MODES key for a ``sys.platform`` value, None for a platform without resolver modes."""
    if platform.startswith("linux"):
        return "linux"
    if platform in ("win32", "cygwin"):
        return "win32"
    return platform if platform in PLATFORM_MODES else None
