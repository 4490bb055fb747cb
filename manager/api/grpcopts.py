"""The gRPC options of every channel and server that speaks the manager's API (one set, both ends)."""

from __future__ import annotations

from tether.manager.api.framing import MAX_MESSAGE_BYTES

GrpcOptions = list[tuple[str, int]]


def grpc_options() -> GrpcOptions:
    """Message limits above the tunnel's largest frame, and keep-alives that notice a dead transport (a
    dropped port-forward, a manager gone without closing) within about 30 s. Clients keep their sessions
    alive themselves, so pings without calls are allowed."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


def reconnecting_channel_options() -> GrpcOptions:
    """For a long-lived client that must find a restarted manager within seconds (the agent): gRPC's own
    reconnect backoff otherwise grows to two minutes."""
    return [
        *grpc_options(),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def server_options(max_streams: int) -> GrpcOptions:
    """The manager's: a client's HTTP/2 connection may have at most ``max_streams`` calls open at once (its flows
    on gRPC Tunnel streams, a spare one opened ahead, its watch, a few unary calls); a stream that never sends
    its first message is never counted as a flow, so this is what bounds those."""
    return [*grpc_options(), ("grpc.max_concurrent_streams", max_streams + 64)]
