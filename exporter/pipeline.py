"""Stages after the download, fed page by page: de-duplication, counters, aggregation,
distributions, selection and rendering of one cluster's poll.

Pages are taken in as they arrive, as columns (`exporter.columns`) with array operations: no
stage takes a Python step per client. A poll holds a page beside the compact counter state,
the top-K candidates, the watched clients and the columns of the clients chosen for
per-client series; each chosen client is rendered once, in batches: while the walk goes on
when a node's streamed clients fill one, the rest at `PollRun.finish`. Every method of
`PollRun` runs off the event loop, on the cluster's pipeline thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from exporter import contract as c
from exporter.aggregate import GAUGES, AggregateSettings, Aggregator, Classifier, GroupKey
from exporter.columns import Columns, columns_of, concat
from exporter.config import PerClientSettings
from exporter.distribution import Histograms
from exporter.distribution import figures as distribution_figures
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
    RankedClient,
    SelectionSettings,
    Selector,
    score_page,
)
from exporter.state import COUNTER_FIELDS, CounterState, Floats, Ints, Observation
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
#: Clients rendered per batch at the end of a poll: each family's lines of a batch are one C
#: call, so a scrape waiting for the interpreter lock waits for one batch's call, not a poll's.
RENDER_BATCH = 10_000
#: Members of each ranking kept in a poll's summary (the status page shows them).
SUMMARY_TOP = 10
#: What to configure when the cap leaves clients out (logs, `check` and the status page).
CAP_HINT = ("choose clients with per_client.watch, per_client.allow or per_client.top_k, "
            "raise per_client.max_series, or turn per-client parts off")


def render_batches(chunks: Sequence[Columns]) -> Iterator[Columns]:
    """These clients, in order, `RENDER_BATCH` at a time (small chunks joined, large split)."""
    waiting: list[Columns] = []
    count = 0
    for chunk in chunks:
        start = 0
        while start < chunk.size:
            end = min(chunk.size, start + RENDER_BATCH - count)
            piece = chunk.subset(np.arange(start, end))  # the chunk itself when it fits whole
            waiting.append(piece)
            count += piece.size
            start += piece.size
            if count == RENDER_BATCH:
                yield concat(waiting)
                waiting, count = [], 0
    if waiting:
        yield concat(waiting)


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
    """Memory a pipeline holds: its lasting counter state."""

    state_bytes: int
    clients: int


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

    def render_into(self, rendered: Rendered, clients: Sequence[Columns]) -> None:
        """Add these clients' per-client families to `rendered`, a batch at a time."""
        for batch in render_batches(clients):
            families = self.renderer.render(batch, identity_labels(batch, self.render_settings))
            for family, lines in families.items():
                rendered.setdefault(family, []).append(lines)

    def footprint(self) -> Footprint:
        return Footprint(self.state.nbytes(), len(self.state))


@dataclass(slots=True)
class _NodePart:
    """What one node contributed to a poll, dropped whole if its walk fails."""

    #: Each group's gauge sums (`aggregate.GAUGES`) and distributions, by group number.
    gauges: dict[int, list[int]] = field(default_factory=dict)
    histograms: dict[int, Histograms] = field(default_factory=dict)
    clientids: list[str] = field(default_factory=list)
    #: The counter state's slots of the clients listed, a page at a time.
    slots: list[Ints] = field(default_factory=list)
    #: Allowed clients within the cap's streaming budget, in listing order, as the columns of
    #: each page's share (no records made for them): rendered a batch at a time.
    streamed: list[Columns] = field(default_factory=list)
    #: Allowed clients past the streaming budget, kept (boundedly) for room left at the end.
    overflow: list[ClientRecord] = field(default_factory=list)
    #: With no selection configured, the streamed clients' scores (a page at a time): ranked
    #: by the default ranking at the end only if the cap turns out to bind in this poll.
    scores: list[Floats] = field(default_factory=list)

    #: The text of the first `rendered_chunks` streamed chunks, rendered during the walk
    #: whenever a batch was full (`RENDER_BATCH`).
    rendered: Rendered = field(default_factory=dict)
    rendered_chunks: int = 0

    @property
    def streamed_count(self) -> int:
        return sum(chunk.size for chunk in self.streamed)


class PollRun:
    """One poll's accumulation, fed a page at a time.

    Made by `Pipeline.start_walk` or `Pipeline.start_lookup`; every method takes and returns
    plain data. A page is taken in with array operations over its columns (`Columns`); the
    chosen clients are rendered once, at `finish`.
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
        self.duplicates = 0
        self.nodes: dict[str, _NodePart] = {}
        self.failed: set[str] = set()
        self.watched: dict[str, ClientRecord] = {}
        #: Watched ids whose lookup failed: unknown, so not reported offline.
        self.unknown: set[str] = set()
        #: Clients a watch-only poll's lookups found (a client found twice counts once).
        self._looked_up: set[str] = set()

    def add_page(self, walk_node: str | None, records: Sequence[ClientRecord]) -> None:
        """Take one page of one walk (records may name their node; cursor walks span nodes)."""
        if not records:
            return
        if self.lookup:
            self._add_lookups(records)
            return
        p = self.p
        state = p.state
        page = columns_of(records)
        slots, allocated = state.slots(page.clientids)
        first = state.first_listing(slots, p.polls)
        if not first.all():  # the first row listed wins; the rest are drift
            self.duplicates += int((~first).sum())
            rows = np.flatnonzero(first)
            page, slots, allocated = page.subset(rows), slots[rows], allocated[rows]
        parts, part_of_row = self._parts(page, walk_node)
        starts = page.connection_starts()
        has_connection = (np.ones(page.size, np.bool_) if None not in starts
                          else np.array([s is not None for s in starts], np.bool_))
        seen = state.observe_page(
            slots, allocated, np.fromiter(map(hash, starts), np.int64, page.size),
            has_connection, page.counters(),
            np.array([p.node_index(name) for name, _ in parts], np.int64)[part_of_row],
            p.polls, page.values("connected_at"))
        groups = p.aggregator.groups(page)
        p.aggregator.note_reported(name for name in COUNTER_FIELDS
                                   if name not in p.aggregator.reported
                                   and page.reported(name).any())
        p.aggregator.count(groups, seen.deltas, seen.new if not p.baseline
                           else np.zeros(page.size, np.bool_))
        self._aggregate(page, seen, groups, parts, part_of_row)
        everyone = np.arange(page.size)
        for (_, part), rows in zip(parts, self._split(everyone, parts, part_of_row), strict=True):
            part.clientids.extend(page.clientids if len(parts) == 1
                                  else map(page.clientids.__getitem__, rows.tolist()))
            part.slots.append(slots[rows])
        self._select(page, seen, parts, part_of_row, slots)
        if not self.ranked:
            for _, part in parts:
                self._render_full_batches(part)

    def _parts(self, page: Columns, walk_node: str | None) -> tuple[
            list[tuple[str, _NodePart]], Ints]:
        """The node parts of a page's rows: (name, part) of each node, and each row's index
        into them (a row without a node belongs to the walk's node)."""
        nodes = page.values("node")
        distinct = list(dict.fromkeys(nodes))
        if len(distinct) == 1 and distinct[0]:
            names, index = [distinct[0]], np.zeros(page.size, np.int64)
        else:
            named = nodes if all(distinct) else [node or walk_node or "" for node in nodes]
            names = list(dict.fromkeys(named))
            at = {name: i for i, name in enumerate(names)}
            index = np.fromiter(map(at.__getitem__, named), np.int64, page.size)
        return [(name, self.nodes.setdefault(name, _NodePart())) for name in names], index

    def _aggregate(self, page: Columns, seen: Observation, groups: Ints,
                   parts: list[tuple[str, _NodePart]], part_of_row: Ints) -> None:
        """Add the page's gauges and distributions to each node part's groups."""
        p = self.p
        width = len(p.aggregator.keys_by_id)
        cells = part_of_row * width + groups  # one cell per (node part, group)
        figures = distribution_figures(page, seen.deltas, seen.rated, seen.since,
                                       self.per_second, self.now)
        single = len(parts) == 1 and bool((groups == groups[0]).all())
        for cell, sums in p.aggregator.gauge(cells, page).items():
            part = parts[cell // width][1]
            group = cell % width
            gauges = part.gauges.get(group)
            part.gauges[group] = sums if gauges is None else [
                a + b for a, b in zip(gauges, sums, strict=True)]
            histograms = part.histograms.get(group)
            if histograms is None:
                histograms = part.histograms[group] = Histograms()
            histograms.add_rows(figures, slice(None) if single
                                else np.flatnonzero(cells == cell))

    def _select(self, page: Columns, seen: Observation, parts: list[tuple[str, _NodePart]],
                part_of_row: Ints, slots: Ints) -> None:
        """Offer the page to the top-K rankings, note watched clients, and take the allowed
        ones' room under the cap (rendered at `finish`)."""
        p = self.p
        selector = p.selector
        settings = selector.settings
        default = selector.default
        scores: Floats | None = None
        if selector.top or default is not None:
            scores = score_page(page, seen.deltas, seen.rated, self.per_second,
                                p.state.reconnect_scores(slots))
        everyone = np.arange(page.size)
        for top in selector.top:
            assert scores is not None
            top.offer_page(scores, page, everyone)
        eligible = np.ones(page.size, np.bool_)
        if settings.watch:
            watched = np.fromiter(map(settings.watch.__contains__, page.clientids), np.bool_,
                                  page.size)
            for i in np.flatnonzero(watched).tolist():
                self._watch(page.records[i])
            eligible &= ~watched
        if not settings.export_all:
            eligible &= selector.allowed(page) if settings.allow else False
        rows = np.flatnonzero(eligible)
        if self.ranked:
            assert default is not None and scores is not None
            default.offer_page(scores, page, rows)
            return
        streamed, waiting = self.budget.admit_many(len(rows))
        full = rows[streamed + waiting:]
        for chosen, waits in ((rows[:streamed], False), (rows[streamed:streamed + waiting], True)):
            for (_, part), mine in zip(parts, self._split(chosen, parts, part_of_row),
                                       strict=True):
                if not len(mine):
                    continue
                if waits:
                    part.overflow.extend(page.take(mine))
                    continue
                part.streamed.append(page.subset(mine))
                if default is not None:
                    assert scores is not None
                    part.scores.append(scores[mine])
        if len(full):
            if default is not None:
                assert scores is not None
                default.offer_page(scores, page, full)
            else:
                self.budget.leave_out(len(full))

    def _render_full_batches(self, part: _NodePart) -> None:
        """Render a node part's streamed clients once a batch is full, while the next pages
        download and decode: a streamed client is exported unless its node's walk fails or
        the cap starts binding in this poll (then the default ranking chooses again)."""
        waiting = part.streamed[part.rendered_chunks:]
        if sum(chunk.size for chunk in waiting) < RENDER_BATCH:
            return
        part.rendered_chunks = len(part.streamed)
        self.p.render_into(part.rendered, waiting)

    @staticmethod
    def _split(rows: Ints, parts: list[tuple[str, _NodePart]], part_of_row: Ints) -> list[Ints]:
        """These rows by node part, each in listing order."""
        if len(parts) == 1:
            return [rows]
        return [rows[part_of_row[rows] == i] for i in range(len(parts))]

    def _add_lookups(self, records: Sequence[ClientRecord]) -> None:
        for record in records:
            if record.clientid not in self._looked_up:
                self._looked_up.add(record.clientid)
                self._watch(record)
            else:
                self.duplicates += 1

    def _watch(self, record: ClientRecord) -> None:
        self.watched[record.clientid] = record
        if record.connected is not False:
            self.p.last_seen[record.clientid] = self.now

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
            if part.slots:
                self.p.state.unlist(np.concatenate(part.slots))
            self.budget.refund(part.streamed_count, len(part.overflow))
            for top in self.p.selector.trackers:
                top.discard(part.clientids)
            for clientid in self.watched.keys() & set(part.clientids):
                del self.watched[clientid]

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
        streamed: list[Columns] = []
        late: list[ClientRecord] = []
        default = p.selector.default
        by_default = default is not None and (self.ranked or budget.full)
        if by_default:
            assert default is not None
            if not self.ranked:
                # The cap started binding mid-poll: what was admitted first came by listing
                # order, so it is ranked with the rest.
                for part in ok_parts.values():
                    for chunk, scores in zip(part.streamed, part.scores, strict=True):
                        default.offer_page(scores, chunk, np.arange(chunk.size))
            late = default.finish() if walked else []
            if walked:
                budget.leave_out(max(0, sum(map(len, (pt.clientids for pt in ok_parts.values())))
                                     - len(late)))
        else:
            overflow: list[ClientRecord] = []
            for part in ok_parts.values():
                for family, texts in part.rendered.items():
                    rendered.setdefault(family, []).extend(texts)
                p.render_into(rendered, part.streamed[part.rendered_chunks:])
                streamed.extend(part.streamed)
                overflow.extend(part.overflow)
            # A failed poll saw too little to change who is in the top-K.
            members = [top.finish() for top in p.selector.top] if walked else []
            late = budget.choose({cid for chunk in streamed for cid in chunk.clientids},
                                 [r for _, r in sorted(self.watched.items())], members, overflow)
        p.render_into(rendered, [Columns(late)] if late else [])
        offline = self._render_watch_extras(rendered)
        per_client = sum(t.count(b"\n") for texts in rendered.values() for t in texts)
        seeds = p.aggregator.seeds(walked)
        gauges: dict[GroupKey, list[int]] = {key: [0] * len(GAUGES) for key in seeds}
        histograms: dict[GroupKey, Histograms] = {key: Histograms() for key in seeds}
        keys = p.aggregator.keys_by_id
        for part in ok_parts.values():
            for group, sums in part.gauges.items():
                total = gauges.setdefault(keys[group], [0] * len(GAUGES))
                gauges[keys[group]] = [a + b for a, b in zip(total, sums, strict=True)]
            for group, h in part.histograms.items():
                histograms.setdefault(keys[group], Histograms()).add(h)
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
        summary = self._summary(clients, per_client_clients=sum(b.size for b in streamed)
                                + len(late),
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
