"""Runtime utilities every Tether process shares (event loop, logging, atomic files).

It imports no other Tether code."""
