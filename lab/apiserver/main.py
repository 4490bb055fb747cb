"""The emulator as a process: its command line, the seed file, the ready file written once it listens and
removed at exit, and serving until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tether.lab.apiserver import authz
from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.server import LabApiServer, SeedError
from tether.runtime import eventloop
from tether.runtime.atomicfile import write_atomic


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _service_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load_seed(path: Path) -> list[Obj]:
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(o, dict) for o in data):
        raise ValueError("the seed file must hold a JSON list of Kubernetes objects")
    return data


async def _serve_until_signalled(
    args: argparse.Namespace, seed: list[Obj], authorizer: authz.Authorizer | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = args.listen
    async with LabApiServer(
        host=host,
        port=port,
        seed=seed,
        service_cidr=args.service_cidr,
        token_file=args.service_account_tokens,
        authorizer=authorizer,
    ) as server:
        if args.kubeconfig:
            write_atomic(args.kubeconfig, json.dumps(server.kubeconfig(), indent=2) + "\n", fsync=False)
        if args.ready_file:
            write_atomic(args.ready_file, server.url + "\n", fsync=False)
        try:
            await stop.wait()
        finally:
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tether.lab.apiserver",
        description="Serve the lab cluster's Kubernetes API (an emulator).",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        required=True,
        metavar="HOST:PORT",
        help="address to serve plain HTTP on (port 0 picks a free one)",
    )
    parser.add_argument(
        "--service-cidr",
        type=_service_cidr,
        required=True,
        metavar="CIDR",
        help="the range Service ClusterIPs are allocated from, e.g. 10.96.0.0/16",
    )
    parser.add_argument("--seed", type=Path, metavar="FILE.json", help="JSON list of objects to create at start")
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="written with the URL once the port is listening; removed at exit",
    )
    parser.add_argument(
        "--service-account-tokens",
        type=Path,
        metavar="FILE.json",
        help="tokens bound to pods, for TokenReview: a JSON list of {token, namespace, pod, audiences}",
    )
    parser.add_argument(
        "--users",
        type=Path,
        metavar="FILE.json",
        help='bearer tokens and what each user may do: {"users": [{name, token, admin, allowed}]} '
        "(without it, every request is allowed)",
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH", help="write a kubeconfig for the server here")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        seed = _load_seed(args.seed) if args.seed else []
        authorizer = authz.load(args.users) if args.users else None
        eventloop.run(_serve_until_signalled(args, seed, authorizer))
    except (OSError, ValueError, SeedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
