"""`tether`: the command-line client. Each command group lives in its own module.

Commands: ``connect`` (``connect``); ``disconnect``, ``status``, ``quit``, ``version`` (``control``);
``helper start``, ``helper cleanup`` (``helpercmd``); ``cluster-info`` (``clusterinfo``); ``manager
install|upgrade|uninstall|status`` (``manager``); ``list``, ``intercept``, ``leave``, ``uninstall``
(``intercept``); ``lab`` (``tether.lab.cli``, the optional sandbox
cluster). A command imports only its own module, so ``tether status`` loads no kubeconfig reader,
Kubernetes client, manager or lab code; ``--help`` loads them all.

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
import importlib
import os
import sys
from collections.abc import Sequence

SIGPIPE_EXIT = 128 + 13  # what a shell reports for a writer ended by SIGPIPE
# Commands that run a program given after "--" (argparse cannot take an option-like remainder itself).
RUNS_A_COMMAND = frozenset({"intercept"})

# command -> the module whose register() adds it (a module may add several); help lists them in this order.
COMMANDS = {
    "connect": "tether.helper.user.cli.connect",
    "disconnect": "tether.helper.user.cli.control",
    "status": "tether.helper.user.cli.control",
    "quit": "tether.helper.user.cli.control",
    "version": "tether.helper.user.cli.control",
    "helper": "tether.helper.user.cli.helpercmd",
    "cluster-info": "tether.helper.user.cli.clusterinfo",
    "manager": "tether.helper.user.cli.manager",
    "list": "tether.helper.user.cli.intercept",
    "intercept": "tether.helper.user.cli.intercept",
    "leave": "tether.helper.user.cli.intercept",
    "uninstall": "tether.helper.user.cli.intercept",
    "lab": "tether.lab.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for `command` alone, or for every command when it is None or unknown (help, typos)."""
    parser = argparse.ArgumentParser(
        prog="tether",
        description="Put this workstation inside a Kubernetes cluster's network.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in wanted:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list[0] if args_list else None)
    after: list[str] = []
    if args_list and args_list[0] in RUNS_A_COMMAND and "--" in args_list:
        split = args_list.index("--")
        args_list, after = args_list[:split], args_list[split + 1 :]
    args = parser.parse_args(args_list)
    args.command_argv = after
    try:
        code = int(args.handler(args) or 0)
    except BrokenPipeError:
        # The reader went away (`tether status | head`): say nothing more, and end as a piped tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    if argv is None and getattr(args, "fast_exit", False):
        # The interpreter's own teardown of the gRPC extension costs these one-call commands about a tenth
        # of their run; they leave nothing to clean up (their channel is closed, no atexit work), so the
        # process ends here once what they printed is out.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
