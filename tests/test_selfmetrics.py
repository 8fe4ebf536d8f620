"""What the self-metrics say about a poll: ClusterStats.record, then the exposition."""

from __future__ import annotations

from exporter.dialects import NodeInfo
from exporter.errors import ApiConnectionError, ApiError
from exporter.poller import NodeOutcome, PollReport
from exporter.selfmetrics import ClusterStats, SelfMetrics
from exporter.sharding import assign

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
                 failing={"cluster": error}, now=131.0)
    assert stats.polled and not stats.up and stats.poll_duration == 0.5
    assert stats.node_up == dict.fromkeys(NODES, False)  # 0, not absent
    assert stats.clients_listed == {}
    assert stats.series == {"per_client": 0, "aggregate": 0} and stats.series_dropped == 0
    # What was true of the last good poll stays: when it was, and the API it used.
    assert (stats.last_success, stats.rendered_at, stats.api) == (100.0, 100.0, "v5")
    assert stats.failing == {"cluster": str(error)}
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
                 failing=dict.fromkeys(NODES, failed), now=5.0)
    assert not stats.up and stats.node_up == dict.fromkeys(NODES, False)
    assert stats.shard_nodes == 2 and stats.api == "v5-cursor" and stats.emqx_version == ""
    assert stats.last_success is None and stats.duplicates == 2
    assert stats.failing == {**{name: str(failed) for name in NODES}, "cluster": str(failed)}


def test_a_partly_failed_poll_reports_each_node() -> None:
    stats = ClusterStats(name=None, interval=30.0)
    nodes = [NodeInfo(name, running=True) for name in NODES]
    report = PollReport(started=0.0, nodes=nodes, shard=assign(nodes), outcomes=[
        NodeOutcome(NODES[0], clients=12),
        NodeOutcome(NODES[1], error=ApiError("clients", 503))])
    stats.record(report, known_nodes=NODES, api="v5", emqx_version="5.8.9", failing={},
                 now=5.0)
    assert stats.up  # one node walked: the cluster is up, the other node is not
    assert stats.node_up == {NODES[0]: True, NODES[1]: False}
    assert stats.clients_listed == {NODES[0]: 12}
