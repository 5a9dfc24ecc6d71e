"""Unit tests: the watcher's poll schedule and its fallback when the operation list is refused."""

from __future__ import annotations

import threading
import time

import pytest

from worker.adapters.geocatalog.client import GeoCatalogError, NotFound, Operation
from worker.adapters.geocatalog.watcher import SCHEDULES, OperationWatcher, PollSchedule
from worker.adapters.ratelimit import RateLimiter

pytestmark = pytest.mark.timeout(30)


def test_schedule_offsets_then_growing_gaps() -> None:
    s = PollSchedule((1.0, 2.0, 2.5), factor=2.0, max_interval=1.5)
    assert [s.next_after(t) for t in (0.0, 1.0, 2.2)] == [1.0, 2.0, 2.5]
    assert s.next_after(2.5) == 3.5  # gap 0.5 x 2
    assert s.next_after(3.5) == 5.0  # 1.0 x 2 capped at 1.5
    with pytest.raises(ValueError, match="increasing"):
        PollSchedule((2.0, 1.0))


def test_recorded_durations_are_covered() -> None:
    # a read lands within about a second after each recorded end (geocatalog_recordings.md item 14)
    for kind, ends in {"AddItem": (0.74, 1.04, 6.89), "UpdateItem": (1.47, 1.62, 2.53), "DeleteItem": (0.79,)}.items():
        for end in ends:
            assert SCHEDULES[kind].next_after(end) - end <= 1.0, (kind, end)


class RefusingList:
    """Lists answer 404 (no list API here); operations end after two reads by id."""

    def __init__(self) -> None:
        self.list_calls = 0
        self.reads: dict[str, int] = {}
        self.lock = threading.Lock()

    def list_operations(self, collection, *, top, skip=0, cancel=None):
        with self.lock:
            self.list_calls += 1
        raise NotFound("GET /inma/operations returned 404", status=404)

    def get_operation(self, operation_id, *, cancel=None):
        with self.lock:
            self.reads[operation_id] = self.reads.get(operation_id, 0) + 1
            n = self.reads[operation_id]
        if operation_id == "broken":
            raise GeoCatalogError("boom", status=500, code="ServerError")
        return Operation(operation_id, "Succeeded" if n >= 2 else "Running", type="AddItem", collection_id="c")

    def wait_for_operation(self, op, *, deadline, cancel=None):
        raise AssertionError("not used: every operation here has a collection")


def test_refused_list_falls_back_to_reads_by_id_for_good() -> None:
    src = RefusingList()
    fast = {"AddItem": PollSchedule((0.05, 0.1, 0.15))}
    with OperationWatcher(src, min_interval=0.01, schedules=fast) as w:
        ops = [Operation(f"op{i}", "Pending", type="AddItem", collection_id="c") for i in range(3)]
        threads = [
            threading.Thread(target=w.wait_for_operation, args=(op,), kwargs={"deadline": time.monotonic() + 5})
            for op in ops
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=5)
        assert src.list_calls == 1
        assert src.reads == {"op0": 2, "op1": 2, "op2": 2}
        with pytest.raises(GeoCatalogError, match="boom"):  # a read error reaches its waiter
            w.wait_for_operation(
                Operation("broken", "Pending", type="AddItem", collection_id="c"), deadline=time.monotonic() + 5
            )


def test_ticks_of_all_collections_stay_within_the_read_share_of_the_budget() -> None:
    src = RefusingList()
    limiter = RateLimiter(20.0)
    w = OperationWatcher(src, min_interval=0.5, rate_limiter=limiter, read_share=0.1)  # 2 reads/s in all
    assert w._interval() == 0.5  # no collection watched yet
    fast = {"AddItem": PollSchedule((0.05, 0.1))}
    w.schedules = fast
    done = [
        threading.Thread(
            target=w.wait_for_operation,
            args=(Operation(f"{c}-op", "Pending", type="AddItem", collection_id=c),),
            kwargs={"deadline": time.monotonic() + 5},
        )
        for c in ("a", "b", "c", "d", "e", "f")
    ]
    for t in done:
        t.start()
    for t in done:
        t.join(timeout=10)
    assert w._interval() == pytest.approx(6 / 2.0)  # six collection loops share 2 reads/s
    w.close()
    with pytest.raises(ValueError, match="read_share"):
        OperationWatcher(src, read_share=0)


def test_learned_first_reads_then_the_static_offsets_after_them() -> None:
    s = SCHEDULES["AddItem"]
    assert s.learned([], 0.05) is s
    assert s.learned([0.0], 0.05).offsets[:3] == (0.05, 1.0, 1.6)
    assert s.learned([2.0], 0.05).offsets[:3] == (2.05, 2.2, 3.0)
    assert s.learned([0.8, 0.8, 5.0], 0.05).offsets[:3] == pytest.approx((0.85, 5.05, 5.7))
    late = s.learned([15.0], 0.05)  # beyond the static offsets: their last gap, growing
    assert late.offsets == (15.05, 15.75) and late.next_after(15.75) == pytest.approx(15.75 + 0.7 * 1.2)


class Timestamped:
    """Every operation is terminal at its first read and reports it took ``seconds`` on the service."""

    def __init__(self, seconds: float) -> None:
        self.finish = f"2025-10-27T17:56:{10 + seconds:09.6f}Z"

    def list_operations(self, collection, *, top, skip=0, cancel=None):
        raise NotFound("no list here", status=404)

    def get_operation(self, operation_id, *, cancel=None):
        return Operation(
            operation_id,
            "Failed" if operation_id.startswith("fail") else "Succeeded",
            type="AddItem",
            collection_id="c",
            creation_time="2025-10-27T17:56:10.000000Z",
            finish_time=self.finish,
        )

    def wait_for_operation(self, op, *, deadline, cancel=None):
        raise AssertionError("not used")


def test_the_watcher_learns_the_first_read_per_type_and_outcome() -> None:
    src = Timestamped(1.5)
    with OperationWatcher(src, min_interval=0.01, learn_margin=0.1) as w:
        op = Operation("ok1", "Pending", type="AddItem", collection_id="c")
        assert w.schedule(op) is SCHEDULES["AddItem"]
        w.wait_for_operation(op, deadline=time.monotonic() + 5)
        assert w.schedule(op).offsets[:2] == pytest.approx((1.6, 1.6 + 0.6))  # 1.5 s + margin, then 2.2
        src.finish = "2025-10-27T17:56:10.400000Z"
        w.wait_for_operation(
            Operation("fail1", "Pending", type="AddItem", collection_id="c"), deadline=time.monotonic() + 5
        )
        assert w.schedule(op).offsets[:3] == pytest.approx((0.5, 1.6, 2.2))  # the shortest failure, then success
        other = Operation("u", "Pending", type="UpdateItem", collection_id="c")
        assert w.schedule(other) is SCHEDULES["UpdateItem"]  # learnt per type
    with OperationWatcher(src, learn_window=0) as static:
        static.wait_for_operation(
            Operation("ok2", "Pending", type="AddItem", collection_id="c"), deadline=time.monotonic() + 5
        )
        assert static.schedule(op) is SCHEDULES["AddItem"]
