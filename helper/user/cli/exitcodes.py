"""Exit codes of the `tether` CLI, and how errors from the helper map onto them.

====  ==========================================================================
0     success
1     failure (the helper or the cluster said no, or something broke)
2     usage or bad input (unknown flag, bad CIDR, unknown context, broken kubeconfig)
3     the helper is unreachable (not installed, not running)
4     permission denied (not in the tether group, not the session's owner, not root)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import sys

import grpc

from tether.helper.user.client import (
    HelperCallError,
    HelperError,
    HelperNotInstalledError,
    HelperNotRunningError,
    HelperPermissionError,
)

OK = 0
FAILURE = 1
USAGE = 2
UNREACHABLE = 3
PERMISSION = 4
INTERRUPTED = 130


def for_error(exc: HelperError) -> int:
    if isinstance(exc, HelperNotInstalledError | HelperNotRunningError):
        return UNREACHABLE
    if isinstance(exc, HelperPermissionError):
        return PERMISSION
    if isinstance(exc, HelperCallError):
        if exc.code == grpc.StatusCode.PERMISSION_DENIED:
            return PERMISSION
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            return USAGE
    return FAILURE


def report(exc: HelperError) -> int:
    """Print the error (and how to fix it) on stderr; return the exit code."""
    print(f"tether: {exc.message}", file=sys.stderr)
    if exc.fix:
        print(f"  {exc.fix}", file=sys.stderr)
    return for_error(exc)
