"""Fleet distributions: buckets per aggregate group, rates from the previous poll, both formats."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter import contract as c
from exporter.aggregate import AggregateSettings, Classifier, ClassRule
from exporter.config import PerClientSettings
from exporter.pipeline import Pipeline
from exporter.records import ClientRecord, record_type
from exporter.snapshot import compose
from exporter.timeparse import TimeParser
from tests.exposition import Sample, by_name, promtool_check, samples_openmetrics, samples_text

V5 = record_type("v5")
NODE = "emqx@127.0.0.1"
INF = float("inf")
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def client(clientid: str, **fields: Any) -> ClientRecord:
    values: dict[str, Any] = {
        "node": NODE, "connected": True, "connected_at": "2026-01-01T00:00:00Z",
        "mqueue_len": 0, "mqueue_max": 1000, "inflight": 0, "inflight_max": 32,
        "subscriptions": 1, "received_bytes": 0, "sent_bytes": 0, "received_messages": 0,
        "sent_messages": 0, "received_dropped": 0, "sent_dropped": 0, "mqueue_dropped": 0}
    values.update(fields)
    return V5(clientid=clientid, **values)


def pipeline(**aggregate: Any) -> Pipeline:
    rules = [ClassRule(name="sensor", field="clientid", pattern=re.compile("sensor-.*"))]
    return Pipeline(PerClientSettings(), AggregateSettings(**aggregate), Classifier(rules),
                    TimeParser(ZoneInfo("UTC")))


def poll(p: Pipeline, now: float, records: list[ClientRecord],
         failed: tuple[str, ...] = ()) -> tuple[str, str]:
    run = p.start_walk(now)
    run.add_page(None, records)
    run.fail(failed)
    nodes = sorted({r.node or "" for r in records} - set(failed))
    snapshot = compose([run.finish(nodes).rendered], now)
    return snapshot.text("text"), snapshot.text("openmetrics") + "# EOF\n"


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    """le (as a number) → cumulative count of one group."""
    want = set(labels.items())
    return {float(dict(k)["le"]): v for k, v in by_name(samples, f"{name}_bucket").items()
            if want <= set(k)}


def group(samples: list[Sample], name: str, suffix: str, **labels: str) -> float:
    return by_name(samples, f"{name}_{suffix}")[tuple(sorted(labels.items()))]


def test_fill_ratios_count_only_clients_with_a_known_capacity() -> None:
    records = [client("a", mqueue_len=500), client("b", mqueue_len=1000),
               client("c", mqueue_len=7, mqueue_max=0),  # unlimited: not counted
               client("d", inflight=16, inflight_max="infinity")]
    text, om = poll(pipeline(), T0 + 60, records)
    for samples in (samples_text(text), samples_openmetrics(om)):
        fill = buckets(samples, c.DIST_MQUEUE_FILL.name, node=NODE)
        assert fill[0.0] == 1 and fill[0.4] == 1 and fill[0.5] == 2 and fill[1.0] == 3
        assert fill[INF] == 3
        assert group(samples, c.DIST_MQUEUE_FILL.name, "gcount", node=NODE) == 3
        assert group(samples, c.DIST_MQUEUE_FILL.name, "gsum", node=NODE) == 1.5
        assert group(samples, c.DIST_INFLIGHT_FILL.name, "gcount", node=NODE) == 3
        age = buckets(samples, c.DIST_CONNECTION_AGE.name, node=NODE)
        assert age[10.0] == 0 and age[60.0] == 4  # connected a minute before the poll


def test_rates_come_from_the_previous_poll_and_skip_new_connections() -> None:
    p = pipeline()
    first = [client("steady"), client("reconnects"), client("dropper")]
    text, _ = poll(p, T0 + 100, first)
    # The first poll has no rates: every rate distribution is empty (but present).
    assert group(samples_text(text), c.DIST_RECEIVED_BYTES.name, "gcount", node=NODE) == 0
    second = [client("steady", received_bytes=1000, sent_messages=50),
              client("reconnects", connected_at="2026-01-01T00:01:50Z", received_bytes=10**6),
              client("dropper", sent_dropped=30),
              client("newcomer", received_bytes=10**6)]
    text, om = poll(p, T0 + 110, second)
    for samples in (samples_text(text), samples_openmetrics(om)):
        received = buckets(samples, c.DIST_RECEIVED_BYTES.name, node=NODE)
        # steady: 100 B/s; dropper: 0 B/s; the reconnected and the new client have no rate.
        assert received[0.0] == 1 and received[10.0] == 1 and received[100.0] == 2
        assert received[INF] == 2
        assert group(samples, c.DIST_RECEIVED_BYTES.name, "gsum", node=NODE) == 100.0
        sent = buckets(samples, c.DIST_SENT_MESSAGES.name, node=NODE)
        assert sent[1.0] == 1 and sent[10.0] == 2
        drops = buckets(samples, c.DIST_DROPPED.name, node=NODE)
        assert drops[0.0] == 1 and drops[1.0] == 1 and drops[10.0] == 2
        assert group(samples, c.DIST_DROPPED.name, "gsum", node=NODE) == 3.0
        # Gauges count everyone listed.
        assert group(samples, c.DIST_SUBSCRIPTIONS.name, "gcount", node=NODE) == 4


def test_a_client_missed_by_a_poll_has_no_rate_on_its_return() -> None:
    p = pipeline()
    poll(p, T0 + 100, [client("a", node="n1"), client("b", node="n2")])
    poll(p, T0 + 110, [client("a", node="n1")], failed=("n2",))  # n2 failed before a page
    text, _ = poll(p, T0 + 120, [client("a", node="n1", received_bytes=100),
                                 client("b", node="n2", received_bytes=200)])
    samples = samples_text(text)
    # a: 100 B over 10 s. b's 200 B span two intervals: no rate, rather than a wrong one.
    assert group(samples, c.DIST_RECEIVED_BYTES.name, "gcount", node="n1") == 1
    assert group(samples, c.DIST_RECEIVED_BYTES.name, "gcount", node="n2") == 0


def test_groups_follow_the_aggregate_labels_and_a_failed_node_counts_nothing() -> None:
    records = [client("sensor-1", node="n1"), client("sensor-2", node="n2"),
               client("app-1", node="n1", subscriptions=12)]
    text, _ = poll(pipeline(labels=("node", "class")), T0 + 60, records, failed=("n2",))
    samples = samples_text(text)
    subs = by_name(samples, f"{c.DIST_SUBSCRIPTIONS.name}_gcount")
    assert subs == {(("class", "other"), ("node", "n1")): 1,
                    (("class", "sensor"), ("node", "n1")): 1}
    other = buckets(samples, c.DIST_SUBSCRIPTIONS.name, node="n1", **{"class": "other"})
    assert other[10.0] == 0 and other[20.0] == 1


def test_versions_without_a_figure_count_nothing() -> None:
    # v3 has no queue, inflight window size or drop counters: absent, not 0.
    v3 = record_type("v3")
    records = [v3(clientid="old", node=NODE, connected_at="2026-01-01 00:00:00",
                  received_bytes=5, inflight=1)]
    text, _ = poll(pipeline(), T0 + 60, records)
    samples = samples_text(text)
    assert group(samples, c.DIST_MQUEUE_FILL.name, "gcount", node=NODE) == 0
    assert group(samples, c.DIST_INFLIGHT_FILL.name, "gcount", node=NODE) == 0
    assert group(samples, c.DIST_CONNECTION_AGE.name, "gcount", node=NODE) == 1


def test_series_stay_bounded_whatever_the_fleet_size() -> None:
    small, _ = poll(pipeline(), T0, [client(f"c{i}") for i in range(10)])
    large, _ = poll(pipeline(), T0, [client(f"c{i}", subscriptions=i) for i in range(5000)])
    names = {f.name for f in c.DISTRIBUTION_FAMILIES}

    def count(text: str) -> int:
        return sum(1 for line in text.splitlines()
                   if line and not line.startswith("#")
                   and line.split("{")[0].rsplit("_", 1)[0] in names)

    assert count(small) == count(large) < 200


@pytest.mark.promtool
def test_promtool_accepts_the_distributions(promtool: str) -> None:
    p = pipeline(labels=("node", "class"))
    poll(p, T0 + 100, [client("sensor-1"), client("app-1")])
    text, _ = poll(p, T0 + 110, [client("sensor-1", received_bytes=10), client("app-1")])
    promtool_check(promtool, text)


def test_odd_capacities_are_left_out_not_fatal() -> None:
    records = [client("a", mqueue_len=5, mqueue_max=10), client("b", mqueue_len=5, mqueue_max=-1),
               client("c", mqueue_len=5, mqueue_max="lots"), client("d", mqueue_len=None),
               client("e", mqueue_len=1, mqueue_max="infinity")]
    text, _ = poll(pipeline(), T0 + 60, records)
    samples = samples_text(text)
    assert group(samples, c.DIST_MQUEUE_FILL.name, "gcount", node=NODE) == 1
    assert group(samples, c.DIST_MQUEUE_FILL.name, "gsum", node=NODE) == 0.5
