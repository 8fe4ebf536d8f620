"""The exporter's own metrics: every family of a known state, byte for byte, in both formats."""

from __future__ import annotations

import pytest

from exporter.selfmetrics import ClusterStats, ReloadStatus, SelfMetrics
from tests.conftest import compare_golden
from tests.exposition import by_name, samples_text

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
    east.poll_duration, east.last_success, east.rendered_at = 2.5, 1_700_000_000.0, 1_700_000_090.0
    east.series = {"per_client": 3600, "aggregate": 12}
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
