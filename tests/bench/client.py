"""The benchmark's client: one measurement per run, the result as one JSON object on stdout.

    python tests/bench/client.py KIND [options]

The orchestrator (``tests/bench/run.py``) runs this same file through Tether (in the lab's
workstation namespace) and on the direct path (e.g. in the lab's router namespace) with
``ip netns exec``, so both sides use identical code. Standard library only; every loop is bounded
in count and in time. Kinds:

* ``resolve NAME...``  getaddrinfo through the namespace's resolv.conf (a sanity check)
* ``download``         raw TCP source: send "N\\n", read to EOF (the bulk pod's source port)
* ``upload``           raw TCP sink: send N bytes, half-close, read "<length> <sha256>"
* ``rr``               request/response round trips of SIZE bytes on one open connection (TCP echo)
* ``connect``          new connection each time: connect, send 1 byte, read 1 byte, close
* ``dns``              UDP DNS queries, one at a time, for a name or a template with ``{i}``
* ``hold``             many connections at once to the TCP echo: open, echo a line, hold until told, close
* ``churn``            N connections kept open to the TCP echo, each closed after a while and replaced
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import resource
import select
import selectors
import socket
import struct
import sys
import time

PATTERN = bytes(range(251)) * 1024  # the bulk pod's pattern: byte i is i % 251 (257 KB, whole periods)
SEND_CHUNK = PATTERN * 4  # ~1 MB per sendall, still whole periods
RECV_BUFFER = 1 << 20


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summary(samples_ns: list[int], **extra: object) -> dict[str, object]:
    ms = sorted(s / 1e6 for s in samples_ns)
    out: dict[str, object] = {"count": len(ms)}
    if ms:
        out.update(
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            p99_ms=percentile(ms, 99),
            min_ms=ms[0],
            max_ms=ms[-1],
            mean_ms=sum(ms) / len(ms),
        )
    out.update(extra)
    return out


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        data = sock.recv(n)
        if not data:
            raise ConnectionError("connection closed early")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


# --- measurements -----------------------------------------------------------------------------


def cmd_resolve(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in args.names:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
            out[name] = sorted({info[4][0] for info in infos})
        except OSError as exc:
            out[name] = f"error: {exc}"
    return {"addresses": out}


def cmd_download(args: argparse.Namespace) -> dict[str, object]:
    sock = _connect(args.host, args.port, args.timeout)
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    received = 0
    start = time.perf_counter()
    deadline = start + args.time_limit
    sock.sendall(f"{args.bytes}\n".encode())
    complete = False
    while True:
        n = sock.recv_into(view)
        if n == 0:
            complete = received == args.bytes
            break
        received += n
        if received >= args.bytes:
            # The source closes right after the last byte; wait for that EOF (it is part of the transfer).
            continue
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    sock.close()
    return {
        "bytes": received,
        "seconds": elapsed,
        "mb_per_s": received / elapsed / 1e6,
        "complete": complete,
        "asked": args.bytes,
    }


def cmd_upload(args: argparse.Namespace) -> dict[str, object]:
    sock = _connect(args.host, args.port, args.timeout)
    chunk = memoryview(SEND_CHUNK)
    sent = 0
    start = time.perf_counter()
    deadline = start + args.time_limit
    while sent < args.bytes and time.perf_counter() < deadline:
        piece = chunk[: min(len(chunk), args.bytes - sent)]
        sock.sendall(piece)
        sent += len(piece)
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        data = sock.recv(4096)
        if not data:
            break
        reply += data
    elapsed = time.perf_counter() - start
    sock.close()
    length_text, _, digest = reply.decode(errors="replace").strip().partition(" ")
    # Verify outside the timed part: what we sent is the pattern from its start.
    expected = hashlib.sha256()
    whole, rest = divmod(sent, len(PATTERN))
    for _ in range(whole):
        expected.update(PATTERN)
    expected.update(PATTERN[:rest])
    return {
        "bytes": sent,
        "seconds": elapsed,
        "mb_per_s": sent / elapsed / 1e6,
        "complete": sent == args.bytes,
        "asked": args.bytes,
        "sink_length": int(length_text) if length_text.isdigit() else None,
        "sha256_ok": digest == expected.hexdigest(),
    }


def cmd_rr(args: argparse.Namespace) -> dict[str, object]:
    sock = _connect(args.host, args.port, args.timeout)
    payload = os.urandom(args.size)
    for _ in range(args.warmup):
        sock.sendall(payload)
        _recv_exactly(sock, args.size)
    samples: list[int] = []
    deadline = time.perf_counter() + args.time_limit
    clock = time.perf_counter_ns
    mismatches = 0
    while len(samples) < args.count and time.perf_counter() < deadline:
        t0 = clock()
        sock.sendall(payload)
        echoed = _recv_exactly(sock, args.size)
        samples.append(clock() - t0)
        mismatches += echoed != payload
    sock.close()
    return summary(samples, asked=args.count, size=args.size, mismatches=mismatches)


def cmd_connect(args: argparse.Namespace) -> dict[str, object]:
    samples: list[int] = []
    errors: list[str] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + args.time_limit
    done = 0
    while done < args.count + args.warmup and time.perf_counter() < deadline:
        t0 = clock()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(args.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.connect((args.host, args.port))
                sock.sendall(b"x")
                if sock.recv(1) != b"x":
                    raise ConnectionError("no echo")
                t1 = clock()
            finally:
                sock.close()
        except OSError as exc:
            errors.append(str(exc))
        else:
            if done >= args.warmup:
                samples.append(t1 - t0)
        done += 1
    return summary(samples, asked=args.count, errors=len(errors), first_errors=errors[:3])


def _dns_query(qid: int, name: str, qtype: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    qname = b"".join(bytes((len(label),)) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    return header + qname + struct.pack("!HH", qtype, 1)


RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def cmd_dns(args: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.server, args.port))
    sock.settimeout(args.timeout)
    clock = time.perf_counter_ns
    qtype = {"A": 1, "AAAA": 28, "TXT": 16}[args.qtype]
    rcodes: dict[str, int] = {}
    samples: list[int] = []
    timeouts = 0
    qid = int.from_bytes(os.urandom(2), "big")
    deadline = time.perf_counter() + args.time_limit

    def ask(name: str) -> int | None:
        nonlocal qid, timeouts
        qid = (qid + 1) & 0xFFFF
        sock.send(_dns_query(qid, name, qtype))
        try:
            while True:
                reply = sock.recv(4096)
                if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == qid:
                    return struct.unpack_from("!H", reply, 2)[0] & 0xF
        except TimeoutError:
            timeouts += 1
            return None

    for i in range(args.warmup):
        ask(args.name.format(i=f"warmup-{i}"))
    i = 0
    while i < args.count and time.perf_counter() < deadline:
        name = args.name.format(i=i)
        t0 = clock()
        rcode = ask(name)
        t1 = clock()
        if rcode is not None:
            samples.append(t1 - t0)
            label = RCODES.get(rcode, str(rcode))
            rcodes[label] = rcodes.get(label, 0) + 1
        i += 1
    sock.close()
    return summary(samples, asked=args.count, timeouts=timeouts, rcodes=rcodes, example=args.name.format(i=0))


# --- many connections at once (scale and soak) --------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-files limit to ``wanted`` (the hard one too, as root); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
        except (ValueError, OSError):
            if hard != resource.RLIM_INFINITY:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


class Conn:
    """One connection's progress: connecting, then waiting for its message to come back."""

    __slots__ = ("born", "expect", "got", "sock", "until")

    def __init__(self, sock: socket.socket, expect: bytes, born: float) -> None:
        self.sock = sock
        self.expect = expect
        self.got = b""
        self.born = born
        self.until = 0.0


class Pool:
    """Non-blocking TCP connections to one echo server, each: connect, send a short message, read it back.

    ``ready`` holds the connections whose message came back; errors are counted by kind. One selector, one
    thread: the number of connections is bounded by the open-files limit, not by threads.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sel = selectors.DefaultSelector()
        self.pending: dict[int, Conn] = {}
        self.ready: dict[int, Conn] = {}
        self.errors: dict[str, int] = {}
        self.first_errors: list[str] = []
        self.opened = 0
        self.serial = 0

    def _fail(self, conn: Conn | None, what: str) -> None:
        self.errors[what.split(":")[0]] = self.errors.get(what.split(":")[0], 0) + 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)
        if conn is not None:
            fd = conn.sock.fileno()
            self.pending.pop(fd, None)
            self.ready.pop(fd, None)
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()

    def open_one(self) -> None:
        self.serial += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self._fail(None, f"socket: {exc}")
            return
        sock.setblocking(False)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._fail(None, f"connect: {os.strerror(code)}")
            return
        conn = Conn(sock, f"flow {self.serial:08d}\n".encode(), time.monotonic())
        self.pending[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_WRITE, conn)  # the connect's outcome
        self.opened += 1

    def poll(self, wait: float) -> None:
        for key, _ in self.sel.select(wait):
            conn: Conn = key.data
            if key.events == selectors.EVENT_WRITE:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(conn, f"connect: {os.strerror(err)}")
                    continue
                try:
                    conn.sock.send(conn.expect)  # a few bytes always fit an empty send buffer
                except OSError as exc:
                    self._fail(conn, f"send: {exc}")
                    continue
                self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = conn.sock.recv(4096)
            except OSError as exc:
                self._fail(conn, f"recv: {exc}")
                continue
            fd = conn.sock.fileno()
            if not data:
                self._fail(conn, "closed by the peer")
                continue
            if fd in self.ready:
                continue  # nothing more is expected on an established one
            conn.got += data
            if len(conn.got) >= len(conn.expect):
                if conn.got != conn.expect:
                    self._fail(conn, "echo mismatch")
                    continue
                self.pending.pop(fd)
                self.ready[fd] = conn
        now = time.monotonic()
        for conn in [c for c in self.pending.values() if now - c.born > self.timeout]:
            self._fail(conn, "timeout")

    def close(self, conn: Conn) -> None:
        self.ready.pop(conn.sock.fileno(), None)
        self._close(conn)

    def close_all(self) -> None:
        for conn in [*self.pending.values(), *self.ready.values()]:
            self._close(conn)
        self.pending.clear()
        self.ready.clear()


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cmd_hold(args: argparse.Namespace) -> dict[str, object]:
    """Open ``--count`` connections (``--window`` connecting at once), each echoing a short message; report
    them open (one JSON line), hold them until a line arrives on stdin (or ``--hold-limit``), close them all."""
    limit = raise_nofile(args.count + 256)
    pool = Pool(args.host, args.port, args.timeout)
    start = time.monotonic()
    deadline = start + args.time_limit
    while time.monotonic() < deadline:
        while pool.opened < args.count and len(pool.pending) < args.window:
            pool.open_one()
        if not pool.pending and pool.opened >= args.count:
            break
        pool.poll(0.05)
        if not pool.pending and pool.opened < args.count and pool.errors.get("socket"):
            break  # out of descriptors: more attempts only repeat the error
    open_seconds = time.monotonic() - start
    _emit(
        {
            "event": "open",
            "asked": args.count,
            "established": len(pool.ready),
            "unfinished": len(pool.pending),
            "seconds": open_seconds,
            "errors": pool.errors,
            "first_errors": pool.first_errors,
            "nofile": limit,
        }
    )
    select.select([sys.stdin], [], [], args.hold_limit)
    held = len(pool.ready)
    lost = sum(pool.errors.values())
    pool.poll(0)  # notice connections the far side dropped while they were held
    dropped = sum(pool.errors.values()) - lost
    pool.close_all()
    return {"event": "closed", "established": held, "dropped_while_held": dropped, "errors": pool.errors}


def cmd_churn(args: argparse.Namespace) -> dict[str, object]:
    """Keep ``--count`` connections open for ``--time-limit`` seconds, each replaced when it ends: connect,
    echo a message, stay open ``--hold-min``..``--hold-max`` seconds, close. A progress line every
    ``--report-every`` seconds."""
    limit = raise_nofile(args.count * 2 + 256)
    rng = random.Random(args.seed)
    pool = Pool(args.host, args.port, args.timeout)
    start = time.monotonic()
    deadline = start + args.time_limit
    next_report = start + args.report_every
    completed = 0
    while (now := time.monotonic()) < deadline:
        while len(pool.pending) + len(pool.ready) < args.count:
            pool.open_one()
            if pool.errors.get("socket"):
                break
        before = set(pool.ready)
        pool.poll(0.05)
        now = time.monotonic()
        for fd in set(pool.ready) - before:
            pool.ready[fd].until = now + rng.uniform(args.hold_min, args.hold_max)
        for conn in [c for c in pool.ready.values() if c.until <= now]:
            pool.close(conn)
            completed += 1
        if now >= next_report:
            next_report += args.report_every
            _emit(
                {
                    "event": "progress",
                    "seconds": now - start,
                    "completed": completed,
                    "open": len(pool.ready),
                    "errors": dict(pool.errors),
                }
            )
    pool.close_all()
    return {
        "event": "done",
        "seconds": time.monotonic() - start,
        "completed": completed,
        "opened": pool.opened,
        "errors": pool.errors,
        "first_errors": pool.first_errors,
        "nofile": limit,
    }


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="one benchmark measurement; prints JSON")
    sub = p.add_subparsers(dest="kind", required=True)

    def add(name: str, fn: object, port: int) -> argparse.ArgumentParser:
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("--host", default="")
        s.add_argument("--port", type=int, default=port)
        s.add_argument("--time-limit", type=float, default=20.0, help="stop the loop after this many seconds")
        s.add_argument("--timeout", type=float, default=5.0, help="socket timeout")
        return s

    s = sub.add_parser("resolve")
    s.set_defaults(fn=cmd_resolve)
    s.add_argument("names", nargs="+")
    s.add_argument("--time-limit", type=float, default=0.0, help="unused")
    add("download", cmd_download, 9000).add_argument("--bytes", type=int, default=200_000_000)
    add("upload", cmd_upload, 9001).add_argument("--bytes", type=int, default=200_000_000)
    s = add("rr", cmd_rr, 7)
    s.add_argument("--count", type=int, default=2000)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--warmup", type=int, default=50)
    s = add("connect", cmd_connect, 7)
    s.add_argument("--count", type=int, default=300)
    s.add_argument("--warmup", type=int, default=10)
    s = add("dns", cmd_dns, 53)
    s.add_argument("--server", required=True)
    s.add_argument("--name", required=True, help="query name; {i} is replaced by the query's index")
    s.add_argument("--qtype", choices=("A", "AAAA", "TXT"), default="A")
    s.add_argument("--count", type=int, default=300)
    s.add_argument("--warmup", type=int, default=0)
    s = add("hold", cmd_hold, 7)
    s.add_argument("--count", type=int, default=10_000)
    s.add_argument("--window", type=int, default=256, help="connections being set up at once")
    s.add_argument("--hold-limit", type=float, default=120.0, help="close after this long without a word on stdin")
    s = add("churn", cmd_churn, 7)
    s.add_argument("--count", type=int, default=1000, help="connections open at once")
    s.add_argument("--hold-min", type=float, default=1.0)
    s.add_argument("--hold-max", type=float, default=9.0)
    s.add_argument("--report-every", type=float, default=10.0)
    s.add_argument("--seed", type=int, default=11)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = args.fn(args)
    except (OSError, ValueError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
