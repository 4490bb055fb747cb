"""Route planning at scale: capped, and O(n log n) in the work it does (counted in calls, never timed).

A manager that sent 8,000 /32 subnets froze the helper's API for 19 s: covering, carving and conflict checks
compared every subnet with every other, on the event loop.
"""

from __future__ import annotations

import cProfile
import ipaddress
import pstats
import random
from collections.abc import Callable

import pytest

from tether.helper.root.routing.conflicts import OSRoute, find_conflicts, ignore_reason
from tether.helper.root.routing.table import MAX_SUBNETS, PlanError, carve, compute_plan, drop_covered, sort_key

net = ipaddress.ip_network


def _hosts(count: int, seed: int, base: str = "10.0.0.0/8") -> list[ipaddress.IPv4Network]:
    """``count`` distinct /32s inside ``base``, in random order."""
    rng = random.Random(seed)
    first = int(net(base).network_address)
    size = net(base).num_addresses
    picked = rng.sample(range(size), count)
    return [net((first + offset, 32)) for offset in picked]


def _calls(work: Callable[[], object]) -> int:
    """Python function calls ``work`` makes: a count of operations that does not depend on the machine."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        work()
    except PlanError:
        pass
    finally:
        profile.disable()
    return pstats.Stats(profile).total_calls  # type: ignore[attr-defined]


def test_8000_subnets_are_refused_naming_the_count_and_the_limit():
    with pytest.raises(PlanError) as caught:
        compute_plan(service_subnets=[net("10.96.0.0/16")], pod_subnets=_hosts(8000, 1, "10.128.0.0/9"))
    message = str(caught.value)
    assert "8001 subnets to route" in message and f"limit of {MAX_SUBNETS}" in message
    with pytest.raises(PlanError, match=f"8000 subnets to carve out .* limit of {MAX_SUBNETS}"):
        compute_plan(service_subnets=["10.0.0.0/8"], never_proxy=_hosts(8000, 2))


def test_the_limit_itself_is_planned():
    # As many subnets as allowed to route and to carve out, most of them covered: a plan comes out.
    pods = _hosts(MAX_SUBNETS - 2, 3, "10.244.0.0/16")
    holes = _hosts(MAX_SUBNETS - 2, 4, "10.100.0.0/20")
    plan = compute_plan(
        service_subnets=["10.96.0.0/12"],
        pod_subnets=["10.244.0.0/16", *pods],
        never_proxy=["10.100.0.0/20", *holes],
        never_route=["10.96.0.1"],
    )
    assert net("10.244.0.0/16") in plan.routes and net("10.96.0.0/32") in plan.routes
    assert not any(route.overlaps(net("10.100.0.0/20")) for route in plan.routes)


def _ratio(work: Callable[[int], object], small: int = 250, large: int = 2000) -> float:
    return _calls(lambda: work(large)) / _calls(lambda: work(small))


# Eight times the input: n log n does about 8 * 1.3 times the work; n squared would do 64 times.
GROWTH_LIMIT = 16


def test_covering_and_carving_grow_as_n_log_n():
    figures = {
        "drop_covered": _ratio(lambda n: drop_covered(_hosts(n, 5))),
        "carve": _ratio(lambda n: carve([net("10.0.0.0/8"), *_hosts(n, 6, "172.16.0.0/12")], _hosts(n, 7))),
        "compute_plan": _ratio(lambda n: compute_plan(pod_subnets=_hosts(n, 8), never_proxy=_hosts(n, 9))),
    }
    print({name: round(ratio, 1) for name, ratio in figures.items()})
    assert all(ratio < GROWTH_LIMIT for ratio in figures.values()), figures


def test_conflicts_grow_as_n_log_n():
    def work(n: int) -> object:
        routes = [OSRoute(h, "vpn0") for h in _hosts(n, 10)] + [OSRoute("10.0.0.0/8", "vpn0")]
        return find_conflicts(_hosts(n, 11), routes)

    ratio = _ratio(work)
    print({"find_conflicts": round(ratio, 1)})
    assert ratio < GROWTH_LIMIT


def _naive_carve(subnets: list, exclusions: list) -> list:
    """The obvious quadratic carve, to check the fast one against."""
    kept: list = []
    for n in sorted(set(subnets), key=lambda n: (n.version, n.prefixlen, int(n.network_address))):
        if not any(k.version == n.version and n.subnet_of(k) for k in kept):
            kept.append(n)
    for hole in exclusions:
        nxt: list = []
        for piece in kept:
            if piece.version != hole.version or not piece.overlaps(hole):
                nxt.append(piece)
            elif not piece.subnet_of(hole):
                nxt.extend(piece.address_exclude(hole))
        kept = nxt
    return sorted(kept, key=sort_key)


def _random_nets(rng: random.Random, count: int) -> list:
    nets = []
    for _ in range(count):
        if rng.random() < 0.8:
            prefix = rng.randrange(8, 33)
            nets.append(net((rng.randrange(0, 1 << 32) >> (32 - prefix) << (32 - prefix), prefix)))
        else:
            prefix = rng.randrange(16, 129)
            nets.append(net((rng.randrange(0, 1 << 128) >> (128 - prefix) << (128 - prefix), prefix)))
    return nets


def test_the_fast_carve_agrees_with_the_obvious_one():
    rng = random.Random(12)
    for _ in range(300):
        subnets, holes = _random_nets(rng, rng.randrange(0, 12)), _random_nets(rng, rng.randrange(0, 12))
        # Holes land inside subnets far more often when taken from them.
        for subnet in subnets[:3]:
            if subnet.prefixlen < subnet.max_prefixlen - 4:
                holes.append(next(subnet.subnets(new_prefix=subnet.prefixlen + rng.randrange(1, 5))))
        assert carve(subnets, holes) == _naive_carve(subnets, holes)


def _naive_conflicts(subnets: list, routes: list, allowed: list) -> list:
    found = []
    for subnet in set(subnets):
        if any(subnet.version == a.version and subnet.subnet_of(a) for a in allowed):
            continue
        for route in {r for r in routes if ignore_reason(r) is None}:
            dst = route.destination
            if dst.version == subnet.version and dst != subnet and subnet.overlaps(dst):
                found.append((subnet, route))
    return sorted(found, key=lambda pair: (*sort_key(pair[0]), *pair[1].sort_key()))


def test_the_fast_conflict_search_agrees_with_the_obvious_one():
    rng = random.Random(13)
    for _ in range(300):
        subnets, allowed = _random_nets(rng, rng.randrange(0, 10)), _random_nets(rng, rng.randrange(0, 4))
        destinations = _random_nets(rng, rng.randrange(0, 10))
        for subnet in subnets[:4]:  # routes inside, around and equal to the subnets, and allowed ranges over them
            destinations.append(subnet.supernet(new_prefix=max(2, subnet.prefixlen - rng.randrange(0, 6))))
            if subnet.prefixlen < subnet.max_prefixlen:
                destinations.append(next(subnet.subnets()))
            if rng.random() < 0.3:
                allowed.append(subnet.supernet(new_prefix=max(0, subnet.prefixlen - rng.randrange(0, 3))))
        routes = [OSRoute(d, rng.choice(("vpn0", "eth0"))) for d in destinations]
        got = [(c.subnet, c.route) for c in find_conflicts(subnets, routes, allowed=allowed)]
        assert got == _naive_conflicts(subnets, routes, allowed)
