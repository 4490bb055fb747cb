"""The answer cache: TTLs with an injected clock, LRU bound, flush, coalescing."""

import asyncio

import pytest
from dnslib import QTYPE, RCODE, RR, A

from tether.helper.root.dns.cache import LRU, Answer, AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POSITIVE = Answer.of(RCODE.NOERROR, [RR("web.", QTYPE.A, rdata=A("10.0.0.1"))])
NXDOMAIN = Answer(RCODE.NXDOMAIN)
NODATA = Answer(RCODE.NOERROR)
SERVFAIL = Answer(RCODE.SERVFAIL)


def test_answer_kinds():
    assert POSITIVE.positive and not POSITIVE.negative
    assert NXDOMAIN.negative and NODATA.negative
    assert not SERVFAIL.positive and not SERVFAIL.negative


def test_positive_answers_live_their_ttl():
    clock = Clock()
    cache = AnswerCache(positive_ttl=60, negative_ttl=5, clock=clock)
    cache.put(("web.", 1), POSITIVE)
    clock.now += 59.9
    assert cache.get(("web.", 1)) is POSITIVE
    clock.now += 0.2
    assert cache.get(("web.", 1)) is None
    assert len(cache) == 0


def test_negative_answers_live_briefly_and_failures_not_at_all():
    clock = Clock()
    cache = AnswerCache(positive_ttl=60, negative_ttl=5, clock=clock)
    cache.put(("gone.", 1), NXDOMAIN)
    cache.put(("nodata.", 1), NODATA)
    cache.put(("broken.", 1), SERVFAIL)
    assert cache.get(("broken.", 1)) is None
    clock.now += 4.9
    assert cache.get(("gone.", 1)) is NXDOMAIN and cache.get(("nodata.", 1)) is NODATA
    clock.now += 0.2
    assert cache.get(("gone.", 1)) is None and cache.get(("nodata.", 1)) is None
    assert cache.expiry(("gone.", 1)) is None


def test_lru_bound_evicts_least_recently_used():
    cache = AnswerCache(max_entries=3, clock=Clock())
    for name in ("a.", "b.", "c."):
        cache.put((name, 1), POSITIVE)
    assert cache.get(("a.", 1)) is POSITIVE  # a is now the most recent
    cache.put(("d.", 1), POSITIVE)
    assert len(cache) == 3
    assert cache.get(("b.", 1)) is None
    assert cache.get(("a.", 1)) is POSITIVE and cache.get(("c.", 1)) is POSITIVE and cache.get(("d.", 1)) is POSITIVE


def test_lru_refuses_size_zero():
    with pytest.raises(ValueError, match="at least 1"):
        LRU(0)


def test_flush_drops_everything():
    cache = AnswerCache(clock=Clock())
    cache.put(("a.", 1), POSITIVE)
    cache.put(("b.", 1), NXDOMAIN)
    cache.flush()
    assert len(cache) == 0 and cache.get(("a.", 1)) is None


def test_concurrent_identical_queries_share_one_lookup():
    async def scenario() -> None:
        cache = AnswerCache()
        calls = 0
        release = asyncio.Event()

        async def fetch() -> Answer:
            nonlocal calls
            calls += 1
            await release.wait()
            return POSITIVE

        waiters = [asyncio.create_task(cache.resolve(("web.", 1), fetch)) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert cache.pending(("web.", 1)) is not None
        release.set()
        results = await asyncio.gather(*waiters)
        assert calls == 1 and cache.lookups == 1
        assert all(answer is POSITIVE and not cached for answer, cached in results)
        assert await cache.resolve(("web.", 1), fetch) == (POSITIVE, True)
        assert calls == 1

    asyncio.run(scenario())


def test_a_failed_lookup_reaches_every_waiter_and_is_not_cached():
    async def scenario() -> None:
        cache = AnswerCache()
        calls = 0

        async def fetch() -> Answer:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            raise TimeoutError("slow cluster")

        results = await asyncio.gather(*(cache.resolve(("x.", 1), fetch) for _ in range(5)), return_exceptions=True)
        assert calls == 1
        assert all(isinstance(r, TimeoutError) for r in results)
        assert cache.get(("x.", 1)) is None and cache.pending(("x.", 1)) is None

    asyncio.run(scenario())


def test_one_waiter_giving_up_does_not_cancel_the_lookup_for_the_others():
    async def scenario() -> None:
        cache = AnswerCache()

        async def fetch() -> Answer:
            await asyncio.sleep(0.05)
            return POSITIVE

        first = asyncio.create_task(cache.resolve(("web.", 1), fetch))
        second = asyncio.create_task(cache.resolve(("web.", 1), fetch))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == (POSITIVE, False)

    asyncio.run(scenario())


def test_a_lookup_started_before_a_flush_does_not_fill_the_new_cache():
    async def scenario() -> None:
        cache = AnswerCache()
        release = asyncio.Event()

        async def fetch() -> Answer:
            await release.wait()
            return POSITIVE

        waiter = asyncio.create_task(cache.resolve(("web.", 1), fetch))
        await asyncio.sleep(0.01)
        cache.flush()
        assert cache.pending(("web.", 1)) is None  # a new query starts a new lookup under the new config
        release.set()
        assert await waiter == (POSITIVE, False)
        assert cache.get(("web.", 1)) is None

    asyncio.run(scenario())


def test_close_cancels_running_lookups():
    async def scenario() -> None:
        cache = AnswerCache()

        async def fetch() -> Answer:
            await asyncio.sleep(60)
            return POSITIVE

        waiter = asyncio.create_task(cache.resolve(("web.", 1), fetch))
        await asyncio.sleep(0.01)
        await cache.close()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
