"""Whether a DNS name is a public suffix (a TLD such as ``dev``, or ``co.uk``, ``github.io``), from the
Public Suffix List bundled with the ``publicsuffixlist`` package: no network at run time.

Names under a public suffix belong to whoever registers them, so a cluster that claims a whole public
suffix would answer for everyone's names. Names the list does not know (``local``, ``internal``,
``lan``, ``cluster.local``) are private-use and may be claimed.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


@cache
def _list() -> PublicSuffixList:
    # Loaded on first use: parsing the list takes a noticeable fraction of a CLI start-up.
    from publicsuffixlist import PublicSuffixList

    # accept_unknown=False: a label the list does not know is not taken for a TLD ("local", "corp").
    return PublicSuffixList(accept_unknown=False)


def is_public_suffix(name: str) -> bool:
    """True when ``name`` (dots at either end ignored, any case) is itself a public suffix or TLD."""
    text = name.strip().strip(".").lower()
    return bool(text) and _list().is_public(text)
