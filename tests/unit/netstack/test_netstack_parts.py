"""The small pieces on their own: timers and out-of-order blocks."""

from tether.helper.root.vif.netstack.reassembly import OutOfOrder
from tether.helper.root.vif.netstack.timers import Timers


class Flow:
    def __init__(self, name: str) -> None:
        self.name = name
        self.deadline = None
        self.heap_deadline = None


def test_timers_fire_in_order_and_move_lazily():
    t = Timers()
    a, b, c = Flow("a"), Flow("b"), Flow("c")
    t.set(a, 5.0)
    t.set(b, 3.0)
    t.set(c, 4.0)
    t.set(c, None)  # cancelled (its entry is left to go stale)
    assert t.next_deadline() == 3.0
    t.set(b, 10.0)  # moved later: no new heap entry
    assert len(t) == 3
    assert t.next_deadline() == 5.0  # b's stale entry was moved on the way
    assert t.pop_due(4.9) == []
    assert t.pop_due(5.0) == [a]
    assert a.deadline is None
    t.set(b, 1.0)  # moved earlier: a new entry
    assert t.pop_due(2.0) == [b]
    assert t.pop_due(100.0) == []
    assert t.next_deadline() is None
    assert len(t) == 0


def test_timers_many_updates_keep_heap_small():
    t = Timers()
    flows = [Flow(str(i)) for i in range(100)]
    for step in range(1, 200):
        for f in flows:
            t.set(f, float(step))
    assert len(t) <= 200
    assert len(t.pop_due(1000.0)) == 100


def test_out_of_order_blocks_merge():
    ooo = OutOfOrder(limit=10)
    assert ooo.add(110, b"b" * 10, 0)
    assert ooo.add(120, b"c" * 10, 0)  # extends the block
    assert ooo.add(140, b"e" * 10, 0)  # a new block
    assert [(b[0], b[1]) for b in ooo.blocks] == [(110, 130), (140, 150)]
    assert ooo.add(125, b"c" * 5 + b"d" * 10, 0)  # overlaps and fills the gap
    assert [(b[0], b[1]) for b in ooo.blocks] == [(110, 150)]
    assert ooo.add(112, b"b" * 3, 0)  # a duplicate
    assert ooo.take(100) == ([], False)  # the hole at 100..110 is still open
    data, fin = ooo.take(110)
    assert b"".join(data) == b"b" * 10 + b"c" * 10 + b"d" * 10 + b"e" * 10 and not fin
    assert not ooo


def test_out_of_order_take_trims_and_reports_fin():
    ooo = OutOfOrder(limit=10)
    ooo.add(10, b"0123456789", 0)
    ooo.add(20, b"abc", 1)
    data, fin = ooo.take(15)
    assert data == [b"56789abc"] and fin


def test_out_of_order_limit_and_sack_option():
    ooo = OutOfOrder(limit=2)
    assert ooo.add(100, b"x", 0)
    assert ooo.add(200, b"y", 0)
    assert not ooo.add(300, b"z", 0)
    assert ooo.add(201, b"y", 0)  # extending is fine
    option = ooo.sack_option()
    assert option[:4] == bytes((1, 1, 5, 18))
    assert int.from_bytes(option[4:8]) == 200 and int.from_bytes(option[8:12]) == 202  # the latest first
    assert int.from_bytes(option[12:16]) == 100


def test_sack_edges_wrap():
    ooo = OutOfOrder(limit=4)
    ooo.add(0xFFFFFFFF + 10, b"abc", 0)
    option = ooo.sack_option()
    assert int.from_bytes(option[4:8]) == 9 and int.from_bytes(option[8:12]) == 12
