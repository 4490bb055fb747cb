"""Whether the installed traffic-manager answers, asked as a client would: through the API server's
port-forward (:mod:`tether.helper.cluster.manager_dial`), with its Version call."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import kubernetes

from tether.helper.cluster.manager_dial import ManagerConnection, ManagerNotFoundError
from tether.helper.cluster.portforward import PortForwardError
from tether.helper.cluster.portforward import log as _forward_log
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc

FORWARD_LOGGER = _forward_log.name


async def ask(config: kubernetes.client.Configuration, namespace: str, timeout: float = 10) -> tuple[bool, str]:
    """(answers, what it said or why not)."""
    connection = ManagerConnection(config, namespace)
    try:
        stub = pb_grpc.ManagerStub(await asyncio.wait_for(connection.open(), timeout))
        version = await stub.Version(pb.Empty(), timeout=timeout)
        assert connection.pod is not None
        return True, f"answers: version {version.version} in pod {connection.pod.namespace}/{connection.pod.name}"
    except (ManagerNotFoundError, PortForwardError) as exc:
        return False, f"does not answer: {exc}"
    except grpc.aio.AioRpcError as exc:
        return False, f"does not answer: {exc.code().name}: {exc.details()}"
    except (TimeoutError, OSError) as exc:
        return False, f"does not answer: {exc or type(exc).__name__}"
    finally:
        await connection.close()


async def wait_until_answers(
    config: kubernetes.client.Configuration, namespace: str, timeout: float
) -> tuple[bool, str]:
    """Ask every second until the manager answers or ``timeout`` seconds pass; the last answer.

    Until then a refused port-forward is the expected answer of a pod that is still starting: the port-forward's
    own warnings about it are held back, and the last answer (returned) says why it does not answer."""
    deadline = time.monotonic() + timeout
    forward_log = logging.getLogger(FORWARD_LOGGER)
    level = forward_log.level
    forward_log.setLevel(logging.ERROR)
    try:
        while True:
            answers, text = await ask(config, namespace, timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            if answers or time.monotonic() >= deadline:
                return answers, text
            await asyncio.sleep(1)
    finally:
        forward_log.setLevel(level)
