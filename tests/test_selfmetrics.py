"""What the self-metrics say about a poll (ClusterStats.record), and every family of a known
state byte for byte in both formats."""

from __future__ import annotations

import pytest

from exporter.dialects import NodeInfo
from exporter.errors import ApiConnectionError, ApiError
from exporter.poller import NodeOutcome, PollReport
from exporter.selfmetrics import ClusterStats, ReloadStatus, SelfMetrics
from exporter.sharding import assign
from tests.conftest import compare_golden
from tests.exposition import by_name, samples_text

NODES = ["emqx@10.0.0.1", "emqx@10.0.0.2"]


def after_a_good_poll() -> ClusterStats:
    stats = ClusterStats(name=None, interval=30.0)
    stats.polled, stats.up, stats.api, stats.emqx_version = True, True, "v5", "5.8.9"
    stats.last_success = stats.rendered_at = 100.0
    stats.series, stats.series_dropped = {"per_client": 40, "aggregate": 7}, 3
    stats.node_up = dict.fromkeys(NODES, True)
    stats.clients_listed = dict.fromkeys(NODES, 10)
    return stats


def test_a_poll_that_cannot_list_the_nodes_marks_every_known_node_down() -> None:
    stats = after_a_good_poll()
    error = ApiConnectionError("nodes", "connection refused")
    report = PollReport(started=130.0, duration=0.5, error=error)
    stats.record(report, known_nodes=NODES, api=None, emqx_version="5.8.9",
                 now=131.0)
    assert stats.polled and not stats.up and stats.poll_duration == 0.5
    assert stats.node_up == dict.fromkeys(NODES, False)  # 0, not absent
    assert stats.clients_listed == {}
    assert stats.series == {"per_client": 0, "aggregate": 0} and stats.series_dropped is None
    # What was true of the last good poll stays: when it was, and the API it used.
    assert (stats.last_success, stats.rendered_at, stats.api) == (100.0, 100.0, "v5")
    metrics = SelfMetrics()
    metrics.add_cluster(stats)
    text = metrics.text().decode()
    assert 'emqx_client_exporter_node_up{node="emqx@10.0.0.1"} 0.0' in text
    assert "emqx_client_exporter_up 0.0" in text
    assert "emqx_client_exporter_last_poll_success_timestamp_seconds 100.0" in text


def test_a_poll_whose_every_node_failed_names_the_first_cause() -> None:
    stats = ClusterStats(name="eu", interval=30.0)
    nodes = [NodeInfo(name, running=True) for name in NODES]
    failed = ApiError("clients", 500, "INTERNAL_ERROR", "boom")
    report = PollReport(started=0.0, duration=1.0, nodes=nodes, shard=assign(nodes),
                        outcomes=[NodeOutcome(name, error=failed) for name in NODES],
                        error=failed, duplicates=2)
    stats.record(report, known_nodes=NODES, api="v5-cursor", emqx_version=None,
                 now=5.0)
    assert not stats.up and stats.node_up == dict.fromkeys(NODES, False)
    assert stats.shard_nodes == 2 and stats.api == "v5-cursor" and stats.emqx_version == ""
    assert stats.last_success is None and stats.duplicates == 2


def test_a_partly_failed_poll_reports_each_node() -> None:
    stats = ClusterStats(name=None, interval=30.0)
    nodes = [NodeInfo(name, running=True) for name in NODES]
    report = PollReport(started=0.0, nodes=nodes, shard=assign(nodes), outcomes=[
        NodeOutcome(NODES[0], clients=12),
        NodeOutcome(NODES[1], error=ApiError("clients", 503))])
    stats.record(report, known_nodes=NODES, api="v5", emqx_version="5.8.9", now=5.0)
    assert stats.up  # one node walked: the cluster is up, the other node is not
    assert stats.node_up == {NODES[0]: True, NODES[1]: False}
    assert stats.clients_listed == {NODES[0]: 12}


#: (endpoint, outcome, seconds) in the order requests finished; endpoints out of order on
#: purpose: the exposition sorts them.
REQUESTS = [("/nodes", "200", 0.003), ("/clients", "200", 0.3), ("/clients", "200", 7.0),
            ("/nodes", "500", 0.05), ("/clients", "timeout", 120.0)]


def self_metrics(named: bool) -> SelfMetrics:
    metrics = SelfMetrics(clock=lambda: 1_700_000_100.0)
    east = metrics.add_cluster(ClusterStats(name="east" if named else None, interval=30.0))
    east.up = east.polled = True
    east.node_up = {"emqx@b": False, "emqx@a": True}
    east.clients_listed = {"emqx@a": 1200}
    east.unlisted = {"emqx@a": 20}
    east.poll_duration, east.last_success, east.rendered_at = 2.5, 1_700_000_000.0, 1_700_000_090.0
    east.series = {"per_client": 3600, "aggregate": 12}
    east.series_dropped = 0
    east.emqx_version, east.api, east.shard_nodes = "5.8.9", "v5-cursor", 2
    for endpoint, outcome, seconds in REQUESTS:
        east.observe_request(endpoint, outcome, seconds)
    east.count_error("timeout")
    east.count_error("bad_value", 3)
    east.duplicates = 4
    if named:
        west = metrics.add_cluster(ClusterStats(name="west", interval=15.0))
        west.observe_request("/clients", "200", 1.0)
    metrics.reloads["config"] = ReloadStatus(successful=False, last_success=1_699_999_000.0)
    return metrics


@pytest.mark.parametrize("named", [False, True], ids=["one-cluster", "named-clusters"])
def test_golden_self_metrics(named: bool, update_golden: bool) -> None:
    metrics = self_metrics(named)
    name = "named-clusters" if named else "one-cluster"
    compare_golden(f"selfmetrics-{name}.prom", metrics.text().decode(), update_golden)
    compare_golden(f"selfmetrics-{name}.om.txt", metrics.openmetrics().decode(), update_golden)


def test_request_latency_buckets_are_cumulative() -> None:
    samples = samples_text(self_metrics(named=False).text().decode())
    family = by_name(samples, "emqx_client_exporter_api_request_duration_seconds_bucket")
    buckets = {dict(labels)["le"]: value for labels, value in family.items()
               if dict(labels)["endpoint"] == "/clients"}
    assert buckets["0.25"] == 0 and buckets["0.5"] == 1 and buckets["10.0"] == 2
    assert buckets["60.0"] == 2 and buckets["+Inf"] == 3  # 120 s is past the last bound
