"""Selection as pure units: the rankings' scores, top-K, the cap's budget and late choice."""

from __future__ import annotations

import re
from typing import Any

import pytest

from exporter.records import ClientRecord, record_type
from exporter.selection import (
    RANKING_HELP,
    RANKINGS,
    CapBudget,
    Scorer,
    Scores,
    TopK,
    default_key,
    fullmatches,
)
from exporter.state import COUNTER_FIELDS, CounterState

ZERO = (0.0,) * len(RANKINGS)
V5 = record_type("v5")


def _rec(clientid: str, **fields: Any) -> ClientRecord:
    return V5(clientid=clientid, **fields)


def _recs(*clientids: str) -> list[ClientRecord]:
    return [_rec(cid) for cid in clientids]


def _ids(records: list[ClientRecord]) -> list[str]:
    return [r.clientid for r in records]


def _scores(scorer: Scorer, records: list[ClientRecord],
            rate_deltas: list[list[int] | None]) -> list[Scores]:
    return list(zip(*scorer.columns(records, rate_deltas), strict=True))


def _increases(**named: int) -> list[int]:
    """Counter increases in `COUNTER_FIELDS` order, by field name."""
    assert set(named) <= set(COUNTER_FIELDS)
    return [named.get(name, 0) for name in COUNTER_FIELDS]


# --- rankings ---------------------------------------------------------------------------------

def test_rankings_are_named_once_and_documented() -> None:
    assert len(set(RANKINGS)) == len(RANKINGS)
    assert all(RANKING_HELP[name] for name in RANKINGS)


def test_the_default_key_is_queue_fill_then_drops_then_inflight_fill_then_traffic() -> None:
    by_name = {"mqueue_fill": 0.1, "inflight_fill": 0.2, "drop_rate": 3.0, "byte_rate": 400.0,
               "reconnects": 5.0}
    assert default_key(tuple(by_name[name] for name in RANKINGS)) == (0.1, 3.0, 0.2, 400.0)


def test_each_score_reads_its_own_figures() -> None:
    state = CounterState()
    scorer = Scorer(RANKINGS, state, per_second=0.5)  # a poll 2 s after the last
    record = _rec("a", mqueue_len=25, mqueue_max=100, inflight=8, inflight_max=32)
    deltas = _increases(received_bytes=300, sent_bytes=100, sent_dropped=6, mqueue_dropped=2,
                        received_messages=1000)
    idle = _rec("b", mqueue_len=0, mqueue_max=100, inflight=0, inflight_max=32)
    busy, calm = _scores(scorer, [record, idle], [deltas, _increases()])
    assert dict(zip(RANKINGS, busy, strict=True)) == {
        # Queue-full drops are in sent_dropped too (real EMQX): max(6, 2) / 2 s, not (6 + 2) / 2.
        "mqueue_fill": 0.25, "inflight_fill": 0.25, "drop_rate": 3.0, "byte_rate": 200.0,
        "reconnects": 0.0}
    assert calm == ZERO


def test_without_a_rate_or_a_bounded_capacity_the_score_is_zero() -> None:
    first_poll = Scorer(RANKINGS, CounterState(), per_second=None)
    busy = _increases(received_bytes=300, sent_dropped=6)
    unlimited = _rec("a", mqueue_len=5, mqueue_max="infinity", inflight=3, inflight_max=0)
    bounded = _rec("b", mqueue_len=5, mqueue_max=10, inflight=None, inflight_max=32)
    fills = [s[:2] for s in _scores(first_poll, [unlimited, bounded], [busy, busy])]
    assert fills == [(0.0, 0.0), (0.5, 0.0)]
    assert all(s == ZERO for s in _scores(first_poll, [unlimited], [busy]))
    no_rate_yet = Scorer(RANKINGS, CounterState(), per_second=1.0)
    without, with_rate = _scores(no_rate_yet, [_rec("c"), _rec("d")], [None, busy])
    assert without == ZERO and with_rate[2:4] == (6.0, 300.0)


def _reconnected(times: int) -> CounterState:
    state = CounterState()
    for poll in range(times + 1):
        state.observe("flappy", poll, [0] * len(COUNTER_FIELDS), node=0, poll=poll)
    return state


def test_a_score_from_the_counter_state_is_deferred_unless_a_top_k_ranks_by_it() -> None:
    state = _reconnected(3)
    index = RANKINGS.index("reconnects")
    flappy = _rec("flappy")
    shown_only = Scorer(("mqueue_fill",), state, per_second=1.0)
    assert shown_only.deferred == (index,) and shown_only.idle_is_zero
    (deferred,) = _scores(shown_only, [flappy], [None])
    assert deferred[index] == 0.0
    completed = shown_only.complete(flappy, deferred)
    assert completed[index] == state.reconnect_score("flappy") > 0
    ranked = Scorer(("reconnects",), state, per_second=1.0)
    # An idle client may have reconnected: it cannot be skipped as scoring 0.
    assert ranked.deferred == () and not ranked.idle_is_zero
    assert _scores(ranked, [flappy], [None]) == [completed]


# --- top-K ------------------------------------------------------------------------------------

def test_top_k_keeps_the_worst_with_hysteresis() -> None:
    top = TopK("mqueue_fill", k=2, hysteresis=0.5)  # members stay within rank 3
    top.start()
    for name, score in (("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.0)):
        top.offer(score, ZERO, _rec(name))
    assert [r.clientid for r in top.finish()] == ["a", "b"]
    # c overtakes b, but b is still within the wider band: membership does not flap
    top.start()
    for name, score in (("a", 0.9), ("c", 0.85), ("b", 0.8)):
        top.offer(score, ZERO, _rec(name))
    assert {r.clientid for r in top.finish()} == {"a", "b"}
    # b falls out of the band: c takes the place
    top.start()
    for name, score in (("a", 0.9), ("c", 0.85), ("e", 0.84), ("f", 0.83), ("b", 0.1)):
        top.offer(score, ZERO, _rec(name))
    assert {r.clientid for r in top.finish()} == {"a", "c"}


def test_top_k_ignores_zero_scores_and_discards_failed_nodes() -> None:
    top = TopK("drop_rate", k=3, hysteresis=0.0)
    top.start()
    for name, score in (("a", 0.0), ("b", 2.0), ("c", 1.0)):
        top.offer(score, ZERO, _rec(name))
    top.discard(["b"])
    assert [r.clientid for r in top.finish()] == ["c"]


def test_top_k_takes_lower_scores_again_after_a_discard() -> None:
    top = TopK("byte_rate", k=1, hysteresis=0.0)
    top.start()
    top.offer(9.0, ZERO, _rec("gone"))
    assert top.floor == 9.0  # full: lower scores need not be offered
    top.discard(["gone"])
    assert top.floor == 0.0
    top.offer(2.0, ZERO, _rec("stays"))
    assert [r.clientid for r in top.finish()] == ["stays"]


def test_top_k_completes_the_scores_of_the_members_it_keeps() -> None:
    top = TopK("mqueue_fill", k=1, hysteresis=0.0)
    top.start()
    top.offer(0.5, ZERO, _rec("member"))
    top.offer(0.1, ZERO, _rec("out"))
    completed: list[str] = []

    def complete(record: ClientRecord, scores: tuple[float, ...]) -> tuple[float, ...]:
        completed.append(record.clientid)
        return (*scores[:-1], 7.0)

    top.finish(complete)
    assert completed == ["member"]
    assert [m.score("reconnects") for m in top.last] == [7.0]


# --- the cap's budget -------------------------------------------------------------------------

def test_allowed_clients_stream_then_wait_in_the_reserve_then_find_the_cap_full() -> None:
    budget = CapBudget(max_clients=5, reserved=2)  # e.g. one watched client and a top-1
    decisions = [budget.admit() for _ in range(7)]
    assert decisions == ["stream"] * 3 + ["overflow"] * 2 + ["full"] * 2
    assert budget.full


def test_a_reservation_larger_than_the_cap_streams_nothing() -> None:
    budget = CapBudget(max_clients=2, reserved=10)
    assert [budget.admit() for _ in range(3)] == ["overflow", "overflow", "full"]


def test_a_failed_node_gives_its_room_back() -> None:
    budget = CapBudget(max_clients=4, reserved=1)
    assert [budget.admit() for _ in range(5)] == ["stream"] * 3 + ["overflow", "full"]
    budget.refund(streamed=2, overflow=1)  # that node's walk failed: its clients are dropped
    assert [budget.admit() for _ in range(4)] == ["stream"] * 2 + ["overflow", "full"]
    assert budget.full  # the cap was reached in this poll, refund or not


def test_watched_clients_come_before_top_k_members_in_the_room_left() -> None:
    budget = CapBudget(max_clients=3, reserved=3)
    late = budget.choose({"streamed"}, _recs("w1", "w2", "w3"), [_recs("m1")], [])
    assert _ids(late) == ["w1", "w2"]  # two places left: the third watched and m1 miss out
    assert budget.dropped == 2


def test_members_count_once_and_not_again_when_they_streamed() -> None:
    budget = CapBudget(max_clients=4, reserved=3)
    members = [_recs("both", "streamed-too"), _recs("both", "other")]
    late = budget.choose({"streamed-too"}, _recs("w"), members, [])
    assert _ids(late) == ["w", "both", "other"] and budget.dropped == 0


def test_the_overflow_fills_what_watch_and_top_k_leave() -> None:
    budget = CapBudget(max_clients=5, reserved=2)
    overflow = _recs("o1", "o2", "o3", "o4")
    late = budget.choose({"s"}, _recs("w"), [_recs("m", "o1")], overflow)
    # room 4: w, then m and o1 as members, then one place for the waiting clients
    assert _ids(late) == ["w", "m", "o1", "o2"]
    assert budget.dropped == 2  # o3 and o4


def test_room_never_goes_below_zero_and_everything_left_over_is_counted() -> None:
    budget = CapBudget(max_clients=2, reserved=0)
    budget.leave_out(3)  # past the cap during the walk
    late = budget.choose({"a", "b", "c"}, _recs("w"), [_recs("m")], _recs("o"))
    assert late == [] and budget.dropped == 3 + 3


def test_the_streamed_and_the_chosen_never_exceed_the_cap() -> None:
    watched, members = _recs("w1", "w2"), _recs("m1", "m2", "m3")
    max_clients = 10
    budget = CapBudget(max_clients, reserved=len(watched) + len(members))
    streamed: set[str] = set()
    overflow: list[ClientRecord] = []
    for i in range(30):
        decision = budget.admit()
        if decision == "stream":
            streamed.add(f"a{i}")
        elif decision == "overflow":
            overflow.append(_rec(f"a{i}"))
        else:
            budget.leave_out()
    late = budget.choose(streamed, watched, [members], overflow)
    assert len(streamed) + len(late) == max_clients
    assert _ids(late) == _ids(watched + members)  # the reserve was theirs, none for overflow
    assert budget.dropped == 30 + 5 - max_clients  # everyone who qualified, minus the rendered


@pytest.mark.parametrize("pattern", [
    re.compile("sensor-.*"), re.compile(".*"), re.compile("a/b:c@d e_f-.*"),
    re.compile("sensor-.*", re.IGNORECASE), re.compile("sensor-.+"), re.compile("s.nsor-.*"),
    re.compile("sensor-[0-9]*"), re.compile("sensor"),
])
def test_fullmatches_is_the_regex_full_match(pattern: re.Pattern[str]) -> None:
    values = ["sensor-1", "sensor-", "sensor", "Sensor-1", "xsensor-1", "sensor-1\n",
              "sensor-\nx", "", "\n", "a/b:c@d e_f-", "a/b:c@d e_f-x", "sensör-1"]
    assert fullmatches(pattern, values) == [pattern.fullmatch(v) is not None for v in values]
