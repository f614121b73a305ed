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
                          trim=lambda: trims.append(count[0]), monotonic=lambda: clock[0],
                          resident=lambda: 100.0)  # a trim gives nothing back

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


def test_the_trim_is_repeated_while_it_gives_memory_back() -> None:
    rss = [900.0]
    gives = iter([400.0, 60.0, 0.5, 300.0] + [50.0] * 20)
    trims: list[float] = []
    count, clock = [0], [0.0]

    def trim() -> None:
        rss[0] -= next(gives)
        trims.append(clock[0])

    collector = Collector(full_every=3600, waiting=lambda: count[0], trim=trim,
                          monotonic=lambda: clock[0], resident=lambda: rss[0])

    def steps(*counts: int) -> None:
        for waiting in counts:
            count[0] = waiting
            clock[0] += 1.0
            collector.step()

    steps(10_000, *[0] * 60)
    # 10 s after the drain; again 10 s after each trim that gave back 1 MB or more
    assert trims == [12.0, 22.0, 32.0]
    steps(5000, *[0] * 120)  # the next crowd: at most six trims
    assert [t - 62.0 for t in trims[3:]] == [11.0, 21.0, 31.0, 41.0, 51.0, 61.0]
    steps(*[0] * 60)
    assert len(trims) == 9
    steps(5000, 100, 50, 3000)  # a crowd that has not drained: the count starts afresh
    assert len(trims) == 9


def test_a_few_waiters_come_and_gone_trim_nothing() -> None:
    trims: list[int] = []
    clock = [0.0]
    collector = Collector(full_every=3600, trim=lambda: trims.append(1),
                          monotonic=lambda: clock[0])
    for waiting in (0, 999, 0, 500, 0):
        clock[0] += 60
        assert not collector.trim_after_drain(waiting)
    assert trims == []
