"""`tether`: the command-line client. Each command group lives in its own module.

Commands: ``connect``, ``disconnect``, ``status``, ``quit``, ``version`` (``control``); ``helper start``,
``helper cleanup`` (``helpercmd``); ``cluster-info`` (``clusterinfo``); ``lab`` (``tether.lab.cli``).

Exit codes (``exitcodes``):

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

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether",
        description="Put this workstation inside a Kubernetes cluster's network.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from tether.helper.user.cli import clusterinfo, control, helpercmd

    control.register(commands)
    helpercmd.register(commands)
    clusterinfo.register(commands)
    # The lab is a developer tool that lives with the manager; import it only when asked for.
    from tether.lab import cli as lab_cli

    lab_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
