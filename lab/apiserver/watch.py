"""List and watch: collections read through selectors, and watch streams that start from the current state
or resume from a resourceVersion, with objects entering and leaving a selection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping

import aiohttp.web

from tether.lab.apiserver.errors import bad_request, status
from tether.lab.apiserver.history import Event, Expired
from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.routing import Route
from tether.lab.apiserver.selectors import Matcher, selector
from tether.lab.apiserver.store import Store


def list_response(store: Store, route: Route, query: Mapping[str, str]) -> Obj:
    """The answer to a list request: the selected objects and the resourceVersion to watch from."""
    match = selector(query)
    return {
        "apiVersion": route.kind.api_version,
        "kind": route.kind.kind + "List",
        "metadata": {"resourceVersion": str(store.version)},
        "items": [obj for obj in store.objects_of(route.kind, route.namespace) if match(obj)],
    }


async def serve_watch(
    raw: aiohttp.web.BaseRequest, route: Route, store: Store, closing: asyncio.Event
) -> aiohttp.web.StreamResponse:
    """Stream a watch as JSON lines until ``timeoutSeconds``, the client leaving, or ``closing``."""
    match = selector(raw.query, route.name)
    try:
        since = int(raw.query.get("resourceVersion") or 0)
        timeout = float(raw.query["timeoutSeconds"]) if raw.query.get("timeoutSeconds") else None
    except ValueError:
        raise bad_request("resourceVersion and timeoutSeconds must be numbers") from None
    initial: list[Obj] = []
    # A streaming list (sendInitialEvents=true, what kubectl's informers ask for) gets the current state and
    # then a bookmark marking its end, whatever resourceVersion it names (NotOlderThan: ours is the newest).
    streaming_list = raw.query.get("sendInitialEvents") == "true"
    if since == 0 or streaming_list:  # "any version": start with the current state, as synthetic ADDED events
        initial = [obj for obj in store.objects_of(route.kind, route.namespace) if match(obj)]
        since = store.version

    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(raw)

    async def send(event_type: str, obj: Obj) -> None:
        await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    try:
        async with asyncio.timeout(timeout):
            for obj in initial:
                await send("ADDED", obj)
            if streaming_list:
                await send("BOOKMARK", initial_events_end(route, since))
            async for event in store.history.after(since, closing):
                translated = translate(event, route, match)
                if translated is not None:
                    await send(*translated)
    except TimeoutError:
        pass  # timeoutSeconds: the stream ends normally and the client re-lists or re-watches
    except Expired:
        message = f"too old resource version: {since} ({store.history.floor + 1})"
        with contextlib.suppress(ConnectionError):
            await send("ERROR", status(410, "Expired", message))
    except ConnectionError:
        return response  # the client went away
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def initial_events_end(route: Route, version: int) -> Obj:
    """The bookmark that ends a streaming list's initial events: an object of the kind with only metadata."""
    return {
        "apiVersion": route.kind.api_version,
        "kind": route.kind.kind,
        "metadata": {"resourceVersion": str(version), "annotations": {"k8s.io/initial-events-end": "true"}},
    }


def translate(event: Event, route: Route, match: Matcher) -> tuple[str, Obj] | None:
    """The event a watcher sees: objects moving into or out of its selector appear or disappear."""
    if event.kind is not route.kind:
        return None
    if route.namespace is not None and event.obj["metadata"].get("namespace") != route.namespace:
        return None
    now = match(event.obj)
    before = event.old is not None and match(event.old)
    if event.type != "MODIFIED":
        return (event.type, event.obj) if now else None
    if now:
        return ("MODIFIED" if before else "ADDED", event.obj)
    return ("DELETED", event.obj) if before else None
