"""Pure-logic tests of worker.processing.batching against an in-memory catalog (no network)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.fakes import FakeCatalog, live_copy, make_item
from worker.adapters.geocatalog.client import ValidationError
from worker.adapters.ratelimit import RateLimiter
from worker.domain.errors import Cancelled, ErrorKind
from worker.domain.stored import with_digest
from worker.processing.batching import (
    Batcher,
    BatchSettings,
    classify_operation_code,
    operation_failure,
    same_content,
)

pytestmark = pytest.mark.timeout(30)


def concurrent_submits(batcher: Batcher, groups: list[list[dict]], mode: str = "upsert", **kw):
    barrier = threading.Barrier(len(groups))

    def run(i: int):
        barrier.wait()
        return batcher.submit("c1", groups[i], mode=mode, request_id=f"r{i}", **kw)

    with ThreadPoolExecutor(len(groups)) as pool:
        return list(pool.map(run, range(len(groups))))


@pytest.fixture(params=[True, False], ids=["named", "unnamed"])
def fake(request) -> FakeCatalog:
    """Both ways of resolving a failed batch: the operation message names the failed items, or it does not."""
    f = FakeCatalog()
    f.name_failures = request.param
    return f


def batcher_for(fake: FakeCatalog, **kw) -> Batcher:
    kw.setdefault("linger", 0.3)
    return Batcher(fake, BatchSettings(**kw))


def test_concurrent_single_item_submissions_share_one_post(fake):
    with batcher_for(fake, linger=0.5) as b:
        results = concurrent_submits(b, [[make_item(f"i{n}")] for n in range(20)])
    assert all(r.all_succeeded for r in results)
    assert [r.items[0].id for r in results] == [f"i{n}" for n in range(20)]
    assert fake.calls["POST"] <= 2
    assert sum(fake.post_sizes) == 20
    assert len(fake.items) == 20
    # every request names the merged operation it was part of
    assert all(len(r.operations) == 1 and r.operations[0].status == "Succeeded" for r in results)


def test_max_items_bounds_each_post(fake):
    with batcher_for(fake, max_items=50) as b:
        results = concurrent_submits(b, [[make_item(f"r{g}-{n}") for n in range(20)] for g in range(6)])
    assert all(r.all_succeeded for r in results)
    assert max(fake.post_sizes) <= 50
    assert sum(fake.post_sizes) == 120
    assert fake.calls["POST"] >= 3


def test_max_bytes_bounds_each_post(fake):
    size = len(str(make_item("x")))  # ~ the compact JSON size of one item
    with batcher_for(fake, max_bytes=size * 3) as b:
        results = concurrent_submits(b, [[make_item(f"i{n}")] for n in range(9)])
    assert all(r.all_succeeded for r in results)
    assert max(fake.post_sizes) <= 3
    assert fake.calls["POST"] >= 3


def test_large_submission_is_chunked_and_answered_once(fake):
    fake.item_faults["i17"] = "IngestionResourceForbidden"
    with batcher_for(fake, max_items=10, linger=0.0) as b:
        r = b.submit("c1", [make_item(f"i{n}") for n in range(25)])
    assert [i.id for i in r.items] == [f"i{n}" for n in range(25)]
    assert [i.id for i in r.items if not i.succeeded] == ["i17"]
    assert sorted(fake.post_sizes) == [1, 5, 10, 10]  # three chunks (any order) and the bad item alone
    assert len(r.operations) == 4  # three chunks and the single re-POST of the bad item


def test_same_id_from_two_requests_is_never_in_one_post(fake):
    with batcher_for(fake) as b:
        results = concurrent_submits(b, [[make_item("same")], [make_item("same")], [make_item("other")]])
    for ids in fake.post_ids:
        assert len(ids) == len(set(ids))
    assert all(r.all_succeeded for r in results)  # upsert: the second write replaces via PUT or matches


def test_linger_zero_still_merges_nothing_and_succeeds(fake):
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item("a"), make_item("b")])
    assert r.all_succeeded and fake.post_sizes == [2]


def test_one_bad_item_fails_only_its_request(fake):
    fake.item_faults["i3"] = "IngestionAuthenticationFailed"
    with batcher_for(fake) as b:
        results = concurrent_submits(b, [[make_item(f"i{n}")] for n in range(10)])
    by_id = {r.items[0].id: r.items[0] for r in results}
    assert not by_id["i3"].succeeded
    assert by_id["i3"].error.code == "IngestionAuthenticationFailed"
    assert by_id["i3"].error.kind is ErrorKind.PERMANENT
    assert all(by_id[f"i{n}"].succeeded for n in range(10) if n != 3)
    # merged POST(s) + GET probes + one single re-POST for the bad item; no PUTs, no double ingest
    assert fake.calls["PUT"] == 0
    assert fake.calls["POST"] <= 3
    assert fake.post_ids[-1] == ["i3"]
    assert len(fake.items) == 9


def test_failed_batch_resolution_reads_only_when_the_message_does_not_name_the_failures(fake):
    fake.item_faults["i2"] = "IngestionAuthenticationFailed"
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item(f"i{n}") for n in range(6)])
    assert [i.succeeded for i in r.items] == [True, True, False, True, True, True]
    assert fake.calls["POST"] == 2 and fake.post_ids[1] == ["i2"]
    assert fake.calls["GET"] == (0 if fake.name_failures else 6)


def test_bad_item_inside_multi_item_request_gets_its_own_code(fake):
    fake.item_faults["b"] = "IngestionResourceForbidden"
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item("a"), make_item("b"), make_item("c")])
    assert [i.succeeded for i in r.items] == [True, False, True]
    assert r.items[1].error.code == "IngestionResourceForbidden"
    assert len(r.operations) == 2  # the merged op and the single re-POST


def test_upsert_redelivery_of_identical_items_writes_nothing(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [make_item(f"i{n}") for n in range(8)])
        before = dict(fake.calls)
        r = b.submit("c1", [make_item(f"i{n}") for n in range(8)])
    assert r.all_succeeded
    assert fake.calls["POST"] - before["POST"] == 1
    assert fake.calls["PUT"] == 0
    assert len(fake.items) == 8


def test_upsert_replaces_changed_existing_items_with_put(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [make_item("a"), make_item("b")])
        r = b.submit("c1", [make_item("a", value=2), make_item("b"), make_item("new")])
    assert r.all_succeeded
    assert fake.calls["PUT"] == 1
    assert fake.items[("c1", "a")]["properties"]["value"] == 2
    assert ("c1", "new") in fake.items


def test_upsert_single_existing_item_goes_to_put(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [make_item("a")])
        r = b.submit("c1", [make_item("a", value=5)])
    assert r.all_succeeded and fake.calls["PUT"] == 1
    assert [o.status for o in r.operations] == ["Failed", "Succeeded"]


def test_create_mode_conflict_fails_with_already_exists(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [make_item("a")], mode="create")
        r = b.submit("c1", [make_item("a", value=9)], mode="create")
    assert not r.items[0].succeeded
    assert r.items[0].error.code == "ItemAlreadyExistsInCollection"
    assert fake.calls["PUT"] == 0


def test_create_mode_items_written_by_our_failed_batch_are_not_conflicts(fake):
    fake.items[("c1", "old")] = make_item("old", value=0)  # someone else's item
    with batcher_for(fake) as b:
        results = concurrent_submits(
            b, [[make_item("n1")], [make_item("old", value=1)], [make_item("n2"), make_item("n3")]], mode="create"
        )
    outcome = {i.id: i for r in results for i in r.items}
    assert outcome["old"].error.code == "ItemAlreadyExistsInCollection"
    assert outcome["n1"].succeeded and outcome["n2"].succeeded and outcome["n3"].succeeded
    assert fake.items[("c1", "old")]["properties"]["value"] == 0  # never overwritten in create mode
    assert fake.calls["PUT"] == 0


def test_create_mode_without_counts_decides_by_content(fake):
    fake.report_counts = False
    fake.items[("c1", "old")] = make_item("old", value=0)
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item("n1"), make_item("old", value=1)], mode="create")
    assert r.items[0].succeeded
    assert r.items[1].error.code == "ItemAlreadyExistsInCollection"


def test_create_mode_retry_trusts_identical_item_from_earlier_attempt(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [make_item("a")], mode="create")
        again = b.submit("c1", [make_item("a")], mode="create", trust_identical=True)
        changed = b.submit("c1", [make_item("a", value=3)], mode="create", trust_identical=True)
    assert again.all_succeeded
    assert changed.items[0].error.code == "ItemAlreadyExistsInCollection"


def test_synchronous_rejection_bisects_to_the_bad_item_in_log2_steps(fake):
    fake.sync_reject.add("i11")
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item(f"i{n}") for n in range(16)])
    assert [i.id for i in r.items if not i.succeeded] == ["i11"]
    assert r.items[11].error.kind is ErrorKind.INVALID
    # 1 + 2 per level for 4 levels (16 → 8 → 4 → 2 → 1)
    assert fake.calls["POST"] == 1 + 2 * 4
    assert len(fake.items) == 15


def test_synchronous_rejection_splits_member_requests_first(fake):
    fake.sync_reject.add("bad")
    with batcher_for(fake) as b:
        results = concurrent_submits(b, [[make_item("a")], [make_item("bad")], [make_item("c"), make_item("d")]])
    ok = {r.items[0].id: r.all_succeeded for r in results}
    assert ok == {"a": True, "bad": False, "c": True}
    assert sorted(map(tuple, fake.post_ids[1:])) == [("a",), ("bad",), ("c", "d")]


def test_whole_operation_failure_is_bisected(fake):
    fake.op_faults.append("PostItemCollectionSizeExceeded")
    with batcher_for(fake, linger=0.0) as b:
        r = b.submit("c1", [make_item(f"i{n}") for n in range(4)])
    assert r.all_succeeded
    assert fake.post_sizes == [4, 2, 2]


def test_transient_operation_code_fails_every_item_transiently_without_bisecting(fake):
    fake.op_faults.append("InternalIntermitentError")
    with batcher_for(fake) as b:
        results = concurrent_submits(b, [[make_item(f"i{n}")] for n in range(5)])
    errors = [r.items[0].error for r in results]
    assert all(e is not None and e.kind is ErrorKind.TRANSIENT and e.code == "InternalIntermitentError" for e in errors)
    assert fake.calls["POST"] <= 2 and fake.calls["GET"] == 0


def test_cancel_before_flush_withdraws_the_submission(fake):
    cancel = threading.Event()
    with batcher_for(fake, linger=1.0) as b:
        threading.Timer(0.05, cancel.set).start()
        with pytest.raises(Cancelled):
            b.submit("c1", [make_item("a")], cancel=cancel)
    assert fake.calls["POST"] == 0


def test_closed_batcher_refuses_new_work(fake):
    b = batcher_for(fake)
    b.close()
    with pytest.raises(Cancelled):
        b.submit("c1", [make_item("a")])


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InternalError", ErrorKind.TRANSIENT),
        ("InternalIntermitentError", ErrorKind.TRANSIENT),
        ("IngestionResourceTimeout", ErrorKind.TRANSIENT),
        ("CanceledOperation", ErrorKind.TRANSIENT),
        ("IngestionAuthenticationFailed", ErrorKind.PERMANENT),
        ("PublicAccessRestricted", ErrorKind.PERMANENT),
        ("ItemAlreadyExistsInCollection", ErrorKind.PERMANENT),
        (None, ErrorKind.PERMANENT),
    ],
)
def test_operation_code_classification(code, kind):
    assert classify_operation_code(code) is kind
    assert operation_failure(code, "m").kind is kind


def test_operation_failed_message_is_redacted():
    e = operation_failure("X", "cannot read https://a.blob.core.windows.net/c/x.tif?se=2030&sp=r&sig=SECRET123")
    assert "SECRET123" not in str(e) and "SECRET123" not in repr(e.to_dict())


def test_same_content_ignores_service_fields_links_and_sas():
    sent = make_item("a")
    sent["assets"]["data"]["href"] += "?sv=1&sig=abc"
    stored = make_item("a")
    stored["_msft:etag"] = "e"
    stored["properties"]["msft:_created"] = "2024"
    stored["links"] = [{"rel": "self", "href": "x"}]
    stored["assets"]["data"]["href"] += "?sv=2&sig=def"
    assert same_content(stored, sent)
    assert not same_content(make_item("a", value=2), sent)
    moved = make_item("a")
    moved["assets"]["data"]["href"] = "https://other.blob.core.windows.net/ctr/a.tif"
    assert not same_content(moved, sent)


# -- the live service's stored shape (hrefs rewritten, extensions upgraded): see tests/unit/test_stored.py


def stamped(item_id: str, **kw) -> dict:
    return with_digest(make_item(item_id, **kw))


@pytest.mark.parametrize("build", [make_item, stamped], ids=["fields", "digest"])
def test_upsert_of_an_unchanged_single_item_is_not_written_again(fake, build):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [build("a")])
        first = fake.items[("c1", "a")]
        r = b.submit("c1", [build("a")])
    assert r.all_succeeded
    assert fake.calls["PUT"] == 0  # read, recognised as ours, not rewritten (its assets not copied again)
    assert fake.items[("c1", "a")]["_msft:etag"] == first["_msft:etag"]


@pytest.mark.parametrize("build", [make_item, stamped], ids=["fields", "digest"])
def test_create_redelivery_recognises_its_own_rewritten_item(fake, build):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [build("a")], mode="create")
        assert fake.items[("c1", "a")]["assets"]["data"]["href"].startswith("https://managedsa.")
        again = b.submit("c1", [build("a")], mode="create", trust_identical=True)
        changed = b.submit("c1", [build("a", value=7)], mode="create", trust_identical=True)
    assert again.all_succeeded
    assert changed.items[0].error.code == "ItemAlreadyExistsInCollection"


@pytest.mark.parametrize("build", [make_item, stamped], ids=["fields", "digest"])
def test_probe_of_a_failed_merged_batch_names_exactly_the_failed_items(fake, build):
    fake.items[("c1", "taken")] = live_copy("c1", build("taken", value=0))
    fake.item_faults["bad"] = "PublicAccessRestricted"
    with batcher_for(fake) as b:
        results = concurrent_submits(
            b, [[build("n1")], [build("taken", value=1)], [build("n2"), build("bad")]], mode="create"
        )
    outcome = {i.id: i for r in results for i in r.items}
    failed = {k: v.error.code for k, v in outcome.items() if not v.succeeded}
    assert failed == {"taken": "ItemAlreadyExistsInCollection", "bad": "PublicAccessRestricted"}
    assert fake.calls["PUT"] == 0


def test_a_digest_tells_a_changed_asset_href_that_the_rewritten_field_cannot(fake):
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [stamped("a")])
        moved = make_item("a")
        moved["assets"]["data"]["href"] = "https://acct.blob.core.windows.net/ctr/elsewhere.tif"
        r = b.submit("c1", [with_digest(moved)])
    assert r.all_succeeded and fake.calls["PUT"] == 1
    assert fake.submitted[("c1", "a")]["assets"]["data"]["href"].endswith("/elsewhere.tif")


@pytest.mark.parametrize("mode", ["create", "upsert"])
def test_a_synchronous_409_is_handled_like_the_asynchronous_conflict(fake, mode):
    fake.sync_conflict = True
    with batcher_for(fake, linger=0.0) as b:
        b.submit("c1", [stamped("a"), stamped("b")], mode=mode)
        same = b.submit("c1", [stamped("a")], mode=mode, trust_identical=True)
        merged = b.submit("c1", [stamped("a"), stamped("b", value=2), stamped("c")], mode=mode, trust_identical=True)
    assert same.all_succeeded
    outcome = {i.id: i for i in merged.items}
    assert outcome["a"].succeeded and outcome["c"].succeeded
    if mode == "create":
        assert outcome["b"].error.code == "ItemAlreadyExistsInCollection"
        assert fake.calls["PUT"] == 0
    else:
        assert outcome["b"].succeeded and fake.calls["PUT"] == 1
        assert fake.items[("c1", "b")]["properties"]["value"] == 2


class BudgetedCatalog(FakeCatalog):
    """The fake catalog behind a client-side budget of ``rate`` calls/s; rejects POSTs above ``max_post``."""

    def __init__(self, rate: float, max_post: int = 10_000) -> None:
        super().__init__()
        self.rate_limiter = RateLimiter(rate)
        self.max_post = max_post

    def create_items(self, collection: str, items, *, cancel=None):
        if len(items) > self.max_post:
            with self.lock:
                self.calls["POST"] += 1
            raise ValidationError("too large", status=400, code="PostItemCollectionSizeExceeded")
        self.rate_limiter.acquire(cancel)  # as GeoCatalogClient.request does for every call
        return super().create_items(collection, items, cancel=cancel)


def sustained_submits(batcher: Batcher, rounds: int = 12, per_round: int = 5, items: int = 10, gap: float = 0.05):
    """``rounds`` waves of ``per_round`` concurrent submissions, a wave every ``gap`` seconds (steady load)."""
    with ThreadPoolExecutor(rounds * per_round) as pool:
        futures = []
        for r in range(rounds):
            for k in range(per_round):
                batch = [make_item(f"r{r}-{k}-{n}") for n in range(items)]
                futures.append(pool.submit(batcher.submit, "c1", batch, request_id=f"r{r}-{k}"))
            time.sleep(gap)  # the producer's pace, not a synchronisation
        return [f.result(timeout=20) for f in futures]


def test_batches_grow_past_max_items_while_posts_wait_for_the_budget():
    fake = BudgetedCatalog(rate=10.0)  # write share 0.3: one ingest POST slot per 0.33 s
    with batcher_for(fake, max_items=100, max_items_backlog=1000, linger=0.0) as b:
        start = time.monotonic()
        results = sustained_submits(b)  # 600 items in 0.6 s
        elapsed = time.monotonic() - start
    assert all(r.all_succeeded for r in results)
    assert sum(fake.post_sizes) == 600
    assert max(fake.post_sizes) > 100  # grown while the budget was the bottleneck
    assert fake.calls["POST"] <= 5
    assert elapsed < 5


def test_without_a_budget_posts_stay_within_max_items(fake):
    with batcher_for(fake, max_items=100, max_items_backlog=1000, linger=0.0) as b:
        results = sustained_submits(b)
    assert all(r.all_succeeded for r in results)
    assert max(fake.post_sizes) <= 100


def test_posts_start_at_the_write_share_of_the_budget():
    fake = BudgetedCatalog(rate=20.0)  # 6 POSTs/s
    with batcher_for(fake, linger=0.0, write_share=0.3) as b:
        start = time.monotonic()
        for n in range(4):  # one after the other: each waits for its slot
            assert b.submit("c1", [make_item(f"s{n}")]).all_succeeded
        elapsed = time.monotonic() - start
    assert fake.calls["POST"] == 4
    assert elapsed >= 3 / 6.0 - 0.05


def test_a_size_rejection_halves_the_cap_and_the_items_still_land():
    fake = BudgetedCatalog(rate=10.0, max_post=150)
    with batcher_for(fake, max_items=100, max_items_backlog=1000, linger=0.0) as b:
        results = sustained_submits(b)
        assert b._cap < 1000
    assert all(r.all_succeeded for r in results)
    assert len(fake.items) == 600
    assert max(fake.post_sizes) <= 150
