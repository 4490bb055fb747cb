"""Tokens: random, bound to the caller they were issued for, and short-lived."""

import re

import pytest

from tether.helper.root.server.caller import Caller
from tether.helper.root.server.tokens import TokenError, TokenStore

ALICE = Caller(uid=1000, gid=1000, pid=11, groups=(1000, 998), username="alice")
BOB = Caller(uid=1001, gid=1001, pid=12, groups=(1001,), username="bob")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_issue_and_resolve_binds_the_caller():
    store = TokenStore(ttl=600, clock=Clock())
    a, b = store.issue(ALICE), store.issue(BOB)
    assert re.fullmatch(r"[0-9a-f]{64}", a.token)
    assert a.token != b.token
    assert a.expires_in == 600
    assert store.resolve(a.token) == ALICE
    assert store.resolve(b.token).uid == 1001
    assert store.resolve(a.token).groups == (1000, 998)


def test_expiry_with_an_injected_clock():
    clock = Clock()
    store = TokenStore(ttl=600, clock=clock)
    token = store.issue(ALICE).token
    clock.now += 599
    assert store.resolve(token) == ALICE
    clock.now += 1
    with pytest.raises(TokenError, match="expired: fetch a new token"):
        store.resolve(token)
    with pytest.raises(TokenError, match="unknown token"):
        store.resolve(token)  # expired tokens are forgotten


def test_missing_and_unknown_tokens():
    store = TokenStore()
    with pytest.raises(TokenError, match="no tether-token metadata on the call: fetch a new token"):
        store.resolve(None)
    with pytest.raises(TokenError, match=r"unknown token \(the helper may have restarted\): fetch a new token"):
        store.resolve("00" * 32)


def test_old_tokens_are_dropped_when_issuing():
    clock = Clock()
    store = TokenStore(ttl=10, clock=clock)
    for _ in range(5):
        store.issue(ALICE)
    clock.now += 11
    store.issue(BOB)
    assert len(store) == 1


def test_the_store_is_bounded():
    store = TokenStore(ttl=600, clock=Clock(), max_tokens=3)
    first = store.issue(ALICE).token
    for _ in range(3):
        store.issue(BOB)
    assert len(store) == 3
    with pytest.raises(TokenError):
        store.resolve(first)


def test_one_uid_cannot_push_out_other_users_tokens():
    store = TokenStore(ttl=600, clock=Clock(), max_tokens=100, max_per_uid=3)
    alice = store.issue(ALICE).token
    bob = [store.issue(BOB).token for _ in range(10)]
    assert store.resolve(alice) == ALICE
    assert len(store) == 4
    for token in bob[:-3]:
        with pytest.raises(TokenError):
            store.resolve(token)
    assert all(store.resolve(token) == BOB for token in bob[-3:])
