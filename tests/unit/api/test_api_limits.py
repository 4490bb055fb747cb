"""The helper API's bounds: state watches per caller, and the size of a request.

Every group member may watch the state; each WatchState stream holds a queue in the helper. Before the cap a
member could open watches without end; now the one over the cap is refused RESOURCE_EXHAUSTED. Requests larger
than the largest valid ConnectRequest are refused by gRPC before any handler reads them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from api_support import options_for

from tests.doubles.fake_session import FakeSession
from tether.helper.api import helper_pb2 as pb
from tether.helper.api import helper_pb2_grpc as pb_grpc
from tether.helper.api import validate
from tether.helper.api.paths import TOKEN_METADATA
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.server import MAX_REQUEST_BYTES, MAX_WATCHES_PER_UID, HelperServer


def _metadata(server: HelperServer, uid: int) -> tuple[tuple[str, str], ...]:
    caller = Caller(uid=uid, gid=uid, pid=1, groups=(uid,), username=f"user{uid}")
    return ((TOKEN_METADATA, server.tokens.issue(caller).token),)


def _serve(socket_dir: Path, scenario) -> None:
    async def main() -> None:
        server = HelperServer(FakeSession(), options_for(socket_dir))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
                await asyncio.wait_for(scenario(server, pb_grpc.HelperStub(channel)), 20)
        finally:
            await server.stop(grace=0.5)

    asyncio.run(main())


async def _watch(stub: pb_grpc.HelperStub, metadata) -> tuple[grpc.aio.UnaryStreamCall, pb.State]:
    call = stub.WatchState(pb.Empty(), metadata=metadata)
    return call, await call.read()


def test_watches_over_the_cap_are_refused_per_caller(socket_dir):
    async def scenario(server: HelperServer, stub: pb_grpc.HelperStub) -> None:
        alice, bob = _metadata(server, 1000), _metadata(server, 1001)
        calls = [await _watch(stub, alice) for _ in range(MAX_WATCHES_PER_UID)]
        assert all(state.phase == pb.State.DISCONNECTED for _, state in calls)
        over = stub.WatchState(pb.Empty(), metadata=alice)
        try:
            await over.read()
            raise AssertionError("the watch over the cap was served")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"already has {MAX_WATCHES_PER_UID} state watches open" in exc.details()
            assert f"the limit is {MAX_WATCHES_PER_UID}" in exc.details()
        # Another caller is not held to alice's count.
        other, state = await _watch(stub, bob)
        assert state.phase == pb.State.DISCONNECTED
        other.cancel()
        # A watch that ends gives its place back.
        calls.pop()[0].cancel()
        for _ in range(100):
            if server.service._watches.get(1000) == MAX_WATCHES_PER_UID - 1:
                break
            await asyncio.sleep(0.02)
        again, state = await _watch(stub, alice)
        assert state.phase == pb.State.DISCONNECTED
        for call, _ in [*calls, (again, state)]:
            call.cancel()

    _serve(socket_dir, scenario)


def test_a_request_larger_than_the_largest_valid_one_is_refused_before_a_handler(socket_dir):
    async def scenario(server: HelperServer, stub: pb_grpc.HelperStub) -> None:
        alice = _metadata(server, 1000)
        huge = pb.ConnectRequest(kubeconfig="k: v\n", context="lab", client_name="x" * (MAX_REQUEST_BYTES + 1))
        call = stub.Connect(huge, metadata=alice)
        try:
            await call.read()
            raise AssertionError("the oversized request was served")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        # The connection is still good for a normal call.
        version = await stub.Version(pb.Empty(), metadata=alice)
        assert version.name == "tether-helper"

    _serve(socket_dir, scenario)


def test_the_largest_valid_connect_request_fits():
    cidrs = ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"] * validate.MAX_CIDRS
    long_name = "a" * 63
    suffix = ".".join([long_name] * 4)[: validate.MAX_DNS_NAME]
    names = [f"V{i:04d}" for i in range(validate.MAX_ENV_VARS)]
    value = "x" * (validate.MAX_ENV_BYTES // validate.MAX_ENV_VARS - len(names[0]) - 2)
    largest = pb.ConnectRequest(
        kubeconfig="x" * validate.MAX_KUBECONFIG_BYTES,
        context="c" * validate.MAX_CONTEXT_NAME,
        namespace=long_name,
        manager_namespace=long_name,
        manager_address=suffix + ":65535",
        also_proxy=cidrs,
        never_proxy=cidrs,
        allow_conflicting_subnets=cidrs,
        mapped_namespaces=[long_name] * validate.MAX_NAMESPACES,
        environment=dict.fromkeys(names, value),
        client_name="n" * validate.MAX_CLIENT_NAME,
        proxy_via=[f"{cidrs[0]}={long_name}/{suffix}"] * validate.MAX_CIDRS,
        virtual_subnet=cidrs[0],
        dns_include_suffixes=[suffix] * validate.MAX_SUFFIXES,
        dns_exclude_suffixes=[suffix] * validate.MAX_SUFFIXES,
    )
    print({"largest_valid_request": largest.ByteSize(), "limit": MAX_REQUEST_BYTES})
    assert largest.ByteSize() < MAX_REQUEST_BYTES
