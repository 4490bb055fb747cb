"""File descriptors under a flood of the DNS port: the server's share stays capped and a reserve stays free.

Any local user can open TCP connections to the DNS port, or send queries for names the helper forwards upstream
(one socket each). With the usual soft limit of 1024, 1,100 idle connections left the helper no descriptor for
an API call.
"""

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap

from dns_support import RULES, FakeCluster, ask, serving
from dnslib import RCODE, DNSRecord

from tether.helper.root import fdlimit
from tether.helper.root.dns.upstream import UpstreamAddress

# The helper's side in a process of its own, with the soft limit a helper gets by default (1024): it serves
# DNS until told, then says how many connections it holds and tries what an API call and teardown need.
HELPER = textwrap.dedent(
    """
    import asyncio, json, resource, socket, sys, tempfile, os
    from tether.helper.root.dns.rules import RulesConfig
    from tether.helper.root.dns.server import DNSServer

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    async def lookup(name, qtype):
        return 3, []

    async def main():
        server = DNSServer(lookup, RulesConfig(cluster_domain="cluster.local."), None)
        _, port = await server.listen("127.0.0.1", 0)
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        report = {"connections": server.tcp_connections, "cap": server.max_tcp_connections,
                  "fds": len(os.listdir("/proc/self/fd")), "counters": server.counters.snapshot()}
        api = []
        try:
            path = os.path.join(tempfile.mkdtemp(), "api.sock")
            listener = socket.socket(socket.AF_UNIX); listener.bind(path); listener.listen(); api.append(listener)
            for _ in range(100):  # an API call, the port-forward, teardown's netlink sockets and pipes
                client = socket.socket(socket.AF_UNIX); client.connect(path); api.append(client)
                api.append(listener.accept()[0])
            report["api"] = "ok"
        except OSError as exc:
            report["api"] = str(exc)
        for s in api:
            s.close()
        print(json.dumps(report), flush=True)
        await server.close()

    asyncio.run(main())
    """
)


def test_idle_tcp_connections_stay_at_the_cap_and_the_api_keeps_its_reserve():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    clients: list[socket.socket] = []
    try:
        assert helper.stdout is not None and helper.stdin is not None
        port = int(helper.stdout.readline())
        for _ in range(1100):  # idle: connected, never a query
            clients.append(socket.create_connection(("127.0.0.1", port)))
        # Let the server accept (and evict) them all: one query answered on a fresh connection comes after them.
        reply = asyncio.run(ask(port, "www.example.com.", tcp=True))
        assert reply.header.rcode == RCODE.REFUSED  # this helper has no upstream
        helper.stdin.write("report\n")
        helper.stdin.flush()
        report = json.loads(helper.stdout.readline())
    finally:
        for client in clients:
            client.close()
        helper.kill()
        helper.wait()
    print(report)
    assert report["api"] == "ok"
    assert report["connections"] <= report["cap"] == fdlimit.dns_caps(1024).tcp_connections
    assert report["counters"]["tcp_evicted"] >= 1100 - report["cap"]
    assert report["fds"] < 1024 - fdlimit.RESERVE


class SilentUpstream:
    """A UDP socket on loopback that takes queries and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = UpstreamAddress("127.0.0.1", self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


def test_a_flood_of_upstream_queries_opens_at_most_the_cap_of_sockets():
    silent = SilentUpstream()
    figures: dict[str, int] = {"peak": 0}

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            figures["peak"] = max(figures["peak"], len(os.listdir("/proc/self/fd")))
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        async with serving(FakeCluster(), None, rules=RULES, upstream_timeout=1, max_upstream_sockets=50) as server:
            server.set_upstream(silent.address)
            loop = asyncio.get_running_loop()
            # One client socket for every query, so that the descriptors that come and go are the server's own.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                await loop.sock_connect(client, server.addresses[0])
                baseline = len(os.listdir("/proc/self/fd"))
                stop = asyncio.Event()
                watcher = asyncio.ensure_future(watch(stop))
                for i in range(600):
                    await loop.sock_sendall(client, DNSRecord.question(f"host{i}.example.com.").pack())
                    if i % 50 == 49:
                        await asyncio.sleep(0.02)  # in bursts the server's receive buffer takes whole
                await asyncio.sleep(2.5)  # every forward has ended (its slot waited for, or its timeout)
                stop.set()
                await watcher
            figures["peak"] -= baseline
            figures["forwarded"] = server.counters.upstream

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        silent.close()
    print({"queries": 600, **figures})
    assert figures["forwarded"] >= 200  # far more than the cap wanted a socket at once
    assert figures["peak"] <= 50 + 5


def test_the_soft_limit_is_raised_towards_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        raised = fdlimit.raise_nofile(cap=min(hard, 4096))
        assert raised == min(hard, 4096) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_dns_share_leaves_the_reserve_free():
    for limit in (256, 1024, 4096, 65536):
        caps = fdlimit.dns_caps(limit)
        assert caps.tcp_connections <= fdlimit.MAX_DNS_TCP_CONNECTIONS
        assert caps.upstream_sockets <= fdlimit.MAX_UPSTREAM_SOCKETS
        if limit >= 1024:
            assert caps.tcp_connections + caps.upstream_sockets + fdlimit.RESERVE + fdlimit.BASELINE <= limit
