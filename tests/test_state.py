"""Counter state as a pure unit."""

from __future__ import annotations

from exporter.state import COUNTER_FIELDS, CounterState

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
    for poll, connection in enumerate((2, 3, 4), start=2):
        state.observe("a", connection, values(0), node=0, poll=poll)
    assert state.reconnect_score("a") == 3.0
    state.sweep(poll=4, walked_nodes=[0])
    assert state.reconnect_score("a") < 3.0


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


def test_a_quiet_row_is_found_only_when_it_is_the_row_observed_last() -> None:
    state = CounterState()
    assert state.quiet(["a", "b"], [11, 12]) == [-1, -1]  # nothing tracked yet
    state.observe("a", 1, values(5), node=0, poll=1, fingerprint=11)
    state.observe("b", 1, values(5), node=0, poll=1, fingerprint=12)
    slot_a = state.quiet(["a"], [11])[0]
    assert slot_a >= 0
    # changed row, unknown client, the other client's fingerprint
    assert state.quiet(["a", "c", "b"], [99, 11, 11]) == [-1, -1, -1]
    assert state.quiet(["b", "a"], [12, 11])[1] == slot_a
    assert state.quiet([], []) == []  # a page a shard kept nothing of


def test_touching_a_quiet_client_is_observing_an_unchanged_row() -> None:
    """Replaying one history through `observe` only, and through `quiet` + `touch` where the
    row did not change, gives the same results and the same state."""
    history = [  # (poll, client, connection, counters, node)
        (1, "a", 1, values(5), 0), (1, "b", 1, values(None, 3), 1),
        (2, "a", 1, values(5), 0), (2, "b", 1, values(None, 3), 1),
        (3, "a", 1, values(5), 1), (3, "b", 2, values(None, 3), 1),
        (5, "a", 1, values(5), 1), (5, "b", 2, values(None, 3), 0),
        (6, "a", 1, values(7), 1), (6, "b", 2, values(None, 3), 0),
    ]
    plain, fast = CounterState(), CounterState()
    for poll, client, connection, counters, node in history:
        fingerprint = hash((connection, *counters))
        expected = plain.observe(client, connection, counters, node, poll,
                                 fingerprint=fingerprint)
        (slot,) = fast.quiet([client], [fingerprint])
        if slot >= 0:
            rated, since = fast.touch(slot, node, poll)
            got = ([0] * WIDTH, False, rated, since)
        else:
            got = fast.observe(client, connection, counters, node, poll, fingerprint=fingerprint)
        assert repr(got) == repr(expected), (poll, client)  # repr: NaN == NaN
        assert fast.node_of(client) == plain.node_of(client)
    assert fast.sweep(7, [0]) == plain.sweep(7, [0]) == 1
    assert fast.nbytes() == plain.nbytes()
