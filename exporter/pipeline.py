"""Stages after the download, fed page by page: de-duplication, counters, aggregation,
distributions, selection and rendering of one cluster's poll.

Pages are processed as they arrive, so a poll never holds more than a page of full records
beside the compact counter state, the top-K candidates and the watched clients. Every method
of `PollRun` runs off the event loop: in the cluster's worker process (`exporter.worker`), or
on its pipeline thread with `pipeline_worker: thread`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, ge, gt

import structlog

from exporter import contract as c
from exporter.aggregate import AggregateSettings, Aggregator, Classifier, Gauges, GroupKey
from exporter.config import PerClientSettings
from exporter.distribution import Histograms
from exporter.exposition import client_lines
from exporter.records import ClientRecord
from exporter.render import (
    ClientRenderer,
    ClientRenderSettings,
    Rendered,
    identity_labels,
)
from exporter.selection import (
    DEFAULT_RANKING,
    RANKINGS,
    RankedClient,
    Scorer,
    Scores,
    SelectionSettings,
    Selector,
    default_key,
)
from exporter.state import COUNTER_FIELDS, NO_INCREASE, CounterState
from exporter.timeparse import TimeParser

log = structlog.get_logger(__name__)


def _part_fields() -> dict[str, tuple[str, ...]]:
    fields: dict[str, list[str]] = {}
    for col in c.CLIENT_COLUMNS:
        if col.field is not None:
            fields.setdefault(col.part, []).append(col.field)
        if col.split is not None:
            fields.setdefault(col.split.switch, []).extend(f for _, f in col.split.pieces)
    return {part: tuple(names) for part, names in fields.items()}


#: Record fields that each per-client part reads (for v5 `fields=` and lean decoding).
PART_FIELDS = _part_fields()
#: Read by de-duplication, counters, aggregation and ranking whatever is configured.
BASE_FIELDS = ("clientid", "node", "connected", "connected_at", "created_at", "username",
               "mqueue_len", "mqueue_max", "inflight", "inflight_max", "subscriptions",
               "durable", "is_expired", *COUNTER_FIELDS)
#: Members of each ranking kept in a poll's summary (the status page shows them).
SUMMARY_TOP = 10
#: What to configure when the cap leaves clients out (logs, `check` and the status page).
CAP_HINT = ("choose clients with per_client.watch, per_client.allow or per_client.top_k, "
            "raise per_client.max_series, or turn per-client parts off")

_COUNTERS = attrgetter(*COUNTER_FIELDS)
#: What a row's fingerprint covers (`CounterState.quiet`): its connection and its counters.
_ROW = attrgetter("connected_at", "created_at", *COUNTER_FIELDS)
_CLIENTID = attrgetter("clientid")


def series_per_client(parts: frozenset[str]) -> int:
    """An upper bound of the series one client gets: what the cap counts per client.

    One per enabled family, plus a split's extra lines where its switch is on too (e.g. the
    qos split writes three lines where the total was one: two more per direction).
    """
    total = 0
    for col in c.CLIENT_COLUMNS:
        if col.part in parts:
            total += 1
            if col.split is not None and col.split.switch in parts:
                total += col.split.extra_series
    return max(1, total)


@dataclass(frozen=True, slots=True)
class SelectionSummary:
    """Who got per-client series in a poll, who did not, and why."""

    #: "all" (no selection configured), "default ranking" (the same, with the cap binding),
    #: "watch only" or "configured" (watch list, allow list or top-K).
    mode: str
    listed: int
    exported: int
    #: Clients that qualified but were left out because of the cap.
    left_out: int
    max_series: int
    series_per_client: int
    watched: int = 0
    watched_offline: int = 0
    #: The first members of each ranking that ran, worst first.
    top: dict[str, list[RankedClient]] = field(default_factory=dict)

    @property
    def max_clients(self) -> int:
        return self.max_series // self.series_per_client

    @property
    def cap_binds(self) -> bool:
        return self.left_out > 0


@dataclass(frozen=True, slots=True)
class Footprint:
    """Memory a pipeline holds: its lasting counter state and, when it runs in a worker
    process (`exporter.worker`), that process's peak resident memory."""

    state_bytes: int
    clients: int
    worker_peak_rss_bytes: int | None = None


@dataclass(slots=True)
class PipelineResult:
    rendered: Rendered
    per_client_series: int
    aggregate_series: int
    series_dropped: int
    clients: int
    duplicates: int
    listed: dict[str, int]
    selection: SelectionSummary | None = None


class Pipeline:
    """Everything a cluster keeps between polls: counter state, top-K members, last seen."""

    def __init__(self, per_client: PerClientSettings, aggregate: AggregateSettings,
                 classifier: Classifier, parse_time: TimeParser,
                 const_labels: tuple[tuple[str, str], ...] = (),
                 selection: SelectionSettings | None = None, *, label: str = "") -> None:
        #: The cluster's name, or its URL when it has none (log lines say which cluster).
        self.label = label
        self.render_settings = ClientRenderSettings(
            parts=per_client.parts, identity_labels=per_client.labels,
            info_labels=per_client.info_labels, const_labels=const_labels)
        self.aggregator = Aggregator(
            AggregateSettings(labels=aggregate.labels, saturation=aggregate.saturation,
                              const_labels=const_labels), classifier)
        self.renderer = ClientRenderer(self.render_settings, parse_time)
        self.selection = selection or SelectionSettings()
        self.selector = Selector(self.selection, series_per_client(per_client.parts))
        self.state = CounterState(parse_time)
        #: Watched client id → when a poll last saw it online (Unix time).
        self.last_seen: dict[str, float] = {}
        self.polls = 0
        #: Until a poll has walked a node, every client seen is the baseline, not a connect.
        self.baseline = True
        self.last_poll_at: float | None = None
        self._node_index: dict[str, int] = {}
        #: The cap left clients out in the last poll that walked: the next poll ranks everyone
        #: by the default ranking instead of streaming (no selection configured).
        self.cap_binds = False
        #: The rankings some top-K ranks by.
        self.ranked_by = frozenset(name for name, _ in self.selection.top_k)

    def needed_fields(self) -> frozenset[str]:
        """Every record field some configured stage reads."""
        fields = set(BASE_FIELDS)
        for part in self.render_settings.parts:
            fields.update(PART_FIELDS.get(part, ()))
        if "info" in self.render_settings.parts:
            fields.update(self.render_settings.info_labels)
        fields.update(self.render_settings.identity_labels)
        fields.update(label for label in self.aggregator.settings.labels if label != "class")
        return frozenset(fields)

    def node_index(self, node: str) -> int:
        return self._node_index.setdefault(node, len(self._node_index))

    def start_walk(self, now: float) -> PollRun:
        """Begin a poll that walks the nodes' client lists."""
        return PollRun(self, now, self._begin(now))

    def start_lookup(self, now: float,
                     node_totals: dict[str, tuple[int | None, int | None]]) -> PollRun:
        """Begin a watch-only poll: the watched clients are looked up, nothing is walked.

        `node_totals` holds each running node's (live connections, sessions) from /nodes, None
        where the version does not report the figure: the only aggregates such a poll has.
        """
        return PollRun(self, now, self._begin(now), node_totals=node_totals)

    def _begin(self, now: float) -> float | None:
        """Count a poll in; the seconds since the previous one (None for the first)."""
        self.polls += 1
        for top in self.selector.trackers:
            top.start()
        return None if self.last_poll_at is None else max(1e-3, now - self.last_poll_at)

    def remember_seen(self, seen: Mapping[str, float]) -> None:
        """Last-seen times of watched clients from before (the state file, a reload)."""
        self.last_seen.update(seen)

    def rankings(self) -> dict[str, list[RankedClient]]:
        """Each configured top-K's members as of the last poll, worst first."""
        return {top.name: list(top.last) for top in self.selector.top}

    def footprint(self) -> Footprint:
        return Footprint(self.state.nbytes(), len(self.state))

    def describe(self) -> str:
        """Where this pipeline runs, for the status page."""
        return "in the exporter's process (pipeline_worker: thread)"

    def close(self) -> None:
        """Nothing to release in-process (`ProcessPipeline.close` stops its worker)."""


@dataclass(slots=True)
class _NodePart:
    """What one node contributed to a poll, dropped whole if its walk fails."""

    chunks: dict[c.Family, list[bytes]] = field(default_factory=dict)
    gauges: dict[GroupKey, Gauges] = field(default_factory=dict)
    histograms: dict[GroupKey, Histograms] = field(default_factory=dict)
    clientids: list[str] = field(default_factory=list)
    #: Clients of this node rendered with the allow list.
    streamed: set[str] = field(default_factory=set)
    #: Allowed clients past the streaming budget, kept (boundedly) for room left at the end.
    overflow: list[ClientRecord] = field(default_factory=list)
    #: With no selection configured, the streamed clients and their rate increases: ranked
    #: by the default ranking at the end only if the cap turns out to bind in this poll.
    scored: list[tuple[ClientRecord, list[int] | None]] = field(default_factory=list)


class PollRun:
    """One poll's accumulation, fed a page at a time.

    Made by `Pipeline.start_walk` or `Pipeline.start_lookup`; every method takes and returns
    plain data.
    """

    def __init__(self, pipeline: Pipeline, now: float, elapsed: float | None, *,
                 node_totals: dict[str, tuple[int | None, int | None]] | None = None) -> None:
        self.p = pipeline
        self.now = now
        self.elapsed = elapsed
        #: 1 / seconds since the previous poll: counter increases times this are rates.
        self.per_second = None if elapsed is None else 1.0 / elapsed
        #: Watch-only polls look clients up instead of walking: no aggregates from records.
        self.lookup = node_totals is not None
        #: Per-node (live connections, sessions) from /nodes, for watch-only aggregates;
        #: None where the version does not report the figure.
        self.node_totals = node_totals or {}
        #: No selection configured and the cap bound last time: rank everyone, stream nobody.
        self.ranked = pipeline.selector.default is not None and pipeline.cap_binds
        self.budget = pipeline.selector.budget()
        self.scorer = Scorer(pipeline.ranked_by, pipeline.state, self.per_second)
        self.seen: set[str] = set()
        self.duplicates = 0
        self.nodes: dict[str, _NodePart] = {}
        self.failed: set[str] = set()
        self.watched: dict[str, ClientRecord] = {}
        #: Watched ids whose lookup failed: unknown, so not reported offline.
        self.unknown: set[str] = set()

    def add_page(self, walk_node: str | None, records: Sequence[ClientRecord],
                 keys: Sequence[GroupKey] | None = None) -> None:
        """Take one page of one walk (records may name their node; cursor walks span nodes).

        `keys` are the records' aggregate groups when the caller has them already
        (`Aggregator.keys`: the worker's parent computes them on its own, idler core).
        """
        p = self.p
        if keys is None:
            keys = p.aggregator.keys(records)
        selector = p.selector
        watch = selector.settings.watch
        state = p.state
        aggregator = p.aggregator
        baseline = p.baseline
        seen = self.seen
        export_all = selector.settings.export_all
        allow = bool(selector.settings.allow)
        default = selector.default
        ranking = bool(selector.top)
        ranked = self.ranked
        lookup = self.lookup
        poll = p.polls
        idle_is_zero = self.scorer.idle_is_zero
        admit = self.budget.admit
        batch: dict[str, list[ClientRecord]] = {}
        # Clients to score, with their rate increases: a page's worth at once is C work.
        to_rank: tuple[list[ClientRecord], list[list[int] | None]] = ([], [])
        to_default: tuple[list[ClientRecord], list[list[int] | None]] = ([], [])
        # Records of one page nearly always share a node: look its part up once per change.
        current_node: str | None = None
        part = _NodePart()
        node_index = 0
        prints = list(map(hash, map(_ROW, records)))
        quiet = state.quiet(list(map(_CLIENTID, records)), prints)
        touch = state.touch
        group_totals = aggregator.counters
        for record, key, slot, fingerprint in zip(records, keys, quiet, prints, strict=True):
            clientid = record.clientid
            if clientid in seen:
                self.duplicates += 1  # the first row listed wins; the rest are drift
                continue
            seen.add(clientid)
            if lookup:
                self._watch(record)
                continue
            node = record.node or walk_node or ""
            if node != current_node:
                current_node = node
                part = self.nodes.setdefault(node, _NodePart())
                node_index = p.node_index(node)
            part.clientids.append(clientid)
            histograms = part.histograms.get(key)
            if histograms is None:
                part.gauges[key] = Gauges()
                histograms = part.histograms[key] = Histograms()
            if slot >= 0:  # the row the last poll saw: nothing to add
                rated, since = touch(slot, node_index, poll)
                rate_deltas = NO_INCREASE if rated else None
                moved = False
                if key not in group_totals:
                    aggregator.count(key, NO_INCREASE, False)  # the group's series exist
            else:
                began = record.connected_at or record.created_at
                connection = None if began is None else hash(began)
                deltas, new, rated, since = state.observe(
                    clientid, connection, _COUNTERS(record), node_index, poll,
                    record.connected_at, fingerprint)
                aggregator.count(key, deltas, new and not baseline)
                rate_deltas = deltas if rated else None
                moved = rate_deltas is not None and any(rate_deltas)
            histograms.records.append(record)
            histograms.deltas.append(rate_deltas)
            if since == since and record.connected is not False:  # NaN (unknown) != NaN
                histograms.since.append(since)
            if ranking and (not idle_is_zero or record.mqueue_len or record.inflight or moved):
                # (Most of a fleet is idle, scoring 0 everywhere: no top-K takes it.)
                to_rank[0].append(record)
                to_rank[1].append(rate_deltas)
            if clientid in watch:
                self._watch(record)
            elif export_all or (allow and selector.allowed(record)):
                if ranked:
                    to_default[0].append(record)
                    to_default[1].append(rate_deltas)
                    continue
                admission = admit()
                if admission == "stream":
                    batch.setdefault(node, []).append(record)
                    if default is not None:
                        part.scored.append((record, rate_deltas))
                elif admission == "overflow":
                    part.overflow.append(record)
                elif default is not None:
                    to_default[0].append(record)
                    to_default[1].append(rate_deltas)
                else:
                    self.budget.leave_out()
        if to_rank[0]:
            self._rank(*to_rank)
        if to_default[0]:
            self._offer_default(*to_default)
        for node, chosen in batch.items():
            self._render(self.nodes[node], chosen)
        for part in self.nodes.values():
            for key, histograms in part.histograms.items():
                if histograms.records:
                    aggregator.gauge(part.gauges[key], histograms.records)
                histograms.flush(self.per_second, self.now)

    def _watch(self, record: ClientRecord) -> None:
        self.watched[record.clientid] = record
        if record.connected is not False:
            self.p.last_seen[record.clientid] = self.now

    def _rank(self, records: list[ClientRecord], rate_deltas: list[list[int] | None]) -> None:
        """Offer each configured top-K the clients whose score may enter it (a page at once:
        each ranking's scores are computed for the whole page, mostly in C)."""
        scorer = self.scorer
        columns: dict[int, list[float]] = {}  # by ranking, computed when first needed

        def column(index: int) -> list[float]:
            if index not in columns:
                columns[index] = scorer.column(index, records, rate_deltas)
            return columns[index]

        for top in self.p.selector.top:
            scores = column(top.index)
            floor = top.floor
            # Above 0 and not below the lowest candidate (the floor only rises while offering):
            # a few clients of a large fleet, found in C.
            passing = map(ge, scores, repeat(floor)) if floor > 0 else map(gt, scores, repeat(0))
            for i in compress(range(len(scores)), passing):
                score = scores[i]
                if score >= top.floor:
                    every = tuple(column(j)[i] for j in range(len(RANKINGS)))
                    top.offer(score, every, records[i])

    def _offer_default(self, records: list[ClientRecord],
                       rate_deltas: list[list[int] | None]) -> None:
        default = self.p.selector.default
        assert default is not None
        rows: list[Scores] = list(zip(*self.scorer.columns(records, rate_deltas), strict=True))
        for key, scores, record in zip(map(default_key, rows), rows, records, strict=True):
            default.offer(key, scores, record)

    def _render(self, part: _NodePart, records: Sequence[ClientRecord]) -> None:
        rendered = self.p.renderer.render(records, identity_labels(records,
                                                                    self.p.render_settings))
        for family, text in rendered.items():
            part.chunks.setdefault(family, []).append(text)
        part.streamed.update(r.clientid for r in records)

    def fail(self, nodes: Iterable[str]) -> None:
        """Forget what failed walks contributed; their counter increases stay counted.

        Another walk of these nodes may follow in the same poll (per node, after a failed
        cluster-wide cursor walk): their rows are not duplicates then, and the nodes it
        walks count as walked (`finish`)."""
        for node in nodes:
            self.failed.add(node)
            part = self.nodes.pop(node, None)
            if part is None:
                continue
            self.seen.difference_update(part.clientids)
            self.budget.refund(len(part.streamed), len(part.overflow))
            for top in self.p.selector.trackers:
                top.discard(part.clientids)
            for clientid in part.clientids:
                self.watched.pop(clientid, None)

    def mark_unknown(self, clientids: Iterable[str]) -> None:
        """Watched clients whose lookup failed: unknown, so not reported offline."""
        self.unknown.update(clientids)

    def finish(self, walked: Sequence[str]) -> PipelineResult:
        """Render the watch list, top-K and aggregates; forget clients that are gone."""
        p = self.p
        budget = self.budget
        self.failed.difference_update(walked)  # walked again after a failed walk
        ok_parts = {n: part for n, part in self.nodes.items() if n not in self.failed}
        listed = {n: len(part.clientids) for n, part in ok_parts.items() if n}
        rendered: Rendered = {}
        streamed: set[str] = set()
        complete = self.scorer.complete if self.scorer.deferred else None
        default = p.selector.default
        by_default = default is not None and (self.ranked or budget.full)
        if by_default:
            assert default is not None
            if not self.ranked:
                # The cap started binding mid-poll: what streamed first came by listing order,
                # so it is ranked with the rest and its rendering thrown away.
                for part in ok_parts.values():
                    if part.scored:
                        self._offer_default([r for r, _ in part.scored],
                                            [d for _, d in part.scored])
            late = default.finish(complete) if walked else []
            if walked:
                budget.leave_out(max(0, sum(map(len, (pt.clientids for pt in ok_parts.values())))
                                     - len(late)))
        else:
            overflow: list[ClientRecord] = []
            for part in ok_parts.values():
                for family, texts in part.chunks.items():
                    rendered.setdefault(family, []).extend(texts)
                streamed.update(part.streamed)
                overflow.extend(part.overflow)
            # A failed poll saw too little to change who is in the top-K.
            members = [top.finish(complete) for top in p.selector.top] if walked else []
            late = budget.choose(streamed, [r for _, r in sorted(self.watched.items())],
                                 members, overflow)
        if late:
            batch = p.renderer.render(late, identity_labels(late, p.render_settings))
            for family, text in batch.items():
                rendered.setdefault(family, []).append(text)
        offline = self._render_watch_extras(rendered)
        per_client = sum(t.count(b"\n") for texts in rendered.values() for t in texts)
        seeds = p.aggregator.seeds(walked)
        gauges: dict[GroupKey, Gauges] = {key: Gauges() for key in seeds}
        histograms: dict[GroupKey, Histograms] = {key: Histograms() for key in seeds}
        for part in ok_parts.values():
            for key, g in part.gauges.items():
                gauges.setdefault(key, Gauges()).add(g)
            for key, h in part.histograms.items():
                histograms.setdefault(key, Histograms()).add(h)
        if self.lookup:
            # Without a walk, only /nodes knows totals, only per node, and only those the
            # version reports: the rest is unknown, so absent.
            aggregates = (p.aggregator.render_node_totals(self.node_totals)
                          if p.aggregator.settings.labels == ("node",) else {})
        else:
            aggregates = p.aggregator.render(gauges, histograms)
        for family, text in aggregates.items():
            rendered.setdefault(family, []).append(text)
        p.state.sweep(p.polls, (p.node_index(n) for n in walked))
        p.last_poll_at = self.now
        clients = sum(listed.values())
        summary = self._summary(clients, per_client_clients=len(streamed) + len(late),
                                offline=offline, by_default=by_default)
        if walked:
            p.baseline = False
            self._note_cap(summary)
        return PipelineResult(
            rendered=rendered, per_client_series=per_client,
            aggregate_series=sum(t.count(b"\n") for f, t in aggregates.items()
                                 if f.only != "openmetrics"),
            series_dropped=budget.dropped * p.selector.per_client_series,
            clients=clients, duplicates=self.duplicates, listed=listed, selection=summary)

    def _summary(self, clients: int, *, per_client_clients: int, offline: int,
                 by_default: bool) -> SelectionSummary:
        p = self.p
        settings = p.selector.settings
        if settings.watch_only:
            mode = "watch only"
        elif not settings.export_all:
            mode = "configured"
        else:
            by_default = by_default and self.budget.dropped > 0
            mode = "default ranking" if by_default else "all"
        rankings = list(p.selector.top)
        if by_default and p.selector.default is not None:
            rankings.append(p.selector.default)
        return SelectionSummary(
            mode=mode, listed=clients if not self.lookup else len(self.watched),
            exported=per_client_clients, left_out=self.budget.dropped,
            max_series=settings.max_series, series_per_client=p.selector.per_client_series,
            watched=len(settings.watch), watched_offline=offline,
            top={t.name: t.last[:SUMMARY_TOP] for t in rankings})

    def _note_cap(self, summary: SelectionSummary) -> None:
        """Log once when the cap starts leaving clients out, and once when it stops."""
        p = self.p
        binds = summary.cap_binds
        if binds == p.cap_binds:
            return
        p.cap_binds = binds
        cluster = p.label  # a single cluster has no `cluster` label, but a name or URL
        if binds:
            log.warning("per_client_cap_binding", cluster=cluster, listed=summary.listed,
                        exported=summary.exported, left_out=summary.left_out,
                        max_series=summary.max_series, chosen_by=(
                            "default ranking: " + ", ".join(DEFAULT_RANKING)
                            if summary.mode == "default ranking" else summary.mode),
                        hint=CAP_HINT)
        else:
            log.info("per_client_cap_released", cluster=cluster, listed=summary.listed,
                     exported=summary.exported)

    def _render_watch_extras(self, rendered: Rendered) -> int:
        """Watched clients not found are offline (unless their node failed to be walked);
        every watched client gets its last-seen time. Returns how many are known offline."""
        p = self.p
        watch = p.selector.settings.watch
        if not watch:
            return 0
        const = p.render_settings.const_labels
        failed = {p.node_index(n) for n in self.failed}
        missing = [cid for cid in sorted(watch - self.watched.keys() - self.unknown)
                   if p.state.node_of(cid) not in failed]
        if missing and "online" in p.render_settings.parts:
            rendered.setdefault(c.CLIENT_ONLINE, []).append(
                client_lines(const, missing, [0] * len(missing), c.CLIENT_ONLINE))
        ids = sorted(watch)
        text = client_lines(const, ids, [p.last_seen.get(cid) for cid in ids],
                            c.CLIENT_LAST_SEEN_TS)
        if text:
            rendered.setdefault(c.CLIENT_LAST_SEEN_TS, []).append(text)
        return len(missing) + sum(r.connected is False for r in self.watched.values())
