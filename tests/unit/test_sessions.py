import pytest

from tether.manager.sessions import SessionTable, UnknownSessionError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_arrive_remain_depart():
    clock = Clock()
    table = SessionTable(idle_timeout=10, clock=clock)
    session = table.arrive("alice@laptop", "default", "0.1.0")
    assert len(session.session_id) == 32
    assert table.get(session.session_id).name == "alice@laptop"
    clock.now += 9
    table.remain(session.session_id)
    clock.now += 9
    assert table.get(session.session_id).namespace == "default"
    assert table.depart(session.session_id) is session
    with pytest.raises(UnknownSessionError, match="unknown or expired session"):
        table.get(session.session_id)


def test_idle_sessions_expire_and_ids_are_unique():
    clock = Clock()
    table = SessionTable(idle_timeout=5, clock=clock)
    first = table.arrive("a", "default", "1")
    second = table.arrive("b", "default", "1")
    assert first.session_id != second.session_id
    clock.now += 4
    table.remain(second.session_id)
    clock.now += 2
    with pytest.raises(UnknownSessionError):
        table.remain(first.session_id)
    assert [s.name for s in table.expire()] == ["a"]
    assert len(table) == 1


def test_rejects_nonpositive_timeout():
    with pytest.raises(ValueError, match="-1"):
        SessionTable(idle_timeout=-1)
