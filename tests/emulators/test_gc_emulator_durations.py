"""By default the GeoCatalog emulator's operations take as long as the live service's (recordings T14, T13, T11,
T07): drawn per operation type and outcome, seeded. Read from the operation timeline, so no test waits for them."""

from __future__ import annotations

import pytest
import requests
from gcw_emulators.geocatalog.operations import RECORDED_DURATIONS, DurationSpec

from tests.support.geocatalog import make_stac_item

C = "col-d"
V = {"api-version": "2025-04-30-preview"}


def timeline(emu, op_id: str) -> tuple[float, float]:
    op = emu.catalog.store.get_operation(op_id)
    return op.finished - op.created, op.started - op.created


def submit(emu, method: str, path: str, body: dict | None = None) -> str:
    r = requests.request(method, f"{emu.url}{path}", params=V, json=body, headers=emu.headers, timeout=5)
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.mark.parametrize("seed", [0, 7])
def test_recorded_durations_per_type_and_outcome(gc_emulator, seed):
    emu = gc_emulator(operation_seconds="recorded", collections=[C], seed=seed)
    add = timeline(emu, submit(emu, "POST", f"/stac/collections/{C}/items", make_stac_item("a", C)))
    assert 5.0 <= add[0] <= 7.0 and add[1] == pytest.approx(add[0] * 0.34)
    failing = timeline(emu, submit(emu, "DELETE", f"/stac/collections/{C}/items/missing"))
    assert 0.7 <= failing[0] <= 1.6
    collection = timeline(emu, submit(emu, "POST", "/stac/collections", {"id": "new-col"}))
    assert 4.6 <= collection[0] <= 8.4 and collection[1] >= 0.9 * collection[0]


def test_recorded_durations_are_seeded_and_the_default():
    import random

    spec = DurationSpec("recorded")
    draws = [spec.sample(random.Random(3), t) for t in RECORDED_DURATIONS]
    assert draws == [spec.sample(random.Random(3), t) for t in RECORDED_DURATIONS]
    assert 2.2 <= spec.sample(random.Random(1), "UpdateItem")[0] <= 2.8
    assert 0.6 <= spec.sample(random.Random(1), "DeleteItem")[0] <= 1.0
    assert DurationSpec(0.2).sample(random.Random(1), "AddItem") == (0.2, 0.05)  # the fast fixed value stays
    from inspect import signature

    from gcw_emulators.geocatalog import GeoCatalogEmulator

    assert signature(GeoCatalogEmulator).parameters["operation_seconds"].default == "recorded"
