"""Aggregate families: bounded groups, gauges of the current poll, and counters that only grow.

Two levels: the aggregator's own interface (classes, gauges, drop split, seeds, rendering), and
the promises of the aggregate families over several polls (through a pipeline, as a poll feeds
it): a reconnect never lowers a counter, a client that vanishes keeps its part of the total.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from emqx_simulator import SimSettings
from emqx_simulator.settings import ApiGeneration
from exporter import contract as c
from exporter.aggregate import (
    COUNTER_SERIES,
    GAUGES,
    AggregateSettings,
    Aggregator,
    Classifier,
    ClassRule,
    GroupKey,
    group_sums,
)
from exporter.columns import Columns
from exporter.config import PerClientSettings
from exporter.pipeline import Pipeline
from exporter.records import ClientRecord, record_type
from exporter.render import RenderedBatch
from exporter.selection import SelectionSettings
from exporter.snapshot import compose
from exporter.state import COUNTER_FIELDS
from exporter.timeparse import TimeParser
from tests.exposition import samples_text
from tests.harness import rig

V5 = record_type("v5")
A, B = "emqx@a", "emqx@b"
Labels = tuple[tuple[str, str], ...]


def rec(clientid: str, **fields: Any) -> ClientRecord:
    return V5(clientid=clientid, **fields)


def rule(name: str, field: str, pattern: str) -> ClassRule:
    return ClassRule(field, re.compile(pattern), name)


def exposed(batch: RenderedBatch | dict[c.Family, list[bytes]]) -> dict[str, dict[Labels, float]]:
    """family name → label set → value, parsed by prometheus_client."""
    rendered = {f: (v if isinstance(v, list) else [v]) for f, v in batch.items()}
    out: dict[str, dict[Labels, float]] = {}
    for name, labels, v in samples_text(compose([rendered], 0.0).text()):
        out.setdefault(name, {})[labels] = v
    return out


def deltas(**increase: int) -> list[int]:
    return [increase.get(name, 0) for name in COUNTER_FIELDS]


def gauges(agg: Aggregator, records: list[ClientRecord]) -> dict[GroupKey, dict[str, int]]:
    """A page's gauges by group key and name."""
    found = agg.gauge(agg.groups(Columns(records)), Columns(records))
    return {agg.keys_by_id[g]: dict(zip(GAUGES, sums, strict=True)) for g, sums in found.items()}


def count(agg: Aggregator, records: list[ClientRecord], increases: list[list[int]],
          connects: list[bool]) -> None:
    """Count a page: its records' groups, a row of increases and a connect flag per record."""
    rows = np.array(increases, np.int64).reshape(-1, len(COUNTER_FIELDS))
    agg.note_reported(COUNTER_FIELDS)  # as a version that sends every figure
    agg.count(agg.groups(Columns(records)), rows, np.array(connects, np.bool_))


def totals(agg: Aggregator, key: GroupKey) -> dict[str, int]:
    return dict(zip(COUNTER_SERIES, agg.counters[key], strict=True))


# --- the aggregator's own interface -----------------------------------------------------------

def test_a_client_gets_the_first_class_whose_rule_matches_else_other() -> None:
    classify = Classifier([rule("sensors", "clientid", "sensor-.*"),
                           rule("admins", "username", "admin|root"),
                           rule("everything", "clientid", ".*")])
    records = [rec("sensor-1", username="admin"), rec("gw-1", username="root"),
               rec("gw-2", username=None), rec("x\nsensor-2")]
    assert classify.page(records) == ["sensors", "admins", "everything", "other"]
    assert Classifier([]).page(records) == ["other"] * 4
    assert Classifier([], default="rest").page([rec("a")]) == ["rest"]


def test_a_missing_username_is_matched_as_empty() -> None:
    classify = Classifier([rule("anonymous", "username", "")])
    assert classify.page([rec("a"), rec("b", username="bob")]) == ["anonymous", "other"]


def test_group_keys_are_the_raw_values_of_the_configured_labels() -> None:
    classify = Classifier([rule("sensors", "clientid", "sensor-.*")])
    labels = ("node", "class", "listener", "proto_name")
    agg = Aggregator(AggregateSettings(labels=labels), classify)
    records = [rec("sensor-1", node=A, listener="tcp:default", proto_name="MQTT"),
               rec("gw", node=B)]
    assert agg.keys(records) == [(A, "sensors", "tcp:default", "MQTT"), (B, "other", None, None)]
    assert Aggregator(AggregateSettings(labels=()), classify).keys(records) == [(), ()]


def test_gauges_sum_one_poll_and_count_saturation_against_known_capacities() -> None:
    agg = Aggregator(AggregateSettings(saturation=0.8), Classifier([]))
    page = [
        rec("full", node=A, connected=True, mqueue_len=80, mqueue_max=100, inflight=32,
            inflight_max=32, subscriptions=2),
        rec("more", node=B, connected=True, subscriptions=3),  # another group of the page
        rec("below", node=A, connected=True, mqueue_len=79, mqueue_max=100, inflight=1,
            inflight_max=32),
        rec("offline", node=A, connected=False, mqueue_len=5, mqueue_max=0),  # 0: unlimited
        rec("v3", node=A, mqueue_len=None, inflight=None, subscriptions=None),  # no flag: online
    ]
    assert gauges(agg, page) == {
        (A,): {"online": 3, "sessions": 4, "mqueue": 164, "inflight": 33, "subscriptions": 2,
               "mqueue_saturated": 1, "inflight_saturated": 1},
        (B,): {"online": 1, "sessions": 1, "mqueue": 0, "inflight": 0, "subscriptions": 3,
               "mqueue_saturated": 0, "inflight_saturated": 0}}
    # gauges are one page's: the next page starts from nothing (the pipeline adds them up)
    assert gauges(agg, page[1:2]) == {(B,): gauges(agg, page)[(B,)]}
    assert agg.keys_by_id == [(A,), (B,)]  # group numbers stay as first met


def test_an_unlimited_or_unknown_capacity_is_never_saturated() -> None:
    agg = Aggregator(AggregateSettings(saturation=0.5), Classifier([]))
    found = gauges(agg, [rec("a", mqueue_len=10**6, mqueue_max=None),
                         rec("b", mqueue_len=10**6, mqueue_max=0),
                         rec("c", mqueue_len=10**6, mqueue_max="infinity"),
                         rec("d", inflight=10**6)])[(None,)]
    assert (found["mqueue_saturated"], found["inflight_saturated"]) == (0, 0)
    assert (found["mqueue"], found["inflight"]) == (3 * 10**6, 10**6)


def test_gauges_of_figures_near_2_63_are_exact() -> None:
    big = 2**63 - 1
    agg = Aggregator(AggregateSettings(), Classifier([]))
    found = gauges(agg, [rec("a", mqueue_len=big, subscriptions=big),
                         rec("b", mqueue_len=big, subscriptions=1)])[(None,)]
    assert (found["mqueue"], found["subscriptions"]) == (2 * big, big + 1)


def test_counters_split_drops_by_reason_and_the_rest_is_other() -> None:
    agg = Aggregator(AggregateSettings(), Classifier([]))
    count(agg, [rec("x", node=A)], [deltas(
        received_bytes=10, sent_dropped=10, sent_dropped_expired=2, sent_dropped_queue_full=3,
        sent_dropped_too_large=1, received_dropped=4, received_dropped_await_pubrel_timeout=1,
        mqueue_dropped=6)], [True])
    # A reason figure larger than its total never makes "other" negative; a reason without a
    # total (the version does not report the total) counts nothing.
    count(agg, [rec("x", node=A), rec("y", node=A)],
          [deltas(sent_dropped=1, sent_dropped_expired=3),
           deltas(sent_dropped_queue_full=7, received_dropped_await_pubrel_timeout=2)],
          [False, False])
    out = exposed(agg.render({}))
    dropped = {dict(k)["direction"] + "/" + dict(k)["reason"]: v
               for k, v in out["emqx_clients_dropped_messages_total"].items()}
    assert dropped == {"sent/expired": 5, "sent/queue_full": 3, "sent/too_large": 1,
                       "sent/other": 4, "received/await_pubrel_timeout": 1,
                       "received/other": 3}
    assert out["emqx_clients_received_bytes_total"] == {(("node", A),): 10}
    assert out["emqx_clients_mqueue_dropped_messages_total"] == {(("node", A),): 6}
    assert out["emqx_clients_connects_total"] == {(("node", A),): 1}


def test_a_group_first_seen_idle_is_shown_with_zero_counters() -> None:
    agg = Aggregator(AggregateSettings(), Classifier([]))
    count(agg, [rec("idle", node=B)], [deltas()], [False])
    out = exposed(agg.render({}))
    assert out["emqx_clients_sent_bytes_total"] == {(("node", B),): 0}
    assert out["emqx_clients_connects_total"] == {(("node", B),): 0}


def test_rendering_orders_groups_and_puts_constant_labels_first() -> None:
    agg = Aggregator(AggregateSettings(labels=("node", "class"), const_labels=(
        ("cluster", "prod"),)), Classifier([]))
    row = dict.fromkeys(GAUGES, 0)
    by_key: dict[GroupKey, list[int]] = {
        (B, "other"): [{**row, "online": 1, "sessions": 1}[g] for g in GAUGES],
        (A, "other"): [{**row, "online": 2, "sessions": 3}[g] for g in GAUGES]}
    text = compose([{f: [v] for f, v in agg.render(by_key).items()}], 0.0).text()
    lines = [line for line in text.splitlines() if line.startswith("emqx_clients_online")]
    assert lines == ['emqx_clients_online{cluster="prod",node="emqx@a",class="other"} 2',
                     'emqx_clients_online{cluster="prod",node="emqx@b",class="other"} 1']
    assert 'emqx_clients_sessions{cluster="prod",node="emqx@a",class="other"} 3' in text
    assert "emqx_clients_received_bytes_total" not in text  # no counters before any count
    count(agg, [rec("b", node=B), rec("a", node=A)],
          [deltas(received_bytes=1), deltas(received_bytes=2)], [True, True])
    text = compose([{f: [v] for f, v in agg.render({}).items()}], 0.0).text()
    lines = [line for line in text.splitlines()
             if line.startswith("emqx_clients_received_bytes_total")]
    assert lines == [
        'emqx_clients_received_bytes_total{cluster="prod",node="emqx@a",class="other"} 2',
        'emqx_clients_received_bytes_total{cluster="prod",node="emqx@b",class="other"} 1']


def test_seeds_are_each_node_with_each_class_when_labels_allow() -> None:
    classify = Classifier([rule("sensors", "clientid", "s.*")])
    both = Aggregator(AggregateSettings(labels=("class", "node")), classify)
    assert both.seeds([A, B]) == [("sensors", A), ("other", A), ("sensors", B), ("other", B)]
    assert Aggregator(AggregateSettings(), classify).seeds([A]) == [(A,)]
    # listener values are not known in advance, and without `node` nothing is per node
    assert Aggregator(AggregateSettings(labels=("node", "listener")), classify).seeds([A]) == []
    assert Aggregator(AggregateSettings(labels=("class",)), classify).seeds([A]) == []


def test_node_totals_leave_out_what_the_version_does_not_report() -> None:
    agg = Aggregator(AggregateSettings(), Classifier([]))
    out = exposed(agg.render_node_totals({B: (3, None), A: (5, None)}))
    assert out == {"emqx_clients_online": {(("node", A),): 5, (("node", B),): 3}}
    assert agg.render_node_totals({A: (None, None)}) == {}


def test_a_page_counts_as_its_rows_counted_one_at_a_time() -> None:
    classify = Classifier([rule("sensors", "clientid", "s-.*")])
    settings = AggregateSettings(labels=("node", "class"))
    records = [rec(f"{'s-' if i % 3 else 'g-'}{i}", node=(A, B)[i % 2]) for i in range(12)]
    rng = np.random.default_rng(7)
    increases = rng.integers(0, 50, (len(records), len(COUNTER_FIELDS))).tolist()
    increases[4] = deltas(sent_dropped=0, sent_dropped_expired=9)  # a reason without a total
    connects = (rng.random(len(records)) < 0.5).tolist()
    paged, single = Aggregator(settings, classify), Aggregator(settings, classify)
    count(paged, records, increases, connects)
    for record, row, connect in zip(records, increases, connects, strict=True):
        count(single, [record], [row], [connect])
    assert paged.counters == single.counters and len(paged.counters) == 4
    assert totals(paged, (A, "sensors"))["connects"] == sum(
        c for r, c in zip(records, connects, strict=True)
        if r.node == A and r.clientid.startswith("s-"))


def test_group_sums_are_exact_past_2_63() -> None:
    big = 2**63 - 1
    sums = group_sums(np.array([1, 0, 1, 1]),
                      np.array([[big, 1], [5, big], [big, 2], [big, 3]], np.int64))
    assert sums == {0: [5, big], 1: [3 * big, 6]}
    assert all(type(v) is int for row in sums.values() for v in row)
    # the largest values whose sum still fits int64, and the smallest that do not
    half = 2**62
    assert group_sums(np.array([0, 0]), np.array([[half - 1], [half]], np.int64)) == {
        0: [2**63 - 1]}
    assert group_sums(np.array([0, 0]), np.array([[half], [half]], np.int64)) == {0: [2**63]}
    assert group_sums(np.array([], np.int64), np.zeros((0, 3), np.int64)) == {}


def test_lasting_counters_near_2_63_stay_exact() -> None:
    big = 2**63 - 1
    agg = Aggregator(AggregateSettings(), Classifier([]))
    records = [rec("x", node=A), rec("y", node=A)]
    huge = deltas(received_bytes=big, sent_bytes=big, mqueue_dropped=big, sent_dropped=big,
                  sent_dropped_expired=2**62 + 5, sent_dropped_queue_full=2**62,
                  received_dropped=big, received_dropped_await_pubrel_timeout=2**61)
    count(agg, records, [huge, huge], [True, False])
    count(agg, records[:1], [deltas(received_bytes=big, sent_dropped=big,
                                    sent_dropped_too_large=1)], [True])
    got = totals(agg, (A,))
    assert got == {
        "received_bytes": 3 * big, "sent_bytes": 2 * big, "received_messages": 0,
        "sent_messages": 0, "mqueue_dropped": 2 * big,
        "received:await_pubrel_timeout": 2 * 2**61, "received:other": 2 * (big - 2**61),
        "sent:expired": 2 * (2**62 + 5), "sent:queue_full": 2 * 2**62, "sent:too_large": 1,
        # the named reasons exceed the total (past 2**63 together): "other" is 0, not wrapped
        "sent:other": big - 1, "connects": 2}
    assert all(type(v) is int for v in agg.counters[(A,)])
    # named reasons far above a small total: their int64 sum would wrap to -2
    count(agg, [rec("z", node=B)], [deltas(sent_dropped=5, sent_dropped_expired=big,
                                           sent_dropped_queue_full=big)], [False])
    got = totals(agg, (B,))
    assert (got["sent:expired"], got["sent:queue_full"], got["sent:other"]) == (big, big, 0)


# --- the promises over polls, through the pipeline a poll feeds -------------------------------

class Polls:
    """Walks of one node, each poll listing the given clients, 60 s apart."""

    def __init__(self, **aggregate: Any) -> None:
        self.pipeline = Pipeline(PerClientSettings(), AggregateSettings(**aggregate),
                                 Classifier([]), TimeParser(ZoneInfo("UTC")),
                                 selection=SelectionSettings())
        self.now = 1_767_225_600.0

    def poll(self, *records: ClientRecord, nodes: tuple[str, ...] = (A,)) -> dict[
            str, dict[Labels, float]]:
        self.now += 60
        run = self.pipeline.start_walk(self.now)
        for node in nodes:
            run.add_page(node, [r for r in records if r.node == node])
        return exposed(run.finish(list(nodes)).rendered)


def client(clientid: str, connection: int, received: int, node: str = A,
           **fields: Any) -> ClientRecord:
    return rec(clientid, node=node, connected=True, received_bytes=received,
               connected_at=f"2026-01-01T00:00:{connection:02d}Z", **fields)


def total(out: dict[str, dict[Labels, float]], name: str, node: str = A) -> float:
    return out[name][(("node", node),)]


BYTES = "emqx_clients_received_bytes_total"


def test_counters_add_increases_and_a_reconnect_does_not_lower_them() -> None:
    polls = Polls()
    first = polls.poll(client("x", 1, 100), client("y", 1, 50))
    assert total(first, BYTES) == 150
    assert total(polls.poll(client("x", 1, 130), client("y", 1, 50)), BYTES) == 180
    # x reconnects: its counter restarts at 12; the 12 are new traffic, the 130 stay counted
    after = polls.poll(client("x", 2, 12), client("y", 1, 60))
    assert total(after, BYTES) == 180 + 12 + 10
    assert total(after, "emqx_clients_connects_total") == 1  # x's new connection


def test_a_counter_going_down_on_one_connection_never_lowers_the_total() -> None:
    polls = Polls()
    polls.poll(client("x", 1, 100))
    assert total(polls.poll(client("x", 1, 40)), BYTES) == 140  # taken as a restart
    assert total(polls.poll(client("x", 1, 45)), BYTES) == 145


def test_a_client_that_vanishes_keeps_its_part_of_the_total() -> None:
    polls = Polls()
    polls.poll(client("x", 1, 100), client("y", 1, 50))
    gone = polls.poll(client("y", 1, 70))
    assert total(gone, BYTES) == 170
    assert total(gone, "emqx_clients_sessions") == 1  # gauges are this poll's only
    assert total(polls.poll(), BYTES) == 170          # everybody gone: the total stays
    # x comes back with a new connection: counted from zero again, on top of the total
    assert total(polls.poll(client("x", 2, 5)), BYTES) == 175


def test_a_client_moving_to_another_node_is_counted_once() -> None:
    polls = Polls()
    polls.poll(client("x", 1, 100), nodes=(A, B))
    moved = polls.poll(client("x", 2, 7, node=B), nodes=(A, B))
    assert total(moved, BYTES, A) == 100 and total(moved, BYTES, B) == 7
    assert total(moved, "emqx_clients_online", A) == 0  # seeded: shown as 0, not vanished
    assert total(moved, "emqx_clients_online", B) == 1


def test_connects_count_connections_made_between_polls() -> None:
    polls = Polls()
    # The first poll cannot tell when anybody connected: nothing is counted as new.
    assert total(polls.poll(client("x", 1, 0)), "emqx_clients_connects_total") == 0
    out = polls.poll(client("x", 1, 0), client("y", 1, 0))  # y connected since
    assert total(out, "emqx_clients_connects_total") == 1
    out = polls.poll(client("x", 2, 0), client("y", 1, 0))  # x reconnected
    assert total(out, "emqx_clients_connects_total") == 2


def test_a_row_without_its_connection_time_never_counts_traffic_twice() -> None:
    polls = Polls()
    polls.poll(client("x", 1, 100))
    unknown = polls.poll(V5(clientid="x", node=A, connected=True, received_bytes=150))
    assert 100 <= total(unknown, BYTES) <= 150
    # One connection all along, whose counter reached 160: the total cannot be more.
    assert 100 <= total(polls.poll(client("x", 1, 160)), BYTES) <= 160


def test_group_sums_equal_python_sums_at_every_size_of_value() -> None:
    # Small sums take bincount (exact in float64 below 2**53), larger ones integer or Python
    # sums: each way must give what Python's own sum of the rows gives, to the unit.
    rng = np.random.default_rng(21)
    for largest in (3, 2**20, 2**52 - 1, 2**53 + 1, 2**61):
        groups = rng.integers(0, 5, 400)
        matrix = rng.integers(0, largest, (400, 3), dtype=np.int64)
        matrix[0, 0] = largest  # the boundary itself sits in the page
        want: dict[int, list[int]] = {}
        for group, row in zip(groups.tolist(), matrix.tolist(), strict=True):
            sums = want.setdefault(group, [0, 0, 0])
            want[group] = [a + b for a, b in zip(sums, row, strict=True)]
        assert group_sums(groups, matrix) == want, largest
    # one unit above 2**53 in a float64 sum would be lost: exact here
    assert group_sums(np.array([0, 0]), np.array([[2**53 - 1], [2]], np.int64)) == {
        0: [2**53 + 1]}


def test_a_counter_no_client_reports_is_absent_not_zero() -> None:
    # DESIGN.md §5: a figure the version does not send is absent. Here the clients report
    # bytes and the sent drops with their reasons but nothing received-side and no queue drops.
    agg = Aggregator(AggregateSettings(), Classifier([]))
    agg.note_reported(["received_bytes", "sent_dropped", "sent_dropped_expired",
                       "sent_dropped_queue_full", "sent_dropped_too_large"])
    rows = np.array([deltas(received_bytes=5, sent_dropped=2, sent_dropped_expired=1)])
    agg.count(agg.groups(Columns([rec("x", node=A)])), rows, np.array([True]))
    out = exposed(agg.render({}))
    assert out["emqx_clients_received_bytes_total"] == {(("node", A),): 5}
    assert out["emqx_clients_connects_total"] == {(("node", A),): 1}  # always known
    for absent in ("emqx_clients_sent_bytes_total", "emqx_clients_mqueue_dropped_messages_total",
                   "emqx_clients_received_messages_total"):
        assert absent not in out
    dropped = {dict(k)["direction"] + "/" + dict(k)["reason"]: v
               for k, v in out["emqx_clients_dropped_messages_total"].items()}
    assert dropped == {"sent/expired": 1, "sent/queue_full": 0, "sent/too_large": 0,
                       "sent/other": 1}


@pytest.mark.parametrize(("api", "version", "reasons"), [
    ("v3", "3.2.8", set()),
    ("v4", "4.3.0", set()),  # no drop figures before 4.4.0
    ("v4", "4.4.19", {"sent/expired", "sent/queue_full", "sent/too_large", "sent/other",
                      "received/other"}),
    ("v5", "5.8.9", {"sent/expired", "sent/queue_full", "sent/too_large", "sent/other",
                     "received/await_pubrel_timeout", "received/other"}),
])
async def test_drop_series_are_those_the_version_reports(api: ApiGeneration, version: str,
                                                         reasons: set[str]) -> None:
    async with rig(SimSettings(api=api, version=version, nodes=2, clients=300)) as r:
        await r.poll()
        samples = await r.scrape()
    found = {dict(labels)["direction"] + "/" + dict(labels)["reason"]
             for name, labels, _ in samples if name == "emqx_clients_dropped_messages_total"}
    assert found == reasons
    # every version reports bytes and messages, so their totals are there
    assert any(name == "emqx_clients_received_bytes_total" for name, _, _ in samples)
