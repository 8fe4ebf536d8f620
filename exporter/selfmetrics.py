"""The exporter's own metrics (`emqx_client_exporter_*`), rendered by prometheus_client.

State lives in plain objects the pollers update; a custom collector turns it into metric
families at scrape time, so labels such as `cluster` appear only when clusters are named.

    emqx_client_exporter_node_up{node="emqx@10.0.0.2"} 0
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.samples import Sample

from exporter import __version__
from exporter.contract import CLIENTS_UNLISTED, SELF_PREFIX

if TYPE_CHECKING:
    from exporter.poller import PollReport

#: Request latency buckets in seconds: EMQX pages take from milliseconds to tens of seconds.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


LATENCY = SELF_PREFIX + "api_request_duration_seconds"
LATENCY_HELP = "Duration of HTTP requests to EMQX, body included."


def _request_latency() -> Histogram:
    """One cluster's request durations by endpoint. Not registered: `SelfMetrics.collect`
    merges every cluster's into one family, adding the `cluster` label when clusters are named."""
    return Histogram(LATENCY, LATENCY_HELP, ["endpoint"], buckets=DURATION_BUCKETS,
                     registry=None)


@dataclass(slots=True)
class ClusterStats:
    """Everything the self-metrics say about one cluster."""

    name: str | None
    interval: float
    up: bool = False
    polled: bool = False
    node_up: dict[str, bool] = field(default_factory=dict)
    clients_listed: dict[str, int] = field(default_factory=dict)
    #: Rows EMQX reported but never listed, per node; absent where nothing to compare.
    unlisted: dict[str, int] = field(default_factory=dict)
    poll_duration: float | None = None
    last_success: float | None = None
    api_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    api_durations: Histogram = field(default_factory=_request_latency)
    api_errors: Counter[str] = field(default_factory=Counter)
    #: Listing pages of completed walks by decoder ("arrow", "msgspec").
    pages_decoded: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    series: dict[str, int] = field(default_factory=dict)
    #: None after a failed poll: no cap was applied, so how many it leaves out is unknown.
    series_dropped: int | None = None
    emqx_version: str = ""
    api: str = ""
    #: When the data served for this cluster was rendered (by its last complete poll).
    rendered_at: float | None = None
    #: EMQX nodes this replica owns (`--shard`); None until /nodes answered.
    shard_nodes: int | None = None

    def observe_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.api_requests[(endpoint, outcome)] += 1
        self.api_durations.labels(endpoint).observe(seconds)

    def count_error(self, reason: str, amount: int = 1) -> None:
        self.api_errors[reason] += amount

    def count_pages(self, columnar: int, typed: int) -> None:
        for decoder, pages in (("arrow", columnar), ("msgspec", typed)):
            if pages:
                self.pages_decoded[decoder] += pages

    def record(self, report: PollReport, *, known_nodes: Sequence[str], api: str | None,
               emqx_version: str | None, now: float) -> None:
        """Describe the poll `report` tells of; a failed poll leaves no series served.

        `known_nodes` are the nodes of this replica's share seen by the last discovery: their
        `node_up` goes to 0, not away, when this poll could not even list them. `api` is the
        dialect in use (None: none yet, keep the last).
        """
        self.polled = True
        self.poll_duration = report.duration
        self.up = report.ok
        if report.shard is not None:
            self.shard_nodes = len(report.shard.owned)
        self.node_up = dict.fromkeys(known_nodes, False)
        self.node_up.update({o.node: o.error is None for o in report.outcomes if o.node})
        self.clients_listed = {o.node: o.clients for o in report.outcomes
                               if o.error is None and o.node}
        self.unlisted = dict(report.unlisted) if report.ok else {}
        self.duplicates += report.duplicates
        if api is not None:
            self.api = api
        self.emqx_version = emqx_version or ""
        if report.ok and report.result is not None:
            self.last_success = now
            self.rendered_at = now
            self.series = {"per_client": report.result.per_client_series,
                           "aggregate": report.result.aggregate_series}
            self.series_dropped = report.result.series_dropped
        else:
            # Nothing of this poll is served; the self-metrics describe this poll, not the last:
            # no series served, and no cap applied, so what it would leave out is unknown
            # (absent; 0 would say "nothing left out").
            self.series = {"per_client": 0, "aggregate": 0}
            self.series_dropped = None


@dataclass(slots=True)
class ReloadStatus:
    """Whether the last reload of a configuration file worked, and when one last did."""

    successful: bool = True
    last_success: float | None = None

    def record(self, ok: bool, now: float) -> None:
        self.successful = ok
        if ok:
            self.last_success = now


#: Files that can be reloaded, each with its own pair of reload metrics.
RELOADABLE = ("config", "web_config")


class SelfMetrics:
    """Collector over every cluster's stats plus the snapshot's age."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clusters: list[ClusterStats] = []
        self.clock = clock
        #: Reloadable files in use (RELOADABLE names) and how their last reload went.
        self.reloads: dict[str, ReloadStatus] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # collect() does no I/O, so registering is safe

    def add_cluster(self, stats: ClusterStats) -> ClusterStats:
        self.clusters.append(stats)
        return stats

    def text(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def openmetrics(self) -> bytes:
        return bytes(generate_openmetrics(self.registry))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        named = any(s.name for s in self.clusters)
        base = ["cluster"] if named else []

        def labels(stats: ClusterStats, *rest: str) -> list[str]:
            return ([stats.name or ""] if named else []) + list(rest)

        def gauge(name: str, doc: str, extra: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(SELF_PREFIX + name, doc, labels=base + extra)

        up = gauge("up", "1 when the last poll reached EMQX and listed nodes.", [])
        node_up = gauge("node_up", "1 when the last poll walked this node's clients completely.",
                        ["node"])
        listed = gauge("clients_listed", "Clients listed per node in the last poll.", ["node"])
        unlisted = GaugeMetricFamily(
            CLIENTS_UNLISTED, "Rows EMQX reported for a node in the last poll (its listing's "
            "count, or /nodes sessions for cursor listing) that the listing never gave; absent "
            "when there is no count to compare with.", labels=[*base, "node"])
        duration = gauge("poll_duration_seconds", "Duration of the last poll.", [])
        success = gauge("last_poll_success_timestamp_seconds",
                        "When the last successful poll finished, Unix time.", [])
        interval = gauge("poll_interval_seconds", "Configured poll interval.", [])
        series = gauge("series", "Series in the current snapshot, by kind.", ["kind"])
        dropped = gauge("series_dropped",
                        "Per-client series left out by the series cap in the last poll; "
                        "absent after a failed poll (no cap applied).", [])
        shard_nodes = gauge("shard_nodes",
                            "EMQX nodes this replica polls (--shard); 0: idle, not failed.", [])
        build = gauge("build_info", "Exporter version, EMQX version and API dialect in use.",
                      ["version", "emqx_version", "api"])
        requests = CounterMetricFamily(SELF_PREFIX + "api_requests",
                                       "HTTP requests to EMQX by endpoint and outcome.",
                                       labels=[*base, "endpoint", "code"])
        errors = CounterMetricFamily(SELF_PREFIX + "api_errors",
                                     "Failed API calls and rejected data, by reason.",
                                     labels=[*base, "reason"])
        duplicates = CounterMetricFamily(SELF_PREFIX + "duplicate_clients",
                                         "Client rows listed twice in one poll and dropped.",
                                         labels=base)
        pages = CounterMetricFamily(
            SELF_PREFIX + "listing_pages", "Client listing pages of completed walks by decoder: "
            "arrow (v5 pages into columns, the fast extra) or msgspec (the rest, and pages "
            "Arrow leaves to it).", labels=[*base, "decoder"])
        latency = HistogramMetricFamily(LATENCY, LATENCY_HELP, labels=[*base, "endpoint"])
        for s in self.clusters:
            interval.add_metric(labels(s), s.interval)
            if s.polled:
                up.add_metric(labels(s), 1.0 if s.up else 0.0)
            for node, ok in sorted(s.node_up.items()):
                node_up.add_metric(labels(s, node), 1.0 if ok else 0.0)
            for node, count in sorted(s.clients_listed.items()):
                listed.add_metric(labels(s, node), count)
            for node, count in sorted(s.unlisted.items()):
                unlisted.add_metric(labels(s, node), count)
            if s.poll_duration is not None:
                duration.add_metric(labels(s), s.poll_duration)
            if s.last_success is not None:
                success.add_metric(labels(s), s.last_success)
            for kind, count in sorted(s.series.items()):
                series.add_metric(labels(s, kind), count)
            if s.series_dropped is not None:
                dropped.add_metric(labels(s), s.series_dropped)
            if s.shard_nodes is not None:
                shard_nodes.add_metric(labels(s), s.shard_nodes)
            build.add_metric(labels(s, __version__, s.emqx_version, s.api), 1.0)
            for (endpoint, code), count in sorted(s.api_requests.items()):
                requests.add_metric(labels(s, endpoint, code), count)
            for reason, count in sorted(s.api_errors.items()):
                errors.add_metric(labels(s, reason), count)
            duplicates.add_metric(labels(s), s.duplicates)
            for decoder, count in sorted(s.pages_decoded.items()):
                pages.add_metric(labels(s, decoder), count)
            latency.samples.extend(_latency_samples(s, named))
        age = gauge("snapshot_age_seconds",
                    "Seconds since the served data was rendered by a complete poll; grows "
                    "while polls fail (scrapes never poll).", [])
        now = self.clock()
        for s in self.clusters:
            if s.rendered_at is not None:
                age.add_metric(labels(s), max(0.0, now - s.rendered_at))
        yield from (up, node_up, listed, unlisted, duration, success, interval, age, series,
                    dropped, shard_nodes, build, requests, errors, duplicates, pages, latency)
        yield from self._reload_families()

    def _reload_families(self) -> Iterator[Metric]:
        for kind in RELOADABLE:
            status = self.reloads.get(kind)
            if status is None:
                continue
            ok = GaugeMetricFamily(SELF_PREFIX + f"{kind}_last_reload_successful",
                                   f"1 when the last reload of the {kind} file worked; 0: the "
                                   "new file was rejected and the previous one is in use.")
            ok.add_metric([], 1.0 if status.successful else 0.0)
            yield ok
            if status.last_success is not None:
                yield GaugeMetricFamily(
                    SELF_PREFIX + f"{kind}_last_reload_success_timestamp_seconds",
                    f"When the {kind} file was last loaded successfully, Unix time.",
                    value=status.last_success)


def _latency_samples(stats: ClusterStats, named: bool) -> list[Sample]:
    """A cluster's request-latency samples, endpoints sorted, with its `cluster` label.
    `_created` is left out: the text format would show it as a series of its own."""
    cluster = {"cluster": stats.name or ""} if named else {}
    (family,) = stats.api_durations.collect()
    samples = sorted((s for s in family.samples if not s.name.endswith("_created")),
                     key=lambda s: s.labels["endpoint"])  # stable: each histogram stays in order
    return [s._replace(labels={**cluster, **s.labels}) for s in samples]
