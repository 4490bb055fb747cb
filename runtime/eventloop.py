"""How a Tether process runs its asyncio main: on uvloop where it is installed, else the standard loop.

``TETHER_EVENT_LOOP=asyncio`` forces the standard loop (to compare, or to rule uvloop out of a bug).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("TETHER_EVENT_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
