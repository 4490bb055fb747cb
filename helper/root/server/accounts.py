"""Which account-lookup module serves this platform (a plain table keyed by ``sys.platform``).

Linux and macOS share ``accounts_posix`` (grp, pwd, getgrouplist); Windows has ``accounts_windows``
(SIDs). The modules are imported on first use so that neither side imports the other's OS modules.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

MODULES = {
    "linux": "accounts_posix",
    "darwin": "accounts_posix",
    "win32": "accounts_windows",
}


def accounts(platform: str = sys.platform) -> ModuleType:
    """The account-lookup module for ``platform``; a clear error for one not in the table."""
    try:
        name = MODULES[platform]
    except KeyError:
        raise NotImplementedError(f"account lookups are not implemented on {platform}") from None
    return importlib.import_module(f"{__package__}.{name}")
