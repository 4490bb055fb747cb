"""A netlink socket to nftables that lives exactly as long as the helper: the holder of its owned tables.

A table created with ``flags owner`` (kernel 5.12+) belongs to the netlink socket that created it: only that
socket may change it, and the kernel deletes it the moment the socket closes, which a SIGKILL of the helper
does too. ``nft`` run as a command closes its socket when it exits and would take such a table with it, so
the socket has to be the helper's own: libnftables (the library under the ``nft`` command, installed with it)
loaded through ctypes keeps one socket per context, opened in the network namespace of the thread that
creates the context and closed by ``close()`` or by the process's death.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Protocol

log = logging.getLogger("tether.helper.root.dns.resolvers")

LIBRARY = "libnftables.so.1"


class NftHolderError(RuntimeError):
    """A script was refused; the text is nft's own error message (which names the offending line)."""


class NftHolder(Protocol):
    def run(self, script: str) -> str:
        """Run an nft script as one transaction through the held socket; its output, or NftHolderError."""
        ...

    def close(self) -> None:
        """Close the socket: the kernel removes every owned table created through it."""
        ...


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("nftables") or LIBRARY
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        log.info("dns: libnftables not loadable (%s); owned tables are unavailable", exc)
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


class LibNftHolder:
    """One libnftables context (one netlink socket), used from any thread but one call at a time."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftHolderError("libnftables could not create a context")
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            lib.nft_ctx_free(ctx)
            raise NftHolderError("libnftables could not buffer its output")
        self._ctx: int | None = ctx

    def run(self, script: str) -> str:
        with self._lock:
            if self._ctx is None:
                raise NftHolderError("the nftables socket is closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftHolderError(err.strip() or f"nft failed ({rc}) with no message")
        return out

    def close(self) -> None:
        with self._lock:
            ctx, self._ctx = self._ctx, None
            if ctx is not None:
                self._lib.nft_ctx_free(ctx)


def open_lib_holder() -> LibNftHolder | None:
    """A holder in the calling thread's network namespace; None when libnftables is not installed."""
    lib = _load()
    return LibNftHolder(lib) if lib is not None else None
