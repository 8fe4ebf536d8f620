"""A page's columns: absent values, capacities, fill ratios and exact sums."""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.columns import BATCHED, Columns, capacities, exact, ints, ratios
from exporter.records import COUNTERS, NUMBER_MAX, record_type
from exporter.state import ABSENT

V5 = record_type("v5")


def test_numbers_keep_their_value_and_anything_else_is_absent() -> None:
    assert ints([3, 0, NUMBER_MAX]).tolist() == [3, 0, NUMBER_MAX]
    # None (not reported), a string (even one that reads as a number) and a bool are no figure,
    # wherever they sit in the column
    assert ints([None, 5, "100", "infinity", True]).tolist() == [ABSENT, 5] + [ABSENT] * 3
    assert ints(["100", 7]).tolist() == [ABSENT, 7]
    assert ints([None, None]).tolist() == [ABSENT, ABSENT]
    assert ints([None, 7, None, 0]).tolist() == [ABSENT, 7, ABSENT, 0]  # gaps only: still in C
    assert ints([]).tolist() == []


def test_a_capacity_of_zero_or_infinity_is_unlimited() -> None:
    assert capacities([32, 0, "infinity", None, 1]).tolist() == [32, ABSENT, ABSENT, ABSENT, 1]


def test_a_fill_ratio_needs_a_length_and_a_limited_capacity() -> None:
    fill, known = ratios(np.array([5, 5, ABSENT, 0]), capacities([10, 0, 10, 4]))
    assert known.tolist() == [True, False, False, True]
    assert fill.tolist() == [0.5, 0.0, 0.0, 0.0]


def test_columns_of_a_page() -> None:
    records = [
        V5(clientid="a", node="n1", connected=True, connected_at="t1", received_bytes=10,
           mqueue_len=3, mqueue_max=6),
        V5(clientid="b", node="n1", connected=False, created_at="t0", mqueue_len=1,
           mqueue_max=0),
        V5(clientid="c", connected=None),  # v3: no flag, a listed connection is online
    ]
    page = Columns(records)
    assert page.clientids == ["a", "b", "c"] and page.size == 3
    assert page.values("node") == ["n1", "n1", None]
    assert page.number("received_bytes").tolist() == [10, ABSENT, ABSENT]
    assert page.reported("received_bytes").tolist() == [True, False, False]
    assert page.offline().tolist() == [False, True, False]
    fill, known = page.fill("mqueue_len")
    assert fill.tolist()[0] == 0.5 and known.tolist() == [True, False, False]
    # a connection is known by its start, the session's creation when it has no connection time
    assert page.connection_starts() == ["t1", "t0", None]
    counters = page.counters()
    assert counters.shape == (3, len(COUNTERS))
    assert counters[0, COUNTERS.index("received_bytes")] == 10
    assert page.take(np.array([2, 0])) == [records[2], records[0]]
    assert Columns([]).counters().shape == (0, len(COUNTERS))


def test_the_fields_read_together_equal_each_field_read_alone() -> None:
    # Counters, lengths and capacities are read in one pass over the records (`BATCHED`); each
    # column must be what reading its field alone gives, gaps (a durable session without
    # counters) and all, and a capacity must not write into the length it is computed from.
    assert {"received_bytes", "mqueue_len", "mqueue_max", "inflight_max"} <= set(BATCHED)
    figures: list[dict[str, Any]] = [
        {f: None if (i + at) % 3 == 0 else (i * 10 + at) % 7 for at, f in enumerate(BATCHED)}
        for i in range(7)]
    records = [V5(clientid=f"c{i}", subscriptions_max="infinity" if i % 2 else 5, **row)
               for i, row in enumerate(figures)]
    records.append(V5(clientid="unlimited", mqueue_len=2, mqueue_max=0, subscriptions_max=5))
    page = Columns(records)
    for field in BATCHED:
        alone = ints([getattr(r, field) for r in records])
        assert page.number(field).tolist() == alone.tolist(), field
    assert page.capacity("mqueue_max").tolist() == capacities(
        [r.mqueue_max for r in records]).tolist()
    assert page.number("mqueue_max").tolist() == ints([r.mqueue_max for r in records]).tolist()
    # a field that may hold "infinity" is read on its own: the string is no capacity
    assert page.capacity("subscriptions_max").tolist() == [5, ABSENT] * 3 + [5, 5]
    assert Columns([]).number("received_bytes").tolist() == []


def test_sums_that_could_pass_int64_are_made_with_python_ints() -> None:
    big = np.array([NUMBER_MAX, NUMBER_MAX])
    a, b = exact(big, np.array([1, 1]))
    assert a.dtype == object and int((a + b).sum()) == 2 * NUMBER_MAX + 2
    small = exact(np.array([1, 2]), np.array([3, 4]))
    assert all(col.dtype == np.int64 for col in small)
