"""Counter state as a pure unit."""

from __future__ import annotations

import math

import numpy as np

from exporter.state import ABSENT, COUNTER_FIELDS, CounterState

WIDTH = len(COUNTER_FIELDS)


def values(first: int | None, rest: int | None = 0) -> list[int | None]:
    return [first] + [rest] * (WIDTH - 1)


def test_deltas_follow_one_connection_and_restart_on_a_new_one() -> None:
    state = CounterState()
    deltas, new, rated, _ = state.observe("a", 1, values(100), node=0, poll=1)
    assert (deltas[0], new, rated) == (100, True, False)
    deltas, new, rated, _ = state.observe("a", 1, values(130), node=0, poll=2)
    assert (deltas[0], new, rated) == (30, False, True)
    # a reconnect: the new connection's counter starts again; its full value is new traffic
    deltas, new, rated, _ = state.observe("a", 2, values(12), node=0, poll=3)
    assert (deltas[0], new, rated) == (12, True, False)
    # a counter that goes down on the same connection is taken as a restart, never negative
    deltas, _, rated, _ = state.observe("a", 2, values(5), node=0, poll=4)
    assert deltas[0] == 5 and not rated
    # a client missed by a poll (its node failed) has an increase spanning two intervals
    deltas, new, rated, _ = state.observe("a", 2, values(9), node=0, poll=6)
    assert (deltas[0], new, rated) == (4, False, False)


def test_missing_values_count_nothing() -> None:
    state = CounterState()
    state.observe("a", 1, values(10, None), node=0, poll=1)
    deltas, _, _, _ = state.observe("a", 1, values(None, None), node=0, poll=2)
    assert deltas == [0] * WIDTH
    deltas, _, _, _ = state.observe("a", 1, values(15, None), node=0, poll=3)
    assert deltas[0] == 5


def test_sweep_forgets_gone_clients_but_not_those_of_failed_nodes() -> None:
    state = CounterState()
    state.observe("on-ok-node", 1, values(1), node=0, poll=1)
    state.observe("on-failed-node", 1, values(1), node=1, poll=1)
    state.observe("still-here", 1, values(1), node=0, poll=1)
    state.observe("still-here", 1, values(2), node=0, poll=2)
    removed = state.sweep(poll=2, walked_nodes=[0])
    assert removed == 1 and len(state) == 2
    assert "on-failed-node" in state and "on-ok-node" not in state
    # a slot is reused, and a returning client starts afresh
    deltas, new, rated, _ = state.observe("on-ok-node", 5, values(7), node=0, poll=3)
    assert (deltas[0], new, rated) == (7, True, False)


def test_reconnect_score_decays() -> None:
    state = CounterState()
    state.observe("a", 1, values(0), node=0, poll=1)
    state.observe("steady", 1, values(0), node=0, poll=1)
    for poll, connection in enumerate((2, 3, 4), start=2):
        state.observe("a", connection, values(0), node=0, poll=poll)
        state.observe("steady", 1, values(0), node=0, poll=poll)
    assert state.reconnect_score("a") == 3.0
    slots, _ = state.slots(["steady", "a"])
    assert state.reconnect_scores(slots).tolist() == [0.0, 3.0]  # the page form: by slot
    state.sweep(poll=4, walked_nodes=[0])
    assert 0.0 < state.reconnect_score("a") < 3.0
    assert state.reconnect_scores(slots).tolist() == [0.0, state.reconnect_score("a")]
    assert state.reconnect_score("never-seen") == 0.0


def test_state_is_compact() -> None:
    state = CounterState()
    for i in range(20_000):
        state.observe(f"client-{i:07d}", i, values(i), node=0, poll=1)
    assert state.nbytes() / len(state) < 400


def test_a_connection_start_is_read_once_per_connection() -> None:
    read: list[str | None] = []

    def parse(text: str | None) -> float | None:
        read.append(text)
        return None if text == "garbage" else 100.0

    state = CounterState(parse)
    *_, since = state.observe("a", 1, values(0), node=0, poll=1, started="t1")
    assert since == 100.0
    *_, since = state.observe("a", 1, values(0), node=0, poll=2, started="t1")
    assert since == 100.0 and read == ["t1"]  # the same connection: not parsed again
    *_, since = state.observe("a", 2, values(0), node=0, poll=3, started="garbage")
    assert since != since and read == ["t1", "garbage"]  # unknown start: NaN


def test_a_client_listed_twice_in_a_poll_counts_once_and_its_first_row_wins() -> None:
    state = CounterState()
    slots, allocated = state.slots(["a", "b", "a"])
    assert slots[0] == slots[2] != slots[1] and allocated.tolist() == [True, True, True]
    assert len(state) == 2  # one slot for a, however often the page lists it
    assert state.first_listing(slots, poll=1).tolist() == [True, True, False]
    # a later page of the same poll: b again is drift, c is new
    more, allocated = state.slots(["b", "c", "c"])
    assert more[0] == slots[1] and allocated.tolist() == [False, True, True]
    assert state.first_listing(more, poll=1).tolist() == [False, True, False]
    # the next poll lists everybody afresh, once each
    again, allocated = state.slots(["c", "a", "b", "a"])
    assert not allocated.any()
    assert state.first_listing(again, poll=2).tolist() == [True, True, True, False]


def test_unlisting_a_failed_walk_lets_a_re_walk_list_its_clients_again() -> None:
    state = CounterState()
    slots, _ = state.slots(["a", "b", "c"])
    assert state.first_listing(slots, poll=1).all()
    state.unlist(slots[:2])  # the walk that listed a and b failed
    again, _ = state.slots(["b", "c", "a", "b"])
    assert state.first_listing(again, poll=1).tolist() == [True, False, True, False]
    assert not state.first_listing(again, poll=1).any()  # listed now: drift from here on
    assert state.first_listing(again[:1], poll=2).tolist() == [True]


def _started(text: str | None) -> float | None:
    return None if text is None or not text.startswith("t") else float(text[1:])


def test_a_page_observes_each_row_as_observing_it_alone() -> None:
    """`observe_page` of a page mixing every case equals `observe` of its rows one by one, on a
    state with the same history; and both equal the increases worked out by hand."""
    history: list[tuple[int, str, int | None, list[int | None], int, str | None]] = [
        # (poll, client, connection, counters, node, started)
        (1, "same", 1, values(100, 10), 0, "t1"),
        (1, "reconnects", 1, values(100, 10), 0, "t1"),
        (1, "goes-down", 1, values(100, 10), 1, "t1"),
        (1, "absent", 1, values(100, 10), 1, "t1"),
        (1, "no-time", 1, values(100, 10), 0, "t1"),
        (1, "missed", 1, values(100, 10), 0, "t1"),
        (1, "renewed-absent", 1, values(100, 10), 0, "t1"),
        (2, "same", 1, values(110, 10), 0, "t1"),
        (2, "reconnects", 1, values(110, 10), 0, "t1"),
        (2, "goes-down", 1, values(110, 10), 1, "t1"),
        (2, "absent", 1, values(110, 10), 1, "t1"),
        (2, "no-time", 1, values(110, 10), 0, "t1"),
        (2, "renewed-absent", 1, values(110, 10), 0, "t1"),
    ]
    page: list[tuple[str, int | None, list[int | None], int, str | None]] = [
        ("same", 1, values(130, 15), 0, "t1"),
        ("new", 7, values(50, None), 1, "t70"),
        ("reconnects", 2, values(12, 3), 1, "t2"),
        ("goes-down", 1, values(40, 11), 1, "t1"),          # first counter restarted
        ("absent", 1, values(None, 12), 1, None),
        ("no-time", None, values(125, 10), 0, None),        # taken as the last connection
        ("new-no-time", None, values(5, 6), 0, None),
        ("missed", 1, values(105, 10), 0, "t1"),            # not seen by poll 2
        ("renewed-absent", 3, values(None, 4), 0, "bad"),   # new connection, unknown start
    ]
    expected = {  # client: (increase of the first counter, of each other, new, rated, since)
        "same": (20, 5, False, True, 1.0),
        "new": (50, 0, True, False, 70.0),
        "reconnects": (12, 3, True, False, 2.0),
        "goes-down": (40, 1, False, False, 1.0),
        "absent": (0, 2, False, True, 1.0),
        "no-time": (15, 0, False, True, 1.0),
        "new-no-time": (5, 6, True, False, math.nan),
        "missed": (5, 0, False, False, 1.0),
        "renewed-absent": (0, 4, True, False, math.nan),
    }
    paged, single = CounterState(_started), CounterState(_started)
    for poll, client, connection, counters, node, started in history:
        for state in (paged, single):
            state.observe(client, connection, counters, node, poll, started)
    ids = [row[0] for row in page]
    slots, allocated = paged.slots(ids)
    assert allocated.tolist() == [cid.startswith("new") for cid in ids]
    seen = paged.observe_page(
        slots, allocated, np.array([row[1] or 0 for row in page], np.int64),
        np.array([row[1] is not None for row in page]),
        np.array([[ABSENT if v is None else v for v in row[2]] for row in page], np.int64),
        np.array([row[3] for row in page], np.int64), 3, [row[4] for row in page])
    assert seen.slots.tolist() == slots.tolist()
    for i, (client, connection, counters, node, started) in enumerate(page):
        alone = single.observe(client, connection, counters, node, 3, started)
        got = (seen.deltas[i].tolist(), bool(seen.new[i]), bool(seen.rated[i]),
               float(seen.since[i]))
        assert repr(got) == repr(alone), client  # repr: NaN == NaN
        first, rest, new, rated, since = expected[client]
        assert repr(got) == repr(([first] + [rest] * (WIDTH - 1), new, rated, since)), client
    # Both states keep the same values, connections, nodes and scores: the next poll agrees.
    # each client's connection as the page left it (None: the row had no connection time)
    connections = {client: connection for client, connection, *_ in page}
    connections.update({"no-time": 1})
    first_counter: dict[str, int] = {}
    for client in ids:
        after = [state.observe(client, connections[client], values(200, 20), 0, 4)
                 for state in (paged, single)]
        assert repr(after[0]) == repr(after[1]), client
        first_counter[client] = after[0][0][0]
        assert paged.node_of(client) == single.node_of(client) == 0
        assert paged.reconnect_score(client) == single.reconnect_score(client)
    # what the page kept: an absent counter its last value (110), a renewed connection's
    # absent counter 0, a restarted counter its new low (40)
    assert {c: first_counter[c] for c in ("absent", "renewed-absent", "goes-down", "same")} == {
        "absent": 90, "renewed-absent": 200, "goes-down": 160, "same": 70}
    assert paged.reconnect_score("reconnects") == single.reconnect_score("reconnects") > 0
    assert paged.sweep(4, [0, 1]) == single.sweep(4, [0, 1]) == 0
    assert paged.nbytes() == single.nbytes()
    assert paged.observe("absent", 1, values(200, 20), 0, 5)[0][:2] == [0, 0]
    assert paged.sweep(5, [0]) == len(ids) - 1


def test_a_slot_freed_by_a_sweep_is_reused_by_a_new_client_that_starts_afresh() -> None:
    state = CounterState(_started)
    for client in ("gone-1", "stays", "gone-2"):
        state.observe(client, 1, values(1000), node=0, poll=1, started="t5")
    state.observe("gone-1", 2, values(1000), node=1, poll=2, started="t6")  # reconnected
    state.observe("stays", 1, values(1000), node=0, poll=3)
    old, _ = state.slots(["gone-1", "stays", "gone-2"])
    assert state.sweep(poll=3, walked_nodes=[0, 1]) == 2
    assert "gone-1" not in state and "gone-2" not in state and len(state) == 1
    slots, allocated = state.slots(["n1", "n2", "n3"])
    assert allocated.all() and len(state) == 4
    assert set(slots[:2].tolist()) == {old[0], old[2]}  # the freed slots first
    assert slots[2] == max(old) + 1                     # then the arrays grow by one
    # Nothing of the slot's last client carries over: not its connection (the same start
    # hash), counters, reconnects, start time or node.
    seen = state.observe_page(slots, allocated, np.array([2, 1, 1], np.int64),
                              np.ones(3, np.bool_), np.array([values(7)] * 3, np.int64),
                              np.zeros(3, np.int64), 4, [None, None, None])
    assert seen.deltas[:, 0].tolist() == [7, 7, 7] and seen.new.all() and not seen.rated.any()
    assert np.isnan(seen.since).all()
    assert state.reconnect_scores(slots).tolist() == [0.0, 0.0, 0.0]
    assert [state.node_of(c) for c in ("n1", "n2", "n3")] == [0, 0, 0]
    # a returning client is a new one, on a slot of its own
    (back,), _ = state.slots(["gone-1"])
    assert back not in slots.tolist() and back != old[1]
    assert state.observe("gone-1", 2, values(1000), 0, 4)[:3] == ([1000] + [0] * (WIDTH - 1),
                                                                 True, False)
