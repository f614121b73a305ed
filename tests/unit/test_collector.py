"""The collector policy of ``signoff serve``: survivors frozen, cycles still freed."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from signoff.collector import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_step_freezes_survivors_and_a_full_collection_frees_their_cycles() -> None:
    clock = [0.0]
    collector = Collector(full_every=60, monotonic=lambda: clock[0])
    collector.collect_all(reason="start")
    kept = [Node() for _ in range(1000)]
    garbage = cycle()
    held = cycle()
    strong = held()
    collector.step()  # nothing due: the survivors are frozen
    assert gc.get_freeze_count() >= 1000
    del strong
    gc.collect()  # frozen: the automatic and ordinary collections pass the cycle by
    assert held() is not None
    assert garbage() is None  # garbage before the step: the young collection freed it
    clock[0] = 61.0
    collector.step()  # due: everything is collected, frozen or not
    assert held() is None
    assert len(kept) == 1000


def test_a_full_collection_comes_once_the_memory_in_use_has_doubled() -> None:
    collector = Collector(full_every=3600, growth=2.0)
    collector.collect_all(reason="start")
    after = sys.getallocatedblocks()
    held = cycle()
    strong = held()
    collector.step()
    assert held() is not None
    del strong
    kept = [[i] for i in range(max(after, 500_000))]  # two blocks each: doubled
    collector.step()
    assert held() is None
    assert len(kept) > 0


async def test_cancelled_it_leaves_nothing_frozen() -> None:
    collector = Collector(freeze_every=0.01)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.05)
    assert gc.get_freeze_count() > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.get_freeze_count() == 0


def test_memory_is_trimmed_once_the_waiters_have_drained_and_settled() -> None:
    trims: list[int] = []
    count, clock = [0], [0.0]
    collector = Collector(full_every=3600, waiting=lambda: count[0],
                          trim=lambda: trims.append(count[0]), monotonic=lambda: clock[0])

    def steps(*counts: int) -> None:
        for waiting in counts:
            count[0] = waiting
            clock[0] += 1.0
            collector.step()

    steps(10, 500, 2000, 10_000, 5000, 1001)
    assert trims == []  # still many waiting
    steps(40, 30, 20, 5000)  # fell to a tenth, came back before it settled
    assert trims == []
    steps(*[40] * 10)
    assert trims == []  # a tenth of the peak for 9 s: their connections may still close
    steps(40)
    assert trims == [40]  # 10 s
    steps(*[0] * 30)
    assert trims == [40]  # once per drain
    steps(3000, *[100] * 11)
    assert trims == [40, 100]


def test_a_few_waiters_come_and_gone_trim_nothing() -> None:
    trims: list[int] = []
    clock = [0.0]
    collector = Collector(full_every=3600, trim=lambda: trims.append(1),
                          monotonic=lambda: clock[0])
    for waiting in (0, 999, 0, 500, 0):
        clock[0] += 60
        assert not collector.trim_after_drain(waiting)
    assert trims == []
