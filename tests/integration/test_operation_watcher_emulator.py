"""Integration tests: the operation watcher over real HTTP against the GeoCatalog emulator."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.geocatalog import make_stac_item
from worker.adapters.geocatalog.client import Cancelled, GeoCatalogClient, Operation, OperationTimeout, RetryPolicy
from worker.adapters.geocatalog.watcher import OperationWatcher, PollSchedule
from worker.domain.errors import ErrorKind
from worker.domain.secrets import Secret

pytestmark = pytest.mark.timeout(60)

LIST = "GET /inma/operations"
BY_ID = "GET /inma/operations/{operationId}"
FAST = {"AddItem": PollSchedule((0.2, 0.4, 0.6, 0.8))}


def item(item_id: str, collection: str = "col") -> dict:
    return make_stac_item(item_id, collection)


def calls(emu, route: str) -> int:
    return sum(emu.stats()["requests"].get(route, {}).values())


@pytest.fixture
def emu(gc_emulator):
    return gc_emulator(operation_seconds=0.5, collections=["col", "other"])


@pytest.fixture
def client(emu):
    c = GeoCatalogClient(
        emu.url,
        static_token=Secret(emu.token),
        retry=RetryPolicy(max_attempts=3, total_timeout=10, backoff_base=0.05, backoff_max=0.2),
    )
    yield c
    c.close()


def test_many_operations_resolved_by_few_list_reads(emu, client) -> None:
    ops = [client.create_items("col", [item(f"i{n}")]) for n in range(20)]
    assert all(op.collection_id == "col" and not op.terminal for op in ops)
    with OperationWatcher(client, min_interval=0.2, schedules=FAST) as watcher, ThreadPoolExecutor(20) as pool:
        start = time.monotonic()
        done = list(pool.map(lambda op: watcher.wait_for_operation(op, deadline=time.monotonic() + 20), ops))
        elapsed = time.monotonic() - start
    assert [d.id for d in done] == [op.id for op in ops]
    assert all(d.succeeded and d.submitted_at == op.submitted_at for d, op in zip(done, ops, strict=True))
    assert calls(emu, BY_ID) == 0
    # one list read per tick for all 20, ticks at most every 0.2 s
    assert 1 <= calls(emu, LIST) <= elapsed / 0.2 + 2
    assert watcher.stats["resolved"] == 20


def test_operation_pushed_off_the_page_is_read_by_id(emu, client) -> None:
    first = client.create_items("col", [item("old")])
    # newer operations of other writers come first on the page; with a one-entry page ours is not on it
    for n in range(3):
        client.create_items("col", [item(f"newer{n}")])
    with OperationWatcher(client, min_interval=0.1, page_min=1, page_max=1, max_pages=1, schedules=FAST) as watcher:
        done = watcher.wait_for_operation(first, deadline=time.monotonic() + 20)
    assert done.succeeded and done.id == first.id
    assert calls(emu, BY_ID) >= 1
    assert watcher.stats["id_reads"] >= 1


def test_collections_are_watched_separately_and_failures_come_back(client) -> None:
    a = client.create_items("col", [item("same")])
    b = client.create_items("other", [item("x", "other")])
    with OperationWatcher(client, min_interval=0.1, schedules=FAST) as watcher:
        assert watcher.wait_for_operation(a, deadline=time.monotonic() + 20).succeeded
        dup = client.create_items("col", [item("same")])  # the service accepts it, then fails it
        failed = watcher.wait_for_operation(dup, deadline=time.monotonic() + 20)
        assert watcher.wait_for_operation(b, deadline=time.monotonic() + 20).succeeded
    assert failed.status == "Failed" and failed.error_code == "ItemAlreadyExistsInCollection"


def test_deadline_gives_operation_timeout(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=30, collections=["col"])
    c = GeoCatalogClient(emu.url, static_token=Secret(emu.token))
    op = c.create_items("col", [item("slow")])
    with OperationWatcher(c, min_interval=0.1, schedules=FAST) as watcher:
        start = time.monotonic()
        with pytest.raises(OperationTimeout) as info:
            watcher.wait_for_operation(op, deadline=time.monotonic() + 0.5)
        assert 0.4 <= time.monotonic() - start < 3
        with pytest.raises(OperationTimeout):  # a deadline already passed: no read at all
            watcher.wait_for_operation(op, deadline=time.monotonic() - 1)
    assert info.value.kind is ErrorKind.TRANSIENT
    assert op.id in str(info.value) and "still" in str(info.value)


def test_cancel_and_close_wake_waiters_promptly(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=30, collections=["col"])
    c = GeoCatalogClient(emu.url, static_token=Secret(emu.token))
    op1, op2 = c.create_items("col", [item("a")]), c.create_items("col", [item("b")])
    watcher = OperationWatcher(c, min_interval=5.0, schedules={"AddItem": PollSchedule((5.0, 10.0))})
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Cancelled):
        watcher.wait_for_operation(op1, deadline=time.monotonic() + 20, cancel=cancel)
    assert time.monotonic() - start < 2
    threading.Timer(0.2, watcher.close).start()
    with pytest.raises(Cancelled):
        watcher.wait_for_operation(op2, deadline=time.monotonic() + 20)
    assert time.monotonic() - start < 4


def test_terminal_and_collectionless_operations(emu, client) -> None:
    done = Operation("x", "Succeeded", type="AddItem", collection_id="col")
    with OperationWatcher(client) as watcher:
        assert watcher.wait_for_operation(done, deadline=time.monotonic() + 1).succeeded
        op = client.create_items("col", [item("nocol")])
        bare = Operation(op.id, op.status, type=op.type, submitted_at=op.submitted_at)  # no collection_id
        assert watcher.wait_for_operation(bare, deadline=time.monotonic() + 20).succeeded
    assert calls(emu, BY_ID) >= 1  # polled on its own by the client


def test_first_reads_follow_the_durations_the_service_reports(emu, client) -> None:
    slow_first = {"AddItem": PollSchedule((1.5, 3.0))}
    with OperationWatcher(client, min_interval=0.05, schedules=slow_first) as watcher:
        first = watcher.wait_for_operation(client.create_items("col", [item("l1")]), deadline=time.monotonic() + 20)
        assert first.succeeded and first.server_seconds == pytest.approx(0.5, abs=0.05)
        learned = watcher.schedule(first).offsets
        assert learned[0] == pytest.approx(0.55, abs=0.05) and learned[1:] == (1.5, 3.0)
        op = client.create_items("col", [item("l2")])
        done = watcher.wait_for_operation(op, deadline=time.monotonic() + 20)
        assert op.submitted_at is not None
        assert done.succeeded and time.monotonic() - op.submitted_at < 1.5  # seen at the learned read, not at 1.5 s
