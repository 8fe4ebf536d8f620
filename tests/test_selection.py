"""Selection as pure units: the rankings' scores, top-K, the cap's budget and late choice."""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
import pytest

from exporter.columns import Columns
from exporter.records import ClientRecord, record_type
from exporter.selection import (
    DEFAULT_KEY,
    DEFAULT_RANKING,
    RANKING_HELP,
    RANKINGS,
    CapBudget,
    Pattern,
    Scores,
    SelectionSettings,
    Selector,
    TopK,
    fullmatches,
    score_page,
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


def _scores(records: list[ClientRecord], rate_deltas: list[list[int] | None],
            per_second: float | None, reconnects: list[float] | None = None) -> list[Scores]:
    """Each record's scores (`score_page`); a row without increases has no rate."""
    deltas = np.array([d or [0] * len(COUNTER_FIELDS) for d in rate_deltas], np.int64)
    rated = np.array([d is not None for d in rate_deltas], np.bool_)
    scores = score_page(Columns(records), deltas.reshape(len(records), len(COUNTER_FIELDS)),
                        rated, per_second,
                        np.array(reconnects or [0.0] * len(records), np.float64))
    return [tuple(row) for row in scores.tolist()]


def _at(**named: float) -> Scores:
    """Scores with these rankings' values, 0 elsewhere."""
    assert set(named) <= set(RANKINGS)
    return tuple(float(named.get(name, 0.0)) for name in RANKINGS)


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
    scores = tuple(by_name[name] for name in RANKINGS)
    assert tuple(scores[i] for i in DEFAULT_KEY) == (0.1, 3.0, 0.2, 400.0)
    assert DEFAULT_RANKING == ("mqueue_fill", "drop_rate", "inflight_fill", "byte_rate")
    # The default ranking compares the key's values in order: a fuller queue beats any drop
    # rate, drops beat inflight fill, inflight fill beats traffic; reconnects do not count.
    top = TopK("default", k=6, hysteresis=0.0, keep_zero=True)
    clients = {
        "queue": _at(mqueue_fill=0.2),
        "queue-drops": _at(mqueue_fill=0.1, drop_rate=3.0),
        "queue-inflight": _at(mqueue_fill=0.1, drop_rate=2.0, inflight_fill=0.9),
        "inflight-traffic": _at(inflight_fill=0.5, byte_rate=1.0),
        "traffic": _at(byte_rate=10**9, reconnects=50.0),
        "fine": _at(reconnects=99.0),
    }
    for name in ("fine", "traffic", "queue-inflight", "inflight-traffic", "queue", "queue-drops"):
        top.offer(clients[name], _rec(name))
    assert _ids(top.finish()) == ["queue", "queue-drops", "queue-inflight", "inflight-traffic",
                                  "traffic", "fine"]


def test_each_score_reads_its_own_figures() -> None:
    # a poll 2 s after the last
    record = _rec("a", mqueue_len=25, mqueue_max=100, inflight=8, inflight_max=32)
    deltas = _increases(received_bytes=300, sent_bytes=100, sent_dropped=6, mqueue_dropped=2,
                        received_messages=1000)
    idle = _rec("b", mqueue_len=0, mqueue_max=100, inflight=0, inflight_max=32)
    busy, calm = _scores([record, idle], [deltas, _increases()], 0.5, [1.5, 0.0])
    assert dict(zip(RANKINGS, busy, strict=True)) == {
        # Queue-full drops are in sent_dropped too (real EMQX): max(6, 2) / 2 s, not (6 + 2) / 2.
        "mqueue_fill": 0.25, "inflight_fill": 0.25, "drop_rate": 3.0, "byte_rate": 200.0,
        "reconnects": 1.5}
    assert calm == ZERO
    # received drops add to the sent ones; v3 (no sent_dropped) has the queue's drops only
    both, v3 = _scores([_rec("c"), _rec("d")], [
        _increases(received_dropped=4, sent_dropped=1, mqueue_dropped=3),
        _increases(mqueue_dropped=8)], 1.0)
    assert (both[2], v3[2]) == (7.0, 8.0)


def test_rates_near_2_63_are_exact_sums() -> None:
    big = 2**63 - 1
    (scores,) = _scores([_rec("a")], [_increases(received_bytes=big, sent_bytes=big,
                                                  received_dropped=big, sent_dropped=big)], 1.0)
    assert (scores[2], scores[3]) == (float(2 * big), float(2 * big))  # not wrapped negative


def test_without_a_rate_or_a_bounded_capacity_the_score_is_zero() -> None:
    busy = _increases(received_bytes=300, sent_dropped=6)
    unlimited = _rec("a", mqueue_len=5, mqueue_max="infinity", inflight=3, inflight_max=0)
    bounded = _rec("b", mqueue_len=5, mqueue_max=10, inflight=None, inflight_max=32)
    first_poll = _scores([unlimited, bounded], [busy, busy], None)
    assert [s[:2] for s in first_poll] == [(0.0, 0.0), (0.5, 0.0)]
    assert first_poll[0] == ZERO
    without, with_rate = _scores([_rec("c"), _rec("d")], [None, busy], 1.0)
    assert without == ZERO and with_rate[2:4] == (6.0, 300.0)
    assert _scores([], [], 1.0) == []


def _reconnected(times: int) -> CounterState:
    state = CounterState()
    for poll in range(times + 1):
        state.observe("flappy", poll, [0] * len(COUNTER_FIELDS), node=0, poll=poll)
    return state


def test_the_reconnect_score_is_the_counter_states_whatever_the_rates() -> None:
    state = _reconnected(3)
    slots, _ = state.slots(["flappy", "calm"])
    # An idle client, without a rate, may have reconnected: its score is still there.
    flappy, calm = _scores([_rec("flappy"), _rec("calm")], [None, None], None,
                           state.reconnect_scores(slots).tolist())
    assert flappy == _at(reconnects=state.reconnect_score("flappy")) and flappy[4] == 3.0
    assert calm == ZERO


# --- top-K ------------------------------------------------------------------------------------

def test_top_k_keeps_the_worst_with_hysteresis() -> None:
    top = TopK("mqueue_fill", k=2, hysteresis=0.5)  # members stay within rank 3
    top.start()
    for name, score in (("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.0)):
        top.offer(_at(mqueue_fill=score), _rec(name))
    assert [r.clientid for r in top.finish()] == ["a", "b"]
    # c overtakes b, but b is still within the wider band: membership does not flap
    top.start()
    for name, score in (("a", 0.9), ("c", 0.85), ("b", 0.8)):
        top.offer(_at(mqueue_fill=score), _rec(name))
    assert {r.clientid for r in top.finish()} == {"a", "b"}
    # b falls out of the band: c takes the place
    top.start()
    for name, score in (("a", 0.9), ("c", 0.85), ("e", 0.84), ("f", 0.83), ("b", 0.1)):
        top.offer(_at(mqueue_fill=score), _rec(name))
    assert {r.clientid for r in top.finish()} == {"a", "c"}


def test_top_k_ignores_zero_scores_and_discards_failed_nodes() -> None:
    top = TopK("drop_rate", k=3, hysteresis=0.0)
    top.start()
    for name, score in (("a", 0.0), ("b", 2.0), ("c", 1.0)):
        top.offer(_at(drop_rate=score, mqueue_fill=5.0), _rec(name))  # its own score only
    top.discard(["b"])
    assert [r.clientid for r in top.finish()] == ["c"]


def test_top_k_takes_lower_scores_again_after_a_discard() -> None:
    top = TopK("byte_rate", k=1, hysteresis=0.0)
    top.start()
    top.offer(_at(byte_rate=9.0), _rec("gone"))
    top.offer(_at(byte_rate=2.0), _rec("lower"))  # full: below the lowest candidate, out
    top.discard(["gone"])
    top.offer(_at(byte_rate=2.0), _rec("stays"))  # room again: taken
    assert [r.clientid for r in top.finish()] == ["stays"]


def test_top_k_keeps_every_score_and_the_identity_of_its_members() -> None:
    top = TopK("mqueue_fill", k=1, hysteresis=0.0)
    top.start()
    member = _at(mqueue_fill=0.5, inflight_fill=0.25, drop_rate=3.0, byte_rate=4.0,
                 reconnects=7.0)
    top.offer(member, _rec("member", node="emqx@a", username="u"))
    top.offer(_at(mqueue_fill=0.1), _rec("out"))
    assert _ids(top.finish()) == ["member"]
    (ranked,) = top.last
    assert (ranked.clientid, ranked.node, ranked.username, ranked.scores) == (
        "member", "emqx@a", "u", member)
    assert ranked.score("reconnects") == 7.0
    top.start()  # a new poll forgets the candidates, not the members
    assert top.finish() == [] and top.members == set()


def test_a_page_keeps_former_members_within_the_band_as_single_offers_do() -> None:
    paged = TopK("mqueue_fill", k=2, hysteresis=1.0)  # members stay within rank 4
    single = TopK("mqueue_fill", k=2, hysteresis=1.0)
    polls = [
        {f"c{i}": i / 10 for i in range(1, 11)},
        {"n1": 0.9, "n2": 0.8, "n3": 0.7, "c10": 0.6, "c9": 0.1,
         **{f"n{i}": 0.01 * i for i in range(4, 9)}},
    ]
    for scores in polls:
        paged.start()
        single.start()
        records = [_rec(cid) for cid in scores]
        matrix = np.array([_at(mqueue_fill=v) for v in scores.values()])
        paged.offer_page(matrix, Columns(records), np.arange(len(records)))
        for record, row in zip(records, matrix.tolist(), strict=True):
            single.offer(tuple(row), record)
        assert _ids(paged.finish()) == _ids(single.finish())
    # c10 fell to rank 4, still within the band: it stays; c9 (rank 5) gives way to n1
    assert _ids(paged.finish()) == ["n1", "c10"]


def _tie(clientid: str) -> int:
    return zlib.crc32(clientid.encode())


def _reference(name: str, k: int, offered: dict[str, Scores], keep_zero: bool) -> list[str]:
    """The K worst of one poll by sorting everybody: key values in order, then crc32 of the id
    (higher first)."""
    key = DEFAULT_KEY if name not in RANKINGS else (RANKINGS.index(name),)
    ranked = sorted(offered, reverse=True,
                    key=lambda cid: (*(offered[cid][i] for i in key), _tie(cid)))
    if not keep_zero:
        ranked = [cid for cid in ranked if offered[cid][key[0]] > 0]
    return ranked[:k]


@pytest.mark.parametrize("name", [*RANKINGS, "default"])
def test_offering_pages_is_offering_every_client_one_by_one(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    keep_zero = name == "default"
    paged = TopK(name, k=7, hysteresis=0.5, keep_zero=keep_zero)
    single = TopK(name, k=7, hysteresis=0.5, keep_zero=keep_zero)
    for poll in range(3):
        paged.start()
        single.start()
        offered: dict[str, Scores] = {}
        for size in (0, 1, 40, 3, 200, 1, 57):
            records = [_rec(f"p{poll}-{size}-{i}" if i % 4 else f"c-{size}-{i}")
                       for i in range(size)]
            # few distinct values: many ties, broken by the client id's crc32
            scores = rng.choice([0.0, 0.25, 0.5, 1.0], (size, len(RANKINGS)))
            rows = np.flatnonzero(rng.random(size) < 0.8)  # some rows are not offered
            paged.offer_page(scores, Columns(records), rows)
            for i in rows.tolist():
                single.offer(tuple(scores[i].tolist()), records[i])
                offered[records[i].clientid] = tuple(scores[i].tolist())
        gone = [cid for cid in offered if cid.endswith("-3")]  # a failed node's clients
        paged.discard(gone)
        single.discard(gone)
        for cid in gone:
            del offered[cid]
        got, one_by_one = _ids(paged.finish()), _ids(single.finish())
        assert got == one_by_one
        assert paged.last == single.last
        if poll == 0:  # no members yet: exactly the K worst
            assert got == _reference(name, 7, offered, keep_zero)
        assert len(got) == 7


# --- the cap's budget -------------------------------------------------------------------------

def test_admitting_many_is_admitting_each_in_turn() -> None:
    rng = np.random.default_rng(3)
    for max_clients, reserved in ((0, 0), (5, 2), (2, 10), (40, 7), (13, 13)):
        many, each = CapBudget(max_clients, reserved), CapBudget(max_clients, reserved)
        room = (many.allow_left, many.overflow_left)
        for _ in range(30):
            count = int(rng.integers(0, 9))
            if rng.random() < 0.2:  # a failed node gives back some of what was taken
                streamed = int(rng.integers(0, room[0] - many.allow_left + 1))
                waiting = int(rng.integers(0, room[1] - many.overflow_left + 1))
                many.refund(streamed, waiting)
                each.refund(streamed, waiting)
            decisions = [each.admit() for _ in range(count)]
            assert many.admit_many(count) == (decisions.count("stream"),
                                               decisions.count("overflow"))
            assert decisions == sorted(decisions, key=["stream", "overflow", "full"].index)
            assert (many.allow_left, many.overflow_left, many.full) == (
                each.allow_left, each.overflow_left, each.full)
    nothing = CapBudget(0, 0)
    assert nothing.admit_many(0) == (0, 0) and not nothing.full


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


def test_a_page_is_allowed_as_each_of_its_records() -> None:
    allow = (Pattern("clientid", re.compile("sensor-.*")), Pattern("username", re.compile("ops")))
    deny = (Pattern("clientid", re.compile(".*-test")), Pattern("username", re.compile("")))
    selector = Selector(SelectionSettings(allow=allow, deny=deny), per_client_series=1)
    records = [_rec("sensor-1", username="x"), _rec("sensor-1-test", username="x"),
               _rec("gw", username="ops"), _rec("gw-test", username="ops"),
               _rec("sensor-2", username=None), _rec("gw", username="y"), _rec("sensor-3")]
    page = Columns(records)
    for pattern in (*allow, *deny):
        assert pattern.matches_page(page).tolist() == list(map(pattern.matches, records))
    expected = [any(p.matches(r) for p in allow) and not any(p.matches(r) for p in deny)
                for r in records]
    assert selector.allowed(page).tolist() == expected == [
        True, False, True, False, False, False, False]
    everyone = Selector(SelectionSettings(), per_client_series=1)
    assert everyone.allowed(page).tolist() == [True] * len(records)
    assert selector.allowed(Columns([])).tolist() == []
