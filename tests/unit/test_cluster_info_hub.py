import asyncio

from tether.manager.api import manager_pb2 as pb
from tether.manager.clusterinfo import ClusterInfoHub


def info(port: int) -> pb.ClusterInfo:
    return pb.ClusterInfo(manager_port=port)


def test_watchers_get_snapshot_then_changes_and_slow_ones_only_the_newest():
    async def scenario() -> None:
        hub = ClusterInfoHub()
        assert hub.publish(info(1))
        assert not hub.publish(info(1)), "an identical snapshot is not a change"
        watch = hub.watch()
        assert (await anext(watch)).manager_port == 1
        hub.publish(info(2))
        hub.publish(info(3))  # the watcher was not reading: it sees only the newest
        assert (await anext(watch)).manager_port == 3
        assert hub.watcher_count == 1
        await watch.aclose()
        assert hub.watcher_count == 0

    asyncio.run(scenario())
